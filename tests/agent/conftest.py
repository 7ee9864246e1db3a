"""The agent tests run twice: on the embedded store (SQLite and a folder), and on a team's store
(PostgreSQL and the S3-compatible server, both real servers started by the fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import use_team_store


@pytest.fixture(params=["sqlite", "postgres+s3"])
def home(request: pytest.FixtureRequest, home: Path) -> Path:
    if request.param != "sqlite":
        use_team_store(request)
    return home
