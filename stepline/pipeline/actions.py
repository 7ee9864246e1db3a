"""What a user does to stored pipeline runs from outside them (the command line, the web UI,
a script): run one again with new arguments, abort a run or one of its steps.

Only ``Backend`` calls are used, on the backend given, so the server runs these over its own
store and the command line over the user's. A running pipeline notices an abort made here
within about a second (its scheduler looks at the store, see ``scheduler``): it kills its
running steps and skips the rest; steps run by agents are ended by their agents.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from stepline.backend.protocol import Backend
from stepline.core.errors import InvalidTransitionError, NotFoundError, ValidationError
from stepline.core.records import Param, TaskFilter, TaskRecord
from stepline.core.status import FINAL, TaskStatus, TaskTypes
from stepline.pipeline.views import ARGS_SECTION, CONFIG_DAG, RT_DEFAULT_QUEUE, RT_NAME, RT_VERSION

#: Runtime properties a clone keeps (which pipeline, and version, the new run is a run of);
#: the rest of the runtime (steps' state, progress, run number) belongs to the source's run.
KEPT_RUNTIME = (RT_NAME, RT_VERSION, RT_DEFAULT_QUEUE)
#: Runtime of a step task (a pipeline used as a step included): the step it runs.
RT_STEP = "_pipeline_step"
#: The statuses of a task that has not ended.
NOT_FINAL = [TaskStatus.created, TaskStatus.queued, TaskStatus.in_progress]


def check_args(backend: Backend, run_id: str, values: Mapping[str, str]) -> list[Param]:
    """New values for a run's parameters, as the ``Param`` records to store: ``{name: text}``
    where a name without a section is an argument (section ``Args``) and ``Section/name``
    names any parameter. Each value is checked against the stored parameter's type; an unknown
    name or a value that is not of that type is a ``ValidationError`` that names it."""
    stored = {p.key: p for p in backend.get_params(run_id)}
    out: list[Param] = []
    for name, value in values.items():
        key = name.strip()
        if not key or key.startswith("/") or key.endswith("/"):
            raise ValidationError(f"parameter name {name!r} is not a NAME or Section/NAME")
        if "/" not in key:
            key = f"{ARGS_SECTION}/{key}"
        old = stored.get(key)
        if old is None:
            known = ", ".join(sorted(k for k in stored if k.startswith(ARGS_SECTION + "/")))
            raise ValidationError(
                f"the pipeline has no parameter {key!r}; its arguments: {known or 'none'}"
            )
        if not isinstance(value, str) or not fits(value, old.type):
            raise ValidationError(
                f"parameter {key}: {value!r} is not a value of its type, {old.type}"
            )
        out.append(Param(old.section, old.name, value, old.type, old.description))
    return out


def fits(value: str, kind: str) -> bool:
    """Whether ``value`` (text a user typed) reads as a parameter of type ``kind``."""
    try:
        if kind == "int":
            int(value)
        elif kind == "float":
            float(value)
        elif kind == "bool":
            return value.strip().lower() in ("true", "false", "1", "0", "yes", "no")
        elif kind in ("list", "dict", "tuple"):
            return isinstance(json.loads(value), list if kind in ("list", "tuple") else dict)
    except ValueError:
        return False
    return True


def is_pipeline_run(backend: Backend, rec: TaskRecord) -> bool:
    """Whether the task holds a pipeline (a graph of steps)."""
    return any(c.name == CONFIG_DAG for c in backend.get_configs(rec.id))


def pipeline_run(backend: Backend, run_id: str) -> TaskRecord:
    """The run's task; a ``ValidationError`` when the task holds no pipeline."""
    rec = backend.get_task(run_id)
    if not is_pipeline_run(backend, rec):
        raise ValidationError(
            f"task {rec.id} ({rec.name!r}, type {rec.type}) is not a pipeline run: it holds "
            f"no {CONFIG_DAG!r} configuration; list the runs with `stepline pipelines list`"
        )
    return rec


