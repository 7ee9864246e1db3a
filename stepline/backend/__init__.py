"""Backends: where tasks, metrics, logs and artifacts are kept. See ``protocol.Backend``."""

from __future__ import annotations

import os
import threading

from stepline.backend.protocol import KEEP, Backend
from stepline.core.config import Config, load_config
from stepline.core.errors import ConfigError

__all__ = ["KEEP", "Backend", "get_backend", "open_backend", "reset_backend"]

_lock = threading.Lock()
_current: Backend | None = None
_current_pid: int | None = None


def open_backend(config: Config) -> Backend:
    """A new backend for ``config``."""
    if config.api_url:
        if not config.api_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"STEPLINE_API={config.api_url!r} is not a server URL; set it to e.g. "
                "http://host:8080, or unset it to use the embedded store"
            )
        from stepline.backend.http.client import HttpBackend

        return HttpBackend(config.api_url, home=config.home, token=config.token)
    from stepline.backend.sql.store import SqlBackend

    return SqlBackend(
        config.db_url, config.storage_url, home=config.home, timeout=config.db_timeout
    )


def get_backend() -> Backend:
    """The process-wide backend, opened from the environment on first use."""
    global _current, _current_pid
    pid = os.getpid()
    if _current is not None and _current_pid == pid:
        return _current
    with _lock:
        if _current is None or _current_pid != pid:
            _current = open_backend(load_config())
            _current_pid = pid
        return _current


def reset_backend(backend: Backend | None = None) -> None:
    """Replace (or, with None, forget) the process-wide backend; used when the environment
    changes, e.g. in tests."""
    global _current, _current_pid
    with _lock:
        old = _current
        _current = backend
        _current_pid = os.getpid() if backend is not None else None
    if old is not None and old is not backend:
        old.close()
