"""The one interface between the SDK and wherever tasks are kept.

Two implementations follow it: ``backend.sql`` (SQLite by default, PostgreSQL for teams) and,
later, ``backend.http`` (the same calls over a stepline server). One contract test suite
(`tests/backend/test_contract.py`) runs against every implementation.

Guarantees every implementation gives:

* a status change is one atomic compare-and-set along ``core.status.ALLOWED_FROM``;
* an artifact record is visible only once its bytes are whole in storage, with their sha256;
* writes of metrics and log lines from many processes at once are all kept;
* errors are ``StepLineError`` subclasses that name the task and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

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

#: Sentinel for "leave this field as it is" in update_task.
KEEP: Any = object()


@runtime_checkable
class Backend(Protocol):
    # -- tasks ---------------------------------------------------------------------------
    def create_task(self, new: NewTask) -> TaskRecord:
        """Create a task (with its parameters, configuration objects, tags and runtime
        properties, all in one transaction). Its project is created when missing."""
        ...

    def get_task(self, task_id: str) -> TaskRecord:
        """The task, or ``TaskNotFoundError``."""
        ...

    def find_tasks(self, flt: TaskFilter) -> list[TaskRecord]: ...

    def update_task(
        self,
        task_id: str,
        *,
        name: str = KEEP,
        comment: str = KEEP,
        parent: str | None = KEEP,
        type: str = KEEP,
        script: dict[str, Any] = KEEP,
        archived: bool = KEEP,
        published: bool = KEEP,
        project: str = KEEP,
    ) -> TaskRecord: ...

    def set_status(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        message: str = "",
        reason: str = "",
        force: bool = False,
    ) -> TaskRecord:
        """Move the task to ``status`` if the transition is allowed (``force`` skips the
        check), atomically; else ``InvalidTransitionError``. A status that is only a name
        (published, closed, ...) is refused with ``ValidationError``."""
        ...

    def clone_task(
        self,
        task_id: str,
        *,
        name: str | None = None,
        project: str | None = None,
        comment: str | None = None,
        parent: str | None = None,
    ) -> TaskRecord:
        """A new task in status ``created`` with the source's script, parameters,
        configuration objects, tags and type; no outputs (artifacts, metrics, log)."""
        ...

    def delete_task(self, task_id: str) -> None:
        """Delete the task, its records and its artifact files."""
        ...

    def set_tags(self, task_id: str, tags: Sequence[str]) -> None: ...

    # -- parameters, configuration objects, runtime properties ---------------------------
    def set_params(self, task_id: str, params: Sequence[Param], *, replace: bool = False) -> None:
        """Insert or update parameters; with ``replace`` all others are deleted."""
        ...

    def get_params(self, task_id: str) -> list[Param]: ...

    def delete_params(self, task_id: str, keys: Sequence[str]) -> None:
        """Delete parameters by "Section/name" key."""
        ...

    def set_configs(self, task_id: str, configs: Sequence[ConfigObject]) -> None: ...

    def get_configs(self, task_id: str) -> list[ConfigObject]: ...

    def set_runtime(self, task_id: str, values: Mapping[str, str]) -> None: ...

    def get_runtime(self, task_id: str) -> dict[str, str]: ...

    # -- artifacts ------------------------------------------------------------------------
    def put_artifact(
        self,
        record: ArtifactRecord,
        local_path: str,
        *,
        move: bool = False,
        defer_hash: bool = False,
        sha256: str = "",
    ) -> ArtifactRecord:
        """Store the file at ``local_path`` as the task's artifact ``record.name`` (replacing
        one of that name) and return the record with its url, size and hash filled in.
        With ``move`` the file is consumed (it may be renamed into storage). With
        ``defer_hash`` a large file may be committed with its size and an empty hash, the
        sha256 being recorded moments later (``wait_for_uploads`` waits for that).
        ``sha256``: the file's hash, when the caller has just computed it (it is trusted,
        which saves reading the file again)."""
        ...

    def wait_for_uploads(self) -> None:
        """Return when every artifact this process stored has its sha256 recorded."""
        ...

    def get_artifacts(self, task_id: str) -> list[ArtifactRecord]: ...

    def artifact_local_path(self, record: ArtifactRecord, *, verify: bool | None = None) -> str:
        """A local file holding the artifact's bytes (downloaded into the cache when the
        storage is remote). Raises ``ArtifactNotFoundError`` if the bytes are gone and
        ``ArtifactCorruptError`` if they do not match the recorded size or hash."""
        ...

    def delete_artifact(self, task_id: str, name: str) -> None: ...

    # -- models ---------------------------------------------------------------------------
    def add_model(self, record: ModelRecord) -> ModelRecord: ...

    def get_models(self, task_id: str) -> list[ModelRecord]: ...

    # -- metrics, events, console log ---------------------------------------------------
    def add_scalars(self, points: Sequence[ScalarPoint]) -> None:
        """Add metric points (of one or more tasks) in one transaction; an unknown task id
        raises ``TaskNotFoundError`` and nothing of the batch is written. The same holds for
        ``add_events`` and ``add_log``."""
        ...

    def get_scalars(
        self, task_id: str, title: str | None = None, series: str | None = None
    ) -> list[ScalarPoint]: ...

    def get_last_scalars(self, task_id: str) -> dict[str, dict[str, dict[str, float]]]:
        """{title: {series: {"last", "min", "max", "iteration"}}}."""
        ...

    def add_events(self, events: Sequence[Event]) -> None: ...

    def get_events(self, task_id: str, kind: str | None = None) -> list[Event]: ...

    def add_log(self, lines: Sequence[LogLine]) -> None: ...

    def get_log(
        self, task_id: str, after: int = 0, limit: int | None = None, tail: int | None = None
    ) -> list[LogLine]:
        """Log lines with ``seq > after``, oldest first; with ``tail`` only the last ``tail``
        of them."""
        ...

    def count_log(self, task_id: str) -> int:
        """How many log lines the task has."""
        ...

    # -- projects and queues -------------------------------------------------------------
    def list_projects(self) -> list[str]: ...

    def create_queue(self, name: str) -> QueueRecord: ...

    def get_queues(self) -> list[QueueRecord]: ...

    def delete_queue(self, name: str) -> None: ...

    def enqueue(self, task_id: str, queue: str, *, priority: int = 0) -> TaskRecord:
        """Move a ``created`` task to ``queued`` and put it at the end of ``queue`` (among
        the entries of its priority; higher priorities are claimed first), atomically. An
        unknown queue raises ``NotFoundError``; a task in another status,
        ``InvalidTransitionError``."""
        ...

    def dequeue(self, task_id: str) -> TaskRecord:
        """Take a queued task off its queue, back to ``created``."""
        ...

    def queue_tasks(self, queue: str) -> list[str]:
        """The ids of the tasks waiting in ``queue``, in the order they will be claimed."""
        ...

    def claim(
        self, queues: Sequence[str], agent_id: str, *, wait: float = 0.0
    ) -> TaskRecord | None:
        """Take the next task of the first of ``queues`` that has one and move it to
        ``in_progress`` for ``agent_id`` (runtime ``_agent`` and ``_queue`` say who and from
        where), atomically: each queued task is claimed by exactly one caller. With ``wait``,
        an empty queue is waited on for up to that many seconds."""
        ...

    def watch(self, known: Mapping[str, TaskStatus], *, timeout: float = 0.0) -> list[TaskRecord]:
        """The tasks among ``known``'s ids whose status is no longer the one given, waiting
        up to ``timeout`` seconds for there to be one (tasks that do not exist are left
        out). ``pushes_changes`` says whether the backend is told of changes (a server) or
        looks again every ``poll_interval`` seconds."""
        ...

    #: True when ``claim(wait=...)`` and ``watch`` return as soon as something changes
    pushes_changes: bool

    # -- agents ---------------------------------------------------------------------------
    def register_agent(self, agent: AgentRecord) -> None:
        """Record a live agent (or refresh its record)."""
        ...

    def heartbeat(
        self, agent_id: str, running: Sequence[str], info: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Record that the agent is alive and runs ``running``; returns those of them that are
        no longer ``in_progress`` (stopped by someone: the agent ends them).
        ``NotFoundError`` if the agent was declared dead meanwhile."""
        ...

    def get_agents(self) -> list[AgentRecord]: ...

    def remove_agent(self, agent_id: str) -> None: ...

    def reap_agents(self) -> list[tuple[str, str]]:
        """Forget agents whose last heartbeat is older than their timeout; each task such an
        agent was running is put back on its queue once if it asked for that (runtime
        ``_requeue_on_agent_loss``), else marked failed. Returns ``(task_id, "requeued" |
        "failed")`` pairs."""
        ...

    def close(self) -> None: ...
