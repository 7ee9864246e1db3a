"""The module paths users of the reference system import from, with the package renamed."""

from stepline.pipeline.controller import PipelineController
from stepline.pipeline.decorator import PipelineDecorator

__all__ = ["PipelineController", "PipelineDecorator"]
