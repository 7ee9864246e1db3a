"""Runs that lost their controller, and new attempts that reuse a run's finished steps.

Heartbeats
----------
While a pipeline runs, its controller writes the time to its task's runtime property
``_heartbeat`` every ``heartbeat_interval()`` seconds (``STEPLINE_RUN_HEARTBEAT``, default 2),
next to ``_controller`` (the host and pid that run it). ``reap_runs`` finds runs left
``in_progress`` whose controller is gone: its heartbeat is older than ``stale_after()``
(``STEPLINE_RUN_TIMEOUT``, default ten heartbeats), or its process no longer exists on this very
host. Such a run is marked **interrupted**: status ``stopped``, message ``interrupted``, and a
reason that says when it was last heard from. Its steps that ran in the controller's own
processes (local and debug mode) are stopped with it; steps on agents are left to finish, and a
resume reuses them (a step still running is waited for, not started twice). Whoever looks
reaps: agents, the server, the command line, a resume.

Resume
------
``resume_run`` makes a new attempt of a run that failed, was aborted or was interrupted: a
**linked run**, a clone of the run (its parent, and runtime ``_resume_of``, name the run) whose
runtime ``_reuse`` maps each step that finished in the run (completed, or cached) to its task.
When the attempt comes to such a step it reuses that task, whatever the step's cache setting,
provided the step's cache key is the same as then (same code, same inputs); a step whose inputs
changed runs again and the run's log says why. The failed, aborted, skipped and never-started
steps run again with the same arguments. The attempt runs the script that built the pipeline
again when the run knows it (so a step fixed since then runs the fixed code: its cache key
changed), else the graph stored on the run. ``from_step`` re-executes that step and everything
downstream of it (``_rerun``: neither reused nor taken from the cache), optionally with new
values for some of that step's arguments (``_step_args``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stepline.backend.protocol import Backend
from stepline.core.errors import (
    InvalidTransitionError,
    NotFoundError,
    StepLineError,
    ValidationError,
)
from stepline.core.records import Param, TaskFilter, TaskRecord
from stepline.core.status import FINAL, TaskStatus, TaskTypes
from stepline.pipeline.actions import RT_STEP, check_queue, clone_run, fits, pipeline_run
from stepline.pipeline.dag import descendants
from stepline.pipeline.views import INTERRUPTED, RT_NAME, RT_RESUME_OF, RunView, StepView

RT_HEARTBEAT = "_heartbeat"
RT_CONTROLLER = "_controller"
RT_REUSE = "_reuse"
RT_RERUN = "_rerun"
RT_STEP_ARGS = "_step_args"
#: Without any heartbeat (a run started before heartbeats, or one still starting), a run is
#: judged by when it started, with at least this many seconds of patience.
NO_HEARTBEAT_GRACE = 300.0
#: The sections of a function step's parameters that are not arguments a resume can change.
NOT_ARGS = ("return", "kwargs_artifacts")


def heartbeat_interval() -> float:
    """Seconds between a running controller's heartbeats (``STEPLINE_RUN_HEARTBEAT``)."""
    return _seconds("STEPLINE_RUN_HEARTBEAT", 2.0)


def stale_after() -> float:
    """Seconds without a heartbeat after which a run's controller counts as dead
    (``STEPLINE_RUN_TIMEOUT``, default ten heartbeats)."""
    return _seconds("STEPLINE_RUN_TIMEOUT", 10 * heartbeat_interval())


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValidationError(f"{name}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise ValidationError(f"{name}={text!r} must be more than 0 seconds")
    return value


def controller_identity() -> str:
    """What ``_controller`` records: this process's host, pid and pid namespace."""
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "pidns": _pid_space()})


