"""Records to and from JSON, for the HTTP client and the server (no pydantic here: a client
process imports only this, which keeps its start fast)."""

from __future__ import annotations

import dataclasses
from typing import Any

from stepline.core.errors import StepLineError, error_classes
from stepline.core.records import (
    AgentRecord,
    ArtifactRecord,
    ModelRecord,
    QueueRecord,
    TaskRecord,
)
from stepline.core.status import TaskStatus

API = "/api/v1"


#: types whose values go into JSON as they are (a TaskStatus is a str subclass: not here)
_JSON = frozenset({str, int, float, bool, type(None), dict})


def dump(obj: Any) -> Any:
    """A record (or list of them) as JSON-ready data."""
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        d = dict(vars(obj))  # records are plain dataclasses: vars() is their fields
        for k, v in d.items():
            if type(v) not in _JSON:
                d[k] = _plain(v)
        return d
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


def artifact_record(d: dict[str, Any]) -> ArtifactRecord:
    return ArtifactRecord(**d)


def model_record(d: dict[str, Any]) -> ModelRecord:
    return ModelRecord(**d)


def agent_record(d: dict[str, Any]) -> AgentRecord:
    return AgentRecord(**d)


def queue_record(d: dict[str, Any]) -> QueueRecord:
    return QueueRecord(**d)


def records(cls: type, items: list[Any]) -> list[Any]:
    """Build ``cls`` records from dicts, or from wire schemas (whose ``__dict__`` holds
    their fields: cheaper than ``model_dump`` on a batch of thousands)."""
    return [cls(**(i if isinstance(i, dict) else i.__dict__)) for i in items]


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