def clone_run(
    backend: Backend,
    run_id: str,
    *,
    name: str | None = None,
    comment: str | None = None,
    parent: str | None = None,
    project: str | None = None,
    version: str | None = None,
) -> TaskRecord:
    """A draft copy of a stored run (its DAG, arguments and code) that knows which pipeline,
    and version, it is a run of."""
    record = backend.clone_task(run_id, name=name, comment=comment, parent=parent, project=project)
    kept = backend.get_runtime(run_id)
    runtime = {k: kept[k] for k in KEPT_RUNTIME if k in kept}
    if version is not None:
        runtime[RT_VERSION] = str(version)
    if runtime:
        backend.set_runtime(record.id, runtime)
    return record


def new_run(
    backend: Backend,
    run_id: str,
    values: Mapping[str, str],
    queue: str | None = "services",
) -> TaskRecord:
    """A new run of the pipeline ``run_id`` is a run of, with some arguments changed
    (``values``, see ``check_args``), queued on ``queue`` for an agent (``None``: left a
    draft, to run with ``python -m stepline.runner ID``). Everything is checked before
    anything is created."""
    pipeline_run(backend, run_id)
    changes = check_args(backend, run_id, values)
    check_queue(backend, queue)
    record = clone_run(backend, run_id)
    if changes:
        backend.set_params(record.id, changes)
    if queue is not None:
        record = backend.enqueue(record.id, queue)
    return record


def check_queue(backend: Backend, queue: str | None) -> None:
    """A ``NotFoundError`` that says how to make it when the queue ``queue`` (if any) does
    not exist."""
    if queue is not None and queue not in {q.name for q in backend.get_queues()}:
        raise NotFoundError(
            f"queue {queue!r} does not exist; create it with `stepline queues create {queue}` "
            f"or start an agent for it: `stepline agent --queue {queue}`"
        )


def abort_task(backend: Backend, task_id: str, reason: str = "") -> TaskRecord:
    """Stop a task that has not ended: a queued one leaves its queue, a running one is ended
    by whoever runs it (its agent, or its pipeline). A task that already ended is an
    ``InvalidTransitionError`` naming its status."""
    rec = backend.get_task(task_id)
    if rec.status in FINAL:
        raise InvalidTransitionError(task_id, rec.status.value, TaskStatus.stopped.value)
    if rec.status == TaskStatus.queued:
        try:
            backend.dequeue(task_id)
        except InvalidTransitionError:
            pass  # an agent claimed it meanwhile: it is stopped as a running task
    return backend.set_status(task_id, TaskStatus.stopped, message="aborted", reason=reason)


def abort_run(backend: Backend, run_id: str, reason: str = "") -> list[str]:
    """Abort a pipeline run: its own task (the controller, unless it already ended) and every
    step task of it that has not ended (a pipeline used as a step is aborted with its steps).
    Returns the ids of the tasks stopped, the run's first."""
    rec = pipeline_run(backend, run_id)
    return _abort_tree(backend, rec, reason or "aborted by the user")


def _abort_tree(backend: Backend, rec: TaskRecord, reason: str) -> list[str]:
    stopped: list[str] = []
    if rec.status not in FINAL and _stop(backend, rec.id, reason):  # first: it starts no more
        stopped.append(rec.id)
    children = backend.find_tasks(TaskFilter(parent=rec.id, status=NOT_FINAL, archived=None))
    for child in children:
        if child.type == str(TaskTypes.controller):
            if RT_STEP not in backend.get_runtime(child.id):
                continue  # a run of its own (a rerun or a resume of this one), not a step
            stopped.extend(_abort_tree(backend, child, reason))
        elif _stop(backend, child.id, reason):
            stopped.append(child.id)
    return stopped


def _stop(backend: Backend, task_id: str, reason: str) -> bool:
    """Abort a task that had not ended; whether it is stopped now (its pipeline, seeing the
    run aborted, may have stopped it a moment before)."""
    try:
        abort_task(backend, task_id, reason)
    except InvalidTransitionError as exc:
        return getattr(exc, "old", None) == TaskStatus.stopped.value
    return True
