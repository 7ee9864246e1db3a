"""Fixtures of the pipeline tests."""

from __future__ import annotations

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
