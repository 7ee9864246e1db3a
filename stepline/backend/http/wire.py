"""What crosses the wire between a stepline server and its clients: pydantic schemas (they make
the OpenAPI document and check requests) and the conversions to and from ``core.records``.

The schemas are kept apart from the store's tables and from the records: a store may change
its columns without changing the API, and the API is versioned (``/api/v1``) on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from typing_extensions import NotRequired, TypedDict

from stepline.backend.http.convert import (  # noqa: F401 - the server's names for them
    API,
    agent_record,
    artifact_record,
    dump,
    error_body,
    error_from,
    model_record,
    queue_record,
    records,
    task_record,
)
from stepline.core.records import (
    ConfigObject,
    NewTask,
    Param,
    TaskFilter,
)
from stepline.core.status import TaskStatus

#: integers the store keeps in 64 bits
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Seconds = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
Id = Annotated[str, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(max_length=1024)]
Text = Annotated[str, Field(max_length=1 << 20)]


def _check_text(value: Any) -> None:
    """Raise ``ValueError`` when ``value`` (a string, or a list or dict holding some) holds a
    lone surrogate: JSON's ``"\\ud800"`` escape decodes to one, and no store (nor any answer,
    which is UTF-8) can encode it."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    "text holds a lone surrogate (a \\ud800-\\udfff escape that is not half of "
                    "a pair), which is not Unicode that can be stored"
                ) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k)
            _check_text(v)
    elif isinstance(value, list):
        for v in value:
            _check_text(v)


def _not_nan(value: float) -> float:
    if value != value:
        raise ValueError("NaN cannot be stored; leave the point out")
    return value


def validation_message(errors: Sequence[Any]) -> str:
    """One line naming what is wrong with a request, from pydantic's error list."""
    problems = []
    for err in list(errors)[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return "the request is not valid: " + "; ".join(problems)


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        _check_text(data)
        return data


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
    value: Annotated[float, AfterValidator(_not_nan)]
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


# -- wire schemas -> records --------------------------------------------------------------------


def new_task(w: NewTaskW) -> NewTask:
    d = w.model_dump()
    d["params"] = [Param(**p) for p in d["params"]]
    d["configs"] = [ConfigObject(**c) for c in d["configs"]]
    return NewTask(**d)


def task_filter(w: TaskFilterW) -> TaskFilter:
    return TaskFilter(**w.model_dump())


# -- the hot path: batches of metric points and log lines ------------------------------------
# The same fields and bounds as ScalarW and LogLineW, as TypedDicts: checking a batch of
# thousands builds no model objects (about 5x faster). A batch that holds a ``\ud8xx``-style
# escape (a possible lone surrogate) is checked by the models instead.


class ScalarRow(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    task_id: Id
    title: Name
    series: Name
    iteration: Int64
    value: Annotated[float, AfterValidator(_not_nan)]
    timestamp: NotRequired[Annotated[float, Field(allow_inf_nan=False)]]


class LogRow(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    task_id: Id
    text: str
    level: NotRequired[Name]
    timestamp: NotRequired[Annotated[float, Field(allow_inf_nan=False)]]
    seq: NotRequired[Int64]
