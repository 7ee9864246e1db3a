"""Shared fixtures: every test gets its own stepline home (a real SQLite file and folder)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepline.backend import reset_backend
from stepline.backend.sql.store import SqlBackend
from stepline.sdk.task import Task


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh STEPLINE_HOME for this test; the process-wide backend points at it."""
    h = tmp_path / "home"
    monkeypatch.setenv("STEPLINE_HOME", str(h))
    for var in ("STEPLINE_DB", "STEPLINE_STORAGE", "STEPLINE_API", "STEPLINE_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    reset_backend()
    yield h
    current = Task.current_task()
    if current is not None:
        current._release_console()
        Task._current = None
    reset_backend()


@pytest.fixture
def backend(home: Path) -> SqlBackend:
    """The SQL backend of the test's home."""
    from stepline.backend import get_backend

    b = get_backend()
    assert isinstance(b, SqlBackend)
    return b


def run_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a child Python process using ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env["STEPLINE_HOME"] = str(home)
    env.update(extra)
    return env


PYTHON = sys.executable
