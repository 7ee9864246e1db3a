"""Fixtures of the pipeline tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepline.pipeline.decorator import PipelineDecorator


@pytest.fixture(params=["debug", "local"])
def mode(request: pytest.FixtureRequest, home: Path) -> Iterator[str]:
    """Runs a decorator pipeline's steps in debug mode (threads of this process) or local mode
    (a process per step), and restores the default afterwards. (``test_execution`` has a
    ``mode`` of its own: the controller's two local modes.)"""
    name = str(request.param)
    if name == "debug":
        PipelineDecorator.debug_pipeline()
    else:
        PipelineDecorator.run_locally()
    try:
        yield name
    finally:
        PipelineDecorator._mode_default = None


#: seconds a step thread abandoned by a debug run may take to end after the gate opens
GATE_JOIN = 60.0


@pytest.fixture
def gate(home: Path, tmp_path: Path) -> Iterator[Path]:
    """A folder for marker files. Held steps wait for ``release``, written at teardown; then
    the step threads a debug run abandoned are joined (before the store goes away)."""
    folder = tmp_path / "gate"
    folder.mkdir()
    yield folder
    (folder / "release").touch()
    for thread in threading.enumerate():
        if thread.name.startswith("stepline-step") and thread is not threading.current_thread():
            thread.join(timeout=GATE_JOIN)
