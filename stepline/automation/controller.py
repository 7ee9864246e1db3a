"""``from stepline.automation.controller import PipelineController``."""

from stepline.pipeline.controller import PipelineController
from stepline.pipeline.dag import Node

__all__ = ["Node", "PipelineController"]
