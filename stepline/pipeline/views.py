"""What a pipeline run looks like from the store: its steps (graph, status, timing, cache
reuse) and its arguments, for the command line and the server.

A run is a task of type ``controller``. Its configuration object ``Pipeline`` holds the DAG
(each step's parents), and its runtime properties hold the run's version, progress and, for
each step, ``_node/STEP``: a JSON object with the step's status, task, start and end times,
cache reuse, retries and message. Only ``Backend`` calls are used.

What the run's task recorded is checked against the step tasks themselves (one query for all
of them): a run whose controller died, or was aborted from outside, may not have recorded the
end of its steps. A step recorded as queued or running whose task has ended shows that end
(a stopped task: ``aborted``); once the run itself has ended, steps still shown queued or
running are ``aborted`` and pending ones ``skipped``.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import time
from typing import Any

from stepline.backend.protocol import Backend
from stepline.core.errors import ValidationError
from stepline.core.records import TaskFilter, TaskRecord
from stepline.core.status import FINAL, TaskStatus

CONFIG_DAG = "Pipeline"
RT_NODE = "_node/"
RT_VERSION = "version"
RT_RUN = "_run_number"
RT_NAME = "_pipeline_name"
RT_DEFAULT_QUEUE = "pipeline/default_queue"
#: On a run made by resuming another (see ``recovery``): the id of the run it resumes.
RT_RESUME_OF = "_resume_of"
ARGS_SECTION = "Args"
#: Node statuses in which a step no longer changes.
FINAL_STEP = frozenset({"completed", "cached", "aborted", "failed", "skipped"})
#: Node statuses of a step whose task was sent to run and has not ended (as recorded).
LIVE_STEP = frozenset({"queued", "running"})
#: The node status a step shows when its task ended so.
STEP_OF_TASK = {
    TaskStatus.completed: "completed",
    TaskStatus.failed: "failed",
    TaskStatus.stopped: "aborted",
}
#: The status message of a run whose controller died (see ``recovery``).
INTERRUPTED = "interrupted"
#: Why a step that had not ended shows aborted (or skipped) once its run has ended.
RUN_ENDED = {
    TaskStatus.stopped: "the run was aborted",
    TaskStatus.failed: "the run failed",
    TaskStatus.completed: "the run ended",
}


def task_duration(record: TaskRecord, now: float | None = None) -> float | None:
    """Seconds the task ran: started to completed, or started to now while it runs."""
    if not record.started:
        return None
    if record.completed:
        return max(0.0, record.completed - record.started)
    if record.status == TaskStatus.in_progress:
        return max(0.0, (time.time() if now is None else now) - record.started)
    return None


def run_summary(record: TaskRecord, runtime: dict[str, str]) -> dict[str, Any]:
    """One line of a list of runs."""
    return {
        "id": record.id,
        "name": record.name,
        "project": record.project,
        "version": runtime.get(RT_VERSION),
        "run_number": _int(runtime.get(RT_RUN)),
        "status": record.status.value,
        "progress": _int(runtime.get("progress")),
        "started": record.started,
        "completed": record.completed,
        "duration": task_duration(record),
        "archived": record.archived,
    }


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


@dataclasses.dataclass
class StepView:
    """One step of a run, as the run's task records it."""

    name: str
    parents: list[str]
    status: str
    task: str | None
    started: float | None
    ended: float | None
    cached_from: str | None
    retries: int
    message: str
    #: the status of the step's task (of the earlier task for a cached step), None if unknown
    task_status: str | None = None

    @property
    def cached(self) -> bool:
        return self.status == "cached" or bool(self.cached_from)

    def duration(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        if self.ended is not None:
            return max(0.0, self.ended - self.started)
        if self.status in FINAL_STEP:
            return None
        return max(0.0, (time.time() if now is None else now) - self.started)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["duration"] = self.duration()
        return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def dag_order(parents: dict[str, list[str]]) -> list[str]:
    """Step names so that each comes after its parents; among the steps that are ready at the
    same time, the order they were added in (the order of ``parents``) is kept. Steps caught
    in a cycle (a damaged record) come last, in their own order."""
    index = {name: i for i, name in enumerate(parents)}
    waiting = {n: len({p for p in parents[n] if p in index}) for n in parents}
    children: dict[str, list[str]] = {n: [] for n in parents}
    for n in parents:
        for p in set(parents[n]):
            if p in index:
                children[p].append(n)
    ready = [index[n] for n, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    names = list(parents)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, index[child])
    if len(order) < len(names):
        placed = set(order)
        order.extend(n for n in names if n not in placed)
    return order


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _step_tasks(backend: Backend, run_id: str, steps: list[StepView]) -> dict[str, TaskRecord]:
    """The task of each step, by id: the run's children in one query, and the tasks of other
    runs that some steps name (cached steps, base tasks run as they are) in one more."""
    found = {t.id: t for t in backend.find_tasks(TaskFilter(parent=run_id, archived=None))}
    others = list(dict.fromkeys(s.task for s in steps if s.task and s.task not in found))
    if others:
        found.update((t.id, t) for t in backend.find_tasks(TaskFilter(ids=others, archived=None)))
    return found


def _reconcile(steps: list[StepView], run: TaskRecord, tasks: dict[str, TaskRecord]) -> None:
    """Correct what the run's task recorded with what the step tasks say (module docstring)."""
    run_ended = run.status in FINAL
    for step in steps:
        task = tasks.get(step.task) if step.task else None
        if task is not None:
            step.task_status = task.status.value
            if step.status in LIVE_STEP and task.status in STEP_OF_TASK:
                step.status = STEP_OF_TASK[task.status]
                why = last_line(task.status_reason) or task.status_message
                if why and task.status != TaskStatus.completed:
                    step.message = why
                if step.ended is None and task.completed is not None:
                    step.ended = task.completed
        if run_ended and (step.status in LIVE_STEP or step.status == "pending"):
            step.status = "aborted" if step.status in LIVE_STEP else "skipped"
            step.message = RUN_ENDED.get(run.status, "the run ended")
            if run.status_message == INTERRUPTED:
                step.message = "the run was interrupted"


def last_line(text: str) -> str:
    """The last non-blank line of ``text`` (of a traceback: the error itself), stripped."""
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


@dataclasses.dataclass
class RunView:
    """Everything known about one run."""

    task: TaskRecord
    runtime: dict[str, str]
    args: dict[str, str]
    steps: list[StepView]
    metrics: dict[str, dict[str, dict[str, float]]]
    #: the run this one resumes, and the runs made to resume this one (oldest first)
    resume_of: str | None = None
    resumed_by: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def load(cls, backend: Backend, rec: TaskRecord) -> RunView:
        dag_text = next(
            (c.value for c in backend.get_configs(rec.id) if c.name == CONFIG_DAG), None
        )
        if dag_text is None:
            raise ValidationError(
                f"task {rec.id} ({rec.name!r}, type {rec.type}) is not a pipeline run: it holds "
                f"no {CONFIG_DAG!r} configuration; list the runs with `stepline pipelines list`"
            )
        try:
            dag = json.loads(dag_text)
            nodes = dag.get("nodes") or {}
            parents = {
                str(n): [str(p) for p in (e or {}).get("parents") or []] for n, e in nodes.items()
            }
        except (ValueError, AttributeError, TypeError):
            raise ValidationError(
                f"task {rec.id}: its {CONFIG_DAG!r} configuration is not a pipeline graph"
            ) from None
        runtime = backend.get_runtime(rec.id)
        states: dict[str, dict[str, Any]] = {}
        for key, value in runtime.items():
            if key.startswith(RT_NODE):
                try:
                    state = json.loads(value)
                except ValueError:
                    state = {}
                states[key[len(RT_NODE) :]] = state if isinstance(state, dict) else {}
        for name in states:  # a step recorded but missing from the graph still shows
            parents.setdefault(name, [])
        steps = []
        for name in dag_order(parents):
            st = states.get(name, {})
            steps.append(
                StepView(
                    name=name,
                    parents=parents[name],
                    status=str(st.get("status") or "pending"),
                    task=_text(st.get("task")),
                    started=_number(st.get("started")),
                    ended=_number(st.get("ended")),
                    cached_from=_text(st.get("cached_from")),
                    retries=_count(st.get("retries")),
                    message=str(st.get("message") or ""),
                )
            )
        _reconcile(steps, rec, _step_tasks(backend, rec.id, steps))
        args = {p.name: p.value for p in backend.get_params(rec.id) if p.section == ARGS_SECTION}
        attempts = backend.find_tasks(
            TaskFilter(
                parent=rec.id, runtime={RT_RESUME_OF: rec.id}, archived=None, order_by="created"
            )
        )
        return cls(
            task=rec,
            runtime=runtime,
            args=args,
            steps=steps,
            metrics=backend.get_last_scalars(rec.id),
            resume_of=runtime.get(RT_RESUME_OF) or None,
            resumed_by=[a.id for a in attempts],
        )

    @property
    def progress(self) -> int | None:
        """Percent of the steps done, as the run recorded it."""
        return _int(self.runtime.get("progress"))

    def to_json(self) -> dict[str, Any]:
        rec = self.task
        return {
            "id": rec.id,
            "name": rec.name,
            "project": rec.project,
            "version": self.runtime.get(RT_VERSION),
            "run_number": _int(self.runtime.get(RT_RUN)),
            "status": rec.status.value,
            "status_message": rec.status_message,
            "status_reason": rec.status_reason,
            "progress": self.progress,
            "created": rec.created,
            "started": rec.started,
            "completed": rec.completed,
            "duration": task_duration(rec),
            "args": self.args,
            "steps": [s.to_json() for s in self.steps],
            "metrics": self.metrics,
            "resume_of": self.resume_of,
            "resumed_by": self.resumed_by,
        }
