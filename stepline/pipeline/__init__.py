"""Pipelines: a DAG of step tasks, one scheduler, executors for each way of running steps.

The names below load on first use, so the step runner (``stepline.pipeline.runner``) starts
without importing the controller."""

from typing import Any

__all__ = ["Node", "NodeStatus", "PipelineController", "PipelineDecorator"]


def __getattr__(name: str) -> Any:
    if name == "PipelineController":
        from stepline.pipeline.controller import PipelineController

        return PipelineController
    if name == "PipelineDecorator":
        from stepline.pipeline.decorator import PipelineDecorator

        return PipelineDecorator
    if name in ("Node", "NodeStatus"):
        from stepline.pipeline import dag

        return getattr(dag, name)
    raise AttributeError(f"module 'stepline.pipeline' has no attribute {name!r}")
