"""Configuration, read from the environment.

=====================  ==========================================  ======================
variable               meaning                                     default
=====================  ==========================================  ======================
STEPLINE_HOME          the folder holding the embedded store       ~/.stepline
STEPLINE_DB            SQLAlchemy URL of the task store            sqlite:///$HOME/stepline.db
STEPLINE_STORAGE       where artifacts go (a folder or fsspec URL) $HOME/artifacts
STEPLINE_API           a stepline server's URL (remote store)      unset: embedded
STEPLINE_TOKEN         the token sent to that server               unset
STEPLINE_DB_TIMEOUT    seconds to wait for a locked database       30
=====================  ==========================================  ======================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stepline.core.errors import ConfigError


@dataclass(frozen=True)
class Config:
    home: Path
    db_url: str
    storage_url: str
    api_url: str | None = None
    token: str | None = None
    db_timeout: float = 30.0

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def load_config(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    home = Path(env.get("STEPLINE_HOME") or Path.home() / ".stepline").expanduser().absolute()
    db_url = env.get("STEPLINE_DB") or f"sqlite:///{home / 'stepline.db'}"
    storage = env.get("STEPLINE_STORAGE") or str(home / "artifacts")
    try:
        timeout = float(env.get("STEPLINE_DB_TIMEOUT") or 30.0)
    except ValueError:
        raise ConfigError(
            f"STEPLINE_DB_TIMEOUT={env.get('STEPLINE_DB_TIMEOUT')!r} is not a number of seconds"
        )
    return Config(
        home=home,
        db_url=db_url,
        storage_url=storage,
        api_url=env.get("STEPLINE_API") or None,
        token=env.get("STEPLINE_TOKEN") or None,
        db_timeout=timeout,
    )
