"""``from stepline.automation.controller import PipelineController, PipelineDecorator``."""

from stepline.pipeline.controller import PipelineController
from stepline.pipeline.dag import Node
from stepline.pipeline.decorator import PipelineDecorator

__all__ = ["Node", "PipelineController", "PipelineDecorator"]
