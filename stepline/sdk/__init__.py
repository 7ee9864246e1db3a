"""The user-facing objects: Task, Logger, Artifact, StorageManager."""

from stepline.core.status import TaskStatus, TaskTypes
from stepline.sdk.artifacts import Artifact
from stepline.sdk.logger import Logger
from stepline.sdk.storage_manager import StorageManager
from stepline.sdk.task import Task

__all__ = ["Artifact", "Logger", "StorageManager", "Task", "TaskStatus", "TaskTypes"]