def _pid_space() -> str:
    """Which pid namespace this process is in (containers sharing a host name differ)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def heartbeat_values() -> dict[str, str]:
    return {RT_HEARTBEAT: f"{time.time():.3f}"}


# -- finding dead controllers -----------------------------------------------------------------
def dead_reason(rec: TaskRecord, runtime: Mapping[str, str], now: float) -> str | None:
    """Why the controller of the running run ``rec`` counts as dead, or None while it lives."""
    beat = _float(runtime.get(RT_HEARTBEAT))
    if beat is None:
        if RT_NAME not in runtime:  # a task of type controller that holds no pipeline
            return None
        if runtime.get("_agent"):  # an agent runs it and has not started it yet: its agent
            return None  # answers for it (a dead agent's tasks are reaped with it)
        since = rec.started or rec.created
        if now - since > max(NO_HEARTBEAT_GRACE, stale_after()):
            return f"its controller never sent a heartbeat in {now - since:.0f} s"
        return None
    silent = now - beat
    where = _where(runtime)
    if silent > stale_after():
        return f"its controller{where} sent no heartbeat for {silent:.0f} s"
    if silent > 2 * heartbeat_interval() and _gone(runtime):
        return f"its controller{where} is no longer running"
    return None


def _where(runtime: Mapping[str, str]) -> str:
    who = _identity(runtime)
    if who is None:
        return ""
    return f" (pid {who[1]} on {who[0]})"


def _identity(runtime: Mapping[str, str]) -> tuple[str, int, str] | None:
    try:
        data = json.loads(runtime.get(RT_CONTROLLER) or "")
        return str(data["host"]), int(data["pid"]), str(data.get("pidns", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _gone(runtime: Mapping[str, str]) -> bool:
    """Whether the controller ran on this host, among the processes this one sees, and its
    process has ended."""
    who = _identity(runtime)
    if who is None or who[0] != socket.gethostname() or who[2] != _pid_space():
        return False
    try:
        os.kill(who[1], 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's process)
        return False
    return False


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def runtimes(
    backend: Backend, ids: Sequence[str], keys: Sequence[str] | None = None
) -> dict[str, dict[str, str]]:
    """The runtime properties of many tasks, in one read when the store can."""
    many = getattr(backend, "get_runtimes", None)
    if many is not None:
        got: dict[str, dict[str, str]] = many(ids, keys)
        return got
    out = {}
    for i in ids:
        with contextlib.suppress(NotFoundError):
            rt = backend.get_runtime(i)
            out[i] = {k: v for k, v in rt.items() if keys is None or k in keys}
    return out


def reap_runs(backend: Backend, now: float | None = None) -> list[tuple[str, str]]:
    """Mark every running run whose controller is dead interrupted (see the module
    docstring); returns (run id, why) for each."""
    running = backend.find_tasks(
        TaskFilter(type=[str(TaskTypes.controller)], status=[TaskStatus.in_progress], archived=None)
    )
    if not running:
        return []
    now = time.time() if now is None else now
    keys = [RT_HEARTBEAT, RT_CONTROLLER, RT_NAME, "_agent"]
    known = runtimes(backend, [r.id for r in running], keys)
    reaped = []
    for rec in running:
        why = dead_reason(rec, known.get(rec.id, {}), now)
        if why is not None and mark_interrupted(backend, rec.id, why):
            reaped.append((rec.id, why))
    return reaped


def mark_interrupted(backend: Backend, run_id: str, why: str) -> bool:
    """Mark a running run interrupted (its controller died) and stop the steps that died
    with it; whether the run was still running."""
    rec = backend.get_task(run_id)
    local = (rec.script or {}).get("steps") != "queue"
    try:
        backend.set_status(run_id, TaskStatus.stopped, message=INTERRUPTED, reason=why)
    except InvalidTransitionError:
        return False
    steps = backend.find_tasks(
        TaskFilter(
            parent=run_id,
            status=[TaskStatus.created, TaskStatus.queued, TaskStatus.in_progress],
            archived=None,
        )
    )
    for step in steps:
        if step.type == str(TaskTypes.controller):
            continue  # a pipeline used as a step has a heartbeat of its own
        if not local and step.status != TaskStatus.created:
            continue  # on a queue or an agent: it goes on, and a resume takes it over
        with contextlib.suppress(StepLineError):
            backend.set_status(
                step.id,
                TaskStatus.stopped,
                message=INTERRUPTED,
                reason=f"the run {run_id} it belongs to was interrupted: {why}",
            )
    return True


# -- resuming ---------------------------------------------------------------------------------
@dataclass
class ResumePlan:
    """What a new attempt of a run reuses and re-executes."""

    #: the run this attempt resumes
    source: str = ""
    #: step -> the task whose results the attempt reuses (or, still running, waits for)
    reuse: dict[str, str] = field(default_factory=dict)
    #: steps to re-execute whatever the cache holds
    rerun: list[str] = field(default_factory=list)
    #: step -> {"Section/name": [value, type]}: new values of the step's arguments
    step_args: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def runtime(self) -> dict[str, str]:
        return {
            RT_RESUME_OF: self.source,
            RT_REUSE: json.dumps(self.reuse, sort_keys=True),
            RT_RERUN: json.dumps(self.rerun),
            RT_STEP_ARGS: json.dumps(self.step_args, sort_keys=True),
        }

    @classmethod
    def of(cls, runtime: Mapping[str, str]) -> ResumePlan:
        """The plan stored on an attempt (empty for a run that is not one)."""
        if RT_RESUME_OF not in runtime:
            return cls()
        try:
            return cls(
                source=runtime[RT_RESUME_OF],
                reuse=dict(json.loads(runtime.get(RT_REUSE) or "{}")),
                rerun=list(json.loads(runtime.get(RT_RERUN) or "[]")),
                step_args=dict(json.loads(runtime.get(RT_STEP_ARGS) or "{}")),
            )
        except (ValueError, TypeError):
            raise ValidationError(
                "the run's resume plan (runtime _reuse/_rerun/_step_args) is damaged"
            ) from None


def plan_resume(
    backend: Backend,
    view: RunView,
    from_step: str | None = None,
    values: Mapping[str, str] | None = None,
) -> ResumePlan:
    """What an attempt of the run ``view`` shows reuses and runs again (module docstring)."""
    steps = {s.name: s for s in view.steps}
    plan = ResumePlan(source=view.task.id)
    # new values a resumed run gave its steps hold in its own resumes too
    for name, changed in ResumePlan.of(view.runtime).step_args.items():
        plan.step_args[name] = dict(changed)
    rerun: set[str] = set()
    if from_step is not None:
        if from_step not in steps:
            raise ValidationError(
                f"run {view.task.id} has no step {from_step!r}; its steps: "
                f"{', '.join(steps) or 'none'}"
            )
        rerun = descendants(steps, [from_step])
        plan.rerun = [s.name for s in view.steps if s.name in rerun]
        if values:
            plan.step_args.setdefault(from_step, {}).update(
                _step_values(backend, view, steps[from_step], values)
            )
    found = _step_tasks_of(backend, view.task.id)
    for step in view.steps:
        if step.name in rerun:
            continue
        if step.task and step.status in ("completed", "cached"):
            plan.reuse[step.name] = step.task
        elif step.name in found:  # the run may have died before it recorded the step's end
            plan.reuse[step.name] = found[step.name]
    return plan


def _step_tasks_of(backend: Backend, run_id: str) -> dict[str, str]:
    """{step: task} of the run's own step tasks that completed, or are still queued or
    running (on an agent); the newest per step."""
    children = backend.find_tasks(
        TaskFilter(
            parent=run_id,
            status=[TaskStatus.completed, TaskStatus.queued, TaskStatus.in_progress],
            archived=None,
            order_by="created",
        )
    )
    steps = runtimes(backend, [c.id for c in children], [RT_STEP])
    out: dict[str, str] = {}
    for child in children:
        name = steps.get(child.id, {}).get(RT_STEP)
        if name:
            out[name] = child.id
    return out


def _step_values(
    backend: Backend, view: RunView, step: StepView, values: Mapping[str, str]
) -> dict[str, list[str]]:
    """New values of a step's arguments, checked against the types its task stored."""
    if not step.task:
        raise ValidationError(
            f"step {step.name!r} never ran in run {view.task.id}, so its arguments are not "
            "known; resume without new values for it"
        )
    stored = backend.get_params(step.task)
    params = [p for p in stored if p.section not in NOT_ARGS]
    out: dict[str, list[str]] = {}
    for name, value in values.items():
        param = _find_param(params, name.strip())
        if param is None:
            known = ", ".join(p.name if p.section == "kwargs" else p.key for p in params)
            if any(p.name == name and p.section == "kwargs_artifacts" for p in stored):
                raise ValidationError(
                    f"argument {name!r} of step {step.name!r} is passed as an artifact (another "
                    "step's output or a stored object); it cannot be set as a value"
                )
            raise ValidationError(
                f"step {step.name!r} has no argument {name!r}; its arguments: {known or 'none'}"
            )
        if not isinstance(value, str) or not fits(value, param.type):
            raise ValidationError(
                f"step {step.name!r}, argument {param.key}: {value!r} is not a value of its "
                f"type, {param.type}"
            )
        out[param.key] = [value, param.type]
    return out


