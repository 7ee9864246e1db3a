"""What a pipeline run looks like from the store: its steps (graph, status, timing, cache
reuse) and its arguments, for the command line and the server.

A run is a task of type ``controller``. Its configuration object ``Pipeline`` holds the DAG
(each step's parents), and its runtime properties hold the run's version, progress and, for
each step, ``_node/STEP``: a JSON object with the step's status, task, start and end times,
cache reuse, retries and message. Only ``Backend`` calls are used.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from stepline.backend.protocol import Backend
from stepline.core.errors import ValidationError
from stepline.core.records import TaskRecord
from stepline.core.status import TaskStatus

CONFIG_DAG = "Pipeline"
RT_NODE = "_node/"
RT_VERSION = "version"
RT_RUN = "_run_number"
ARGS_SECTION = "Args"
#: Node statuses in which a step no longer changes.
FINAL_STEP = frozenset({"completed", "cached", "aborted", "failed", "skipped"})


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
    order: list[str] = []
    placed: set[str] = set()
    remaining = list(parents)
    while remaining:
        ready = [n for n in remaining if all(p in placed or p not in parents for p in parents[n])]
        if not ready:
            order.extend(remaining)
            break
        first = ready[0]
        order.append(first)
        placed.add(first)
        remaining.remove(first)
    return order


@dataclasses.dataclass
class RunView:
    """Everything known about one run."""

    task: TaskRecord
    runtime: dict[str, str]
    args: dict[str, str]
    steps: list[StepView]
    metrics: dict[str, dict[str, dict[str, float]]]

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
                    task=st.get("task") or None,
                    started=_number(st.get("started")),
                    ended=_number(st.get("ended")),
                    cached_from=st.get("cached_from") or None,
                    retries=int(st.get("retries") or 0),
                    message=str(st.get("message") or ""),
                )
            )
        args = {p.name: p.value for p in backend.get_params(rec.id) if p.section == ARGS_SECTION}
        return cls(
            task=rec,
            runtime=runtime,
            args=args,
            steps=steps,
            metrics=backend.get_last_scalars(rec.id),
        )

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
            "progress": _int(self.runtime.get("progress")),
            "created": rec.created,
            "started": rec.started,
            "completed": rec.completed,
            "duration": task_duration(rec),
            "args": self.args,
            "steps": [s.to_json() for s in self.steps],
            "metrics": self.metrics,
        }
