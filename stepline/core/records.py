"""Plain records exchanged between the SDK and a backend. No I/O, no behaviour.

Timestamps are UNIX seconds (float); ids are strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stepline.core.status import TaskStatus


@dataclass
class Param:
    section: str
    name: str
    value: str
    type: str = "str"
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.section}/{self.name}"


@dataclass
class ConfigObject:
    name: str
    value: str
    content_type: str = "text"
    description: str = ""


@dataclass
class NewTask:
    """What is needed to create a task."""

    name: str
    project: str
    type: str = "custom"
    status: TaskStatus = TaskStatus.created
    comment: str = ""
    parent: str | None = None
    tags: list[str] = field(default_factory=list)
    script: dict[str, Any] = field(default_factory=dict)
    params: list[Param] = field(default_factory=list)
    configs: list[ConfigObject] = field(default_factory=list)
    runtime: dict[str, str] = field(default_factory=dict)
    user: str = ""
    id: str | None = None


@dataclass
class TaskRecord:
    id: str
    name: str
    project: str
    project_id: str
    type: str
    status: TaskStatus
    created: float
    last_update: float
    status_message: str = ""
    status_reason: str = ""
    comment: str = ""
    parent: str | None = None
    tags: list[str] = field(default_factory=list)
    script: dict[str, Any] = field(default_factory=dict)
    user: str = ""
    started: float | None = None
    completed: float | None = None
    archived: bool = False
    published: bool = False


@dataclass
class TaskFilter:
    """Which tasks to list. Every field set narrows the result; ``None`` means any."""

    ids: list[str] | None = None
    id_prefix: str | None = None  #: ids starting with this
    project: str | None = None
    name: str | None = None  #: a regular expression searched in the name
    tags: list[str] | None = None  #: all of these; a leading "-" excludes a tag
    status: list[TaskStatus] | None = None
    type: list[str] | None = None
    parent: str | None = None
    runtime: dict[str, str] | None = None  #: runtime properties with exactly these values
    updated_after: float | None = None  #: only tasks whose last_update is later than this
    archived: bool | None = False  #: False hides archived tasks, None shows all
    order_by: str = "-created"
    limit: int | None = None


@dataclass
class ArtifactRecord:
    task_id: str
    name: str
    type: str  #: the serializer used: numpy, pandas, json, bytes, file, folder, pickle, custom
    url: str
    hash: str  #: sha256 of the stored bytes, hex
    size: int  #: bytes stored
    mode: str = "output"
    preview: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    content_type: str = ""
    created: float = 0.0


@dataclass
class ScalarPoint:
    task_id: str
    title: str
    series: str
    iteration: int
    value: float
    timestamp: float = 0.0


@dataclass
class LogLine:
    task_id: str
    text: str
    level: str = "info"
    timestamp: float = 0.0
    seq: int = 0  #: assigned by the store, increasing per store


@dataclass
class Event:
    """A reported item that is not a scalar: text, a table, a plot (JSON) or an image."""

    task_id: str
    kind: str  #: text | table | plot | image
    title: str
    series: str
    iteration: int
    payload: str  #: JSON for tables and plots, plain text for text, a URL for images
    timestamp: float = 0.0


@dataclass
class ModelRecord:
    id: str
    task_id: str
    name: str
    url: str
    framework: str = ""
    mode: str = "output"
    created: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class QueueRecord:
    id: str
    name: str
    created: float
    pending: int = 0  #: tasks waiting in it (as of the call that returned this record)


@dataclass
class AgentRecord:
    """A worker that claims tasks from queues. ``last_seen`` is its latest heartbeat; it is
    taken for dead when that is older than ``timeout`` seconds."""

    id: str
    name: str
    queues: list[str] = field(default_factory=list)
    host: str = ""
    pid: int = 0
    started: float = 0.0
    last_seen: float = 0.0
    timeout: float = 30.0
    running: list[str] = field(default_factory=list)  #: ids of the tasks it runs now
    info: dict[str, Any] = field(default_factory=dict)  #: resources, max_jobs, services mode


@dataclass
class ApiToken:
    """A token a stepline server accepts. Only its sha256 is stored; the secret is shown once,
    when it is created."""

    id: str
    name: str
    created: float
    last_used: float | None = None
    revoked: float | None = None
