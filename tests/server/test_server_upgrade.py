"""``stepline server`` brings an older database to the current schema on start, or, with
``--no-upgrade``, refuses to start on it; both on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from stepline.backend.sql import migrate
from tests.serverproc import server_env, start_server


def old_database(url: str) -> None:
    """A database at the previous schema (0004) holding one queue."""
    engine = create_engine(url)
    migrate.upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO queues (id, name, created) VALUES ('q1', 'old-q', 1.0)"))
    engine.dispose()


def revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return migrate.current_revision(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_cluster").new_database(empty=True))
    return f"sqlite:///{tmp_path / 'old.db'}"


def test_no_upgrade_refuses_an_older_schema(db_url: str, tmp_path: Path) -> None:
    old_database(db_url)
    res = subprocess.run(
        [sys.executable, "-m", "stepline.cli.main", "server", "--port", "0", "--no-upgrade"],
        env=server_env(tmp_path / "home", STEPLINE_DB=db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "0004" in res.stderr and "stepline db upgrade" in res.stderr
    assert revision(db_url) == "0004"


def test_the_server_upgrades_on_start_and_keeps_the_rows(db_url: str, tmp_path: Path) -> None:
    old_database(db_url)
    server = start_server(tmp_path / "home", STEPLINE_DB=db_url)
    try:
        queues = httpx.get(f"{server.url}/api/v1/queues", timeout=10).json()
        assert "old-q" in [q["name"] for q in queues]
        said = f"database schema upgraded: 0004 -> {migrate.HEAD}"
        deadline = time.monotonic() + 10  # the lines are read by a thread of their own
        while not any(said in line for line in server.output or []):
            assert time.monotonic() < deadline, server.output
            time.sleep(0.02)
    finally:
        server.stop()
    assert revision(db_url) == migrate.HEAD
