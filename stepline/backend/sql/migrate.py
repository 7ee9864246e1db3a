"""Bringing a database to the current schema.

Opening a store checks one row (``alembic_version``) against ``HEAD``; only when they differ is
Alembic loaded (it costs half a second to import) and the migrations run, under a lock so that
two processes opening a new home at once do not both create it.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from stepline.core.errors import StoreError

#: The newest revision in migrations/versions; a test keeps the two equal.
HEAD = "0004"

MIGRATIONS = Path(__file__).with_name("migrations")


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            return row[0] if row else None
    except (OperationalError, ProgrammingError):
        return None


def ensure_schema(engine: Engine, lock_dir: Path | None) -> None:
    """Upgrade the database to ``HEAD`` if it is not there yet."""
    if current_revision(engine) == HEAD:
        return
    lock_file = None
    if lock_dir is not None:
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(lock_dir / ".migrate.lock", "a")  # noqa: SIM115
        fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
        if current_revision(engine) != HEAD:
            upgrade(engine)
    finally:
        if lock_file is not None:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
            lock_file.close()


def alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    cfg = alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except Exception as exc:  # pragma: no cover - the message is what matters
        raise StoreError(
            f"could not bring the database {engine.url!r} to schema {revision}: {exc}; "
            "if it was created by a newer stepline, upgrade stepline"
        ) from exc
