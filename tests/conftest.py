"""Shared fixtures: every test gets its own stepline home (a real SQLite file and folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
TIMEOUT = 120  # seconds a child process may take before a test gives up on it


@contextmanager
def started_together(
    script: str, argvs: Sequence[Sequence[str]], home: Path, **env: str
) -> Iterator[list[tuple[str, str]]]:
    """Run one child per argv; each prints "ready" once loaded and then waits for a line on
    stdin, which all of them get at once. Yields [(stdout, stderr)] once all have exited 0."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            env=run_env(home, **env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", line + p.communicate(timeout=TIMEOUT)[1]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    yield results
