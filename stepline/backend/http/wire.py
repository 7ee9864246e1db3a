"""What crosses the wire between a stepline server and its clients: pydantic schemas (they make
the OpenAPI document and check requests) and the conversions to and from ``core.records``.

The schemas are kept apart from the store's tables and from the records: a store may change
its columns without changing the API, and the API is versioned (``/api/v1``) on its own.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from stepline.core.errors import StepLineError, error_classes
from stepline.core.records import (
    AgentRecord,
    ArtifactRecord,
    ConfigObject,
    Event,
    LogLine,
    ModelRecord,
    NewTask,
    Param,
    QueueRecord,
    ScalarPoint,
    TaskFilter,
    TaskRecord,
)
from stepline.core.status import TaskStatus

API = "/api/v1"

#: integers the store keeps in 64 bits
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Seconds = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
Id = Annotated[str, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(max_length=1024)]
Text = Annotated[str, Field(max_length=1 << 20)]


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamW(Wire):
    section: Name
    name: Name
    value: str
    type: Name = "str"
    description: Text = ""


class ConfigW(Wire):
    name: Name
    value: str
    content_type: Name = "text"
    description: Text = ""


class NewTaskW(Wire):
    name: Name
    project: Name
    type: Name = "custom"
    status: TaskStatus = TaskStatus.created
    comment: Text = ""
    parent: Id | None = None
    tags: list[Name] = []
    script: dict[str, Any] = {}
    params: list[ParamW] = []
    configs: list[ConfigW] = []
    runtime: dict[Name, str] = {}
    user: Name = ""
    id: Id | None = None


class TaskW(Wire):
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
    tags: list[str] = []
    script: dict[str, Any] = {}
    user: str = ""
    started: float | None = None
    completed: float | None = None
    archived: bool = False
    published: bool = False


class TaskFilterW(Wire):
    ids: list[Id] | None = None
    id_prefix: Name | None = None
    project: Name | None = None
    name: Name | None = None
    tags: list[Name] | None = None
    status: list[TaskStatus] | None = None
    type: list[Name] | None = None
    parent: Id | None = None
    runtime: dict[Name, str] | None = None
    updated_after: Annotated[float, Field(allow_inf_nan=False)] | None = None
    archived: bool | None = False
    order_by: Name = "-created"
    limit: Annotated[int, Field(ge=0, le=1_000_000)] | None = None


class TaskUpdateW(Wire):
    """Only the fields present are changed (``parent: null`` clears the parent)."""

    name: Name | None = None
    comment: Text | None = None
    parent: Id | None = None
    type: Name | None = None
    script: dict[str, Any] | None = None
    archived: bool | None = None
    published: bool | None = None
    project: Name | None = None


class StatusW(Wire):
    status: TaskStatus
    message: Text = ""
    reason: Text = ""
    force: bool = False


class CloneW(Wire):
    name: Name | None = None
    project: Name | None = None
    comment: Text | None = None
    parent: Id | None = None


class TagsW(Wire):
    tags: list[Name]


class ParamsW(Wire):
    params: list[ParamW]
    replace: bool = False


class KeysW(Wire):
    keys: list[Name]


class ConfigsW(Wire):
    configs: list[ConfigW]


class RuntimeW(Wire):
    values: dict[Name, str]


class ArtifactW(Wire):
    task_id: str
    name: str
    type: str
    url: str
    hash: str
    size: int
    mode: str = "output"
    preview: str = ""
    metadata: dict[str, Any] = {}
    content_type: str = ""
    created: float = 0.0


class UploadW(Wire):
    """Bytes received by ``POST /uploads``, waiting to be committed as an artifact."""

    id: str
    sha256: str
    size: int


class ArtifactCommitW(Wire):
    """Commit an artifact: the bytes of an upload (``upload``), or, when the storage is one
    the client writes to directly, an object already there (``url``)."""

    name: Name
    type: Name = "bytes"
    mode: Name = "output"
    preview: Text = ""
    metadata: dict[str, Any] = {}
    content_type: Name = ""
    upload: Id | None = None
    #: the client's file name: the stored file keeps its extension
    filename: Name = ""
    url: Annotated[str, Field(max_length=4096)] | None = None
    sha256: Annotated[str, Field(max_length=64)] = ""
    size: Annotated[int, Field(ge=0, le=2**62)] | None = None


class ModelW(Wire):
    id: Annotated[str, Field(max_length=64)] = ""
    task_id: Id
    name: Name
    url: Annotated[str, Field(max_length=4096)]
    framework: Name = ""
    mode: Name = "output"
    created: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    metadata: dict[str, Any] = {}


class ScalarW(Wire):
    task_id: Id
    title: Name
    series: Name
    iteration: Int64
    value: float
    timestamp: Annotated[float, Field(allow_inf_nan=False)] = 0.0


class EventW(Wire):
    task_id: Id
    kind: Name
    title: Name
    series: Name
    iteration: Int64
    payload: str
    timestamp: Annotated[float, Field(allow_inf_nan=False)] = 0.0


class LogLineW(Wire):
    task_id: Id
    text: str
    level: Name = "info"
    timestamp: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    seq: Int64 = 0


class QueueW(Wire):
    id: str
    name: str
    created: float
    pending: int = 0


class QueueNameW(Wire):
    name: Name


class EnqueueW(Wire):
    queue: Name
    priority: Annotated[int, Field(ge=-(2**31), le=2**31 - 1)] = 0


class ClaimW(Wire):
    queues: list[Name]
    agent_id: Id
    wait: Annotated[float, Field(ge=0, le=60, allow_inf_nan=False)] = 0.0


class AgentW(Wire):
    id: Id
    name: Name
    queues: list[Name] = []
    host: Name = ""
    pid: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    started: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    last_seen: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    timeout: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] = 30.0
    running: list[Id] = []
    info: dict[str, Any] = {}


class HeartbeatW(Wire):
    running: list[Id] = []
    info: dict[str, Any] | None = None


class ReapedW(Wire):
    task_id: str
    outcome: str


class WatchW(Wire):
    known: dict[Id, TaskStatus]
    timeout: Annotated[float, Field(ge=0, le=60, allow_inf_nan=False)] = 0.0


class InfoW(Wire):
    version: str
    api: str
    storage: str
    storage_local: bool
    auth: bool


class ErrorW(Wire):
    error: str
    message: str
    detail: dict[str, Any] = {}


# -- records <-> JSON (the client's side: plain dicts, no validation cost) -------------------


def dump(obj: Any) -> Any:
    """A record (or list of them) as JSON-ready data."""
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return _plain(obj)


def _plain(v: Any) -> Any:
    if isinstance(v, TaskStatus):
        return v.value
    if isinstance(v, list):
        return [dump(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dump(v)
    return v


def task_record(d: dict[str, Any]) -> TaskRecord:
    return TaskRecord(**{**d, "status": TaskStatus(d["status"])})


def new_task(w: NewTaskW) -> NewTask:
    d = w.model_dump()
    d["params"] = [Param(**p) for p in d["params"]]
    d["configs"] = [ConfigObject(**c) for c in d["configs"]]
    return NewTask(**d)


def task_filter(w: TaskFilterW) -> TaskFilter:
    return TaskFilter(**w.model_dump())


def artifact_record(d: dict[str, Any]) -> ArtifactRecord:
    return ArtifactRecord(**d)


def model_record(d: dict[str, Any]) -> ModelRecord:
    return ModelRecord(**d)


def agent_record(d: dict[str, Any]) -> AgentRecord:
    return AgentRecord(**d)


def queue_record(d: dict[str, Any]) -> QueueRecord:
    return QueueRecord(**d)


def records(cls: type, items: list[Any]) -> list[Any]:
    """Build ``cls`` records from pydantic objects or dicts."""
    return [cls(**(i.model_dump() if isinstance(i, BaseModel) else i)) for i in items]


RECORD_OF = {
    ScalarW: ScalarPoint,
    EventW: Event,
    LogLineW: LogLine,
    ParamW: Param,
    ConfigW: ConfigObject,
}


def error_body(exc: StepLineError) -> dict[str, Any]:
    detail = {
        k: v
        for k, v in vars(exc).items()
        if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))
    }
    return {"error": type(exc).__name__, "message": str(exc), "detail": detail}


def error_from(body: Any, fallback: type[StepLineError]) -> StepLineError:
    """The error a server sent back, as the same ``StepLineError`` subclass."""
    name = body.get("error") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    cls = error_classes().get(name or "", fallback)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message or str(body))
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        for k, v in detail.items():
            setattr(exc, k, v)
    return exc