def _find_param(params: list[Param], name: str) -> Param | None:
    if "/" in name:
        return next((p for p in params if p.key == name), None)
    named = [p for p in params if p.name == name]
    kwargs = [p for p in named if p.section == "kwargs"]
    if kwargs:
        return kwargs[0]
    return named[0] if len(named) == 1 else None


def resume_run(
    backend: Backend,
    run_id: str,
    *,
    from_step: str | None = None,
    values: Mapping[str, str] | None = None,
    queue: str | None = None,
) -> TaskRecord:
    """A new attempt of the run ``run_id`` (module docstring), queued on ``queue`` for an
    agent, or (``queue=None``) left a draft to run here with ``python -m stepline.runner ID``.
    A run still running is refused, as is resuming a completed run without ``from_step``.
    Everything is checked before anything is created."""
    if values and from_step is None:
        raise ValidationError(
            "new step arguments need the step they are for (from_step / --from STEP)"
        )
    with contextlib.suppress(StepLineError):
        reap_runs(backend)
    rec = pipeline_run(backend, run_id)
    if rec.status not in FINAL:
        beat = _float(backend.get_runtime(run_id).get(RT_HEARTBEAT))
        heard = f" (its controller was heard from {time.time() - beat:.0f} s ago)" if beat else ""
        raise ValidationError(
            f"run {run_id} is {rec.status.value}{heard}: it can be resumed once it has ended "
            f"(a run whose controller died is marked interrupted after {stale_after():g} s "
            f"without a heartbeat); to end it now: stepline pipelines abort {run_id}"
        )
    if rec.status == TaskStatus.completed and from_step is None:
        raise ValidationError(
            f"run {run_id} completed, there is nothing to resume; to run some steps again, "
            "name the first of them (from_step / --from STEP)"
        )
    check_queue(backend, queue)
    view = RunView.load(backend, rec)
    plan = plan_resume(backend, view, from_step, values)
    record = clone_run(backend, run_id, parent=run_id)
    script = dict(record.script or {})
    if script.get("kind") == "pipeline" and _has_code(script) and not script.get("from_code"):
        # the script that built the pipeline runs again, so a step fixed since runs the fix
        # (its cache key changed); without it, the graph stored on the run
        script["from_code"] = True
        backend.update_task(record.id, script=script)
    backend.set_runtime(record.id, plan.runtime())
    if queue is not None:
        record = backend.enqueue(record.id, queue)
    return record


def _has_code(script: Mapping[str, object]) -> bool:
    """Whether a run's task knows the script that built it (a file, its stored content, or
    a git repository)."""
    return any(script.get(k) for k in ("entry_path", "content", "repository"))


def source_queue(backend: Backend, run_id: str) -> str | None:
    """The queue an agent took the run from, if it ran on one."""
    return backend.get_runtime(run_id).get("_queue") or None
