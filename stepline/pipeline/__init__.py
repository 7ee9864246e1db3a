"""Pipelines: a DAG of step tasks, one scheduler, executors for each way of running steps."""

from stepline.pipeline.controller import PipelineController
from stepline.pipeline.dag import Node, NodeStatus

__all__ = ["Node", "NodeStatus", "PipelineController"]
