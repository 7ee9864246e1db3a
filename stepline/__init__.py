"""stepline: build, run and track ML and data pipelines; every step is a tracked Task."""

from stepline.core.status import TaskStatus, TaskTypes

__version__ = "0.1.0"

__all__ = [
    "Logger",
    "PipelineController",
    "PipelineDecorator",
    "StorageManager",
    "Task",
    "TaskStatus",
    "TaskTypes",
    "__version__",
]


def __getattr__(name: str) -> object:
    # The SDK pulls in the store (SQLAlchemy); load it on first use so that
    # `import stepline` stays cheap for tools that only need the names.
    if name in ("Task", "Logger", "StorageManager"):
        from stepline import sdk

        return getattr(sdk, name)
    if name == "PipelineController":
        from stepline.pipeline.controller import PipelineController

        return PipelineController
    if name == "PipelineDecorator":
        from stepline.pipeline.decorator import PipelineDecorator

        return PipelineDecorator
    raise AttributeError(f"module 'stepline' has no attribute {name!r}")
