"""Shared fixtures: every test gets its own stepline home (a real SQLite file and folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stepline.backend import reset_backend
from stepline.backend.sql.store import SqlBackend
from stepline.sdk.task import Task

#: most pytest-xdist workers ``-n auto`` starts (scripts/test): each starts its own PostgreSQL
#: and S3 servers (and Chromium) when its tests first need them
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per CPU this process may use (xdist's own count is of physical
    cores: 1 on a machine with 2 hyperthreads), at most ``MAX_WORKERS``. The variable
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when it is set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist reads it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, MAX_WORKERS))


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


def use_team_store(request: pytest.FixtureRequest, *, s3: bool = True) -> None:
    """Point this test's process-wide backend (and its children, through ``run_env``) at a
    fresh PostgreSQL database and, with ``s3``, a fresh bucket of the S3-compatible server."""
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("STEPLINE_DB", request.getfixturevalue("pg_cluster").new_database())
    if s3:
        monkeypatch.setenv("STEPLINE_STORAGE", request.getfixturevalue("s3_server").new_bucket())
    reset_backend()


#: what children keep of the test's environment: where the store is
_KEPT = ("STEPLINE_DB", "STEPLINE_STORAGE")


def run_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a child Python process using ``home`` (and the test's database and
    artifact storage when it set them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_") or k in _KEPT}
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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A real PostgreSQL server for the session (``tests.pgserver``); tests that use it are
    skipped, saying why, where no PostgreSQL binary can be found."""
    from tests.pgserver import PgCluster, start_cluster

    cluster = start_cluster()
    if cluster is None:
        pytest.skip(PgCluster.missing)
    _STARTED["pg"] = cluster
    yield cluster
    _STARTED.pop("pg", None)
    cluster.cleanup()


#: session servers that were started (to clean up after each test)
_STARTED: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _recycle_databases() -> Iterator[None]:
    """After each test (and its other fixtures), the PostgreSQL databases it was given are
    emptied for the next tests."""
    yield
    cluster = _STARTED.get("pg")
    if cluster is not None:
        cluster.recycle()


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    """A fresh PostgreSQL database at the current schema, for this test only."""
    return str(pg_cluster.new_database())


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """An S3-compatible server (moto's server mode) on loopback for the session; its
    credentials and endpoint are in the environment (AWS_*), as users would set them."""
    from tests.s3server import start_moto

    server = start_moto()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()
