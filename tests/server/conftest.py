"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stepline.backend import reset_backend
from stepline.backend.sql.store import SqlBackend
from tests.serverproc import ServedBackend


@pytest.fixture
def client(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServedBackend]:
    """A server (a thread of the test) on a store of its own, and the process's backend
    talking to it over HTTP, as a script with ``STEPLINE_API`` set would."""
    inner = SqlBackend(
        f"sqlite:///{home / 'server.db'}", str(home / "server-artifacts"), home=home / "srv"
    )
    served = ServedBackend(inner, home / "client")
    monkeypatch.setenv("STEPLINE_API", served.url)
    reset_backend(served)
    yield served
    reset_backend()
