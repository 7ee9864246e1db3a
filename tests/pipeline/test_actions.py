"""What users do to stored runs from outside them (``pipeline.actions``), against real runs in
a real store: a new run with a changed argument (run by ``python -m stepline.runner``), aborting
a whole run or one step while it runs (the controller in this process with steps as local
processes, a decorator pipeline in debug mode, and the controller and steps on real agents),
and the run view that reconciles what a controller recorded with the step tasks themselves.

Held steps say they started (writing their pid to ``started-NAME``) and then wait for a
``release`` marker; every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stepline.automation.controller import PipelineDecorator
from stepline.backend import get_backend
from stepline.backend.protocol import Backend
from stepline.core.errors import InvalidTransitionError, NotFoundError, ValidationError
from stepline.core.records import ConfigObject, NewTask, TaskFilter
from stepline.core.status import TaskStatus
from stepline.pipeline.actions import abort_run, abort_task, check_args, new_run
from stepline.pipeline.controller import PipelineController
from stepline.pipeline.decorator import StepFailedError
from stepline.pipeline.views import RunView

PROJECT = "actions-tests"
DEADLINE = 60.0  # seconds any awaited event may take before a test gives up
HOLD = 90.0  # seconds a held step waits for its release


# -- steps (module level: a function step stores and runs its source) -------------------------
def double(n):
    return n * 2


def hold(folder, name):
    """Writes its pid to ``started-NAME``, then waits until ``release`` appears."""
    path = os.path.join(folder, "started-" + name)
    with open(path + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    deadline = time.monotonic() + HOLD
    while not os.path.exists(os.path.join(folder, "release")):
        if time.monotonic() > deadline:
            raise TimeoutError("nobody released the step")
        time.sleep(0.01)
    return name


@PipelineDecorator.component(return_values=["out"])
def held_component(folder, name):
    return hold(folder, name)


@PipelineDecorator.component(return_values=["number"])
def double_component(n):
    return n * 2


@PipelineDecorator.pipeline(name="deco-held", project=PROJECT, version="1.0.0")
def held_flow(folder):
    first = held_component(folder, "deco")
    return double_component(len(first))


# -- helpers -----------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:  # gone (ProcessLookupError when it went while being read)
        return False


def ended(pid: int) -> Callable[[], bool]:
    return lambda: not alive(pid)


def started_pid(folder: Path, name: str) -> int:
    path = folder / f"started-{name}"
    wait_until(path.exists, f"step {name} to start")
    return int(path.read_text())


def status_of(task_id: str) -> TaskStatus:
    return get_backend().get_task(task_id).status


def view(run_id: str) -> RunView:
    backend = get_backend()
    return RunView.load(backend, backend.get_task(run_id))


def shown(run_id: str) -> dict[str, str]:
    """Each step's status as the run view shows it."""
    return {s.name: s.status for s in view(run_id).steps}


def held_pipe(name: str, folder: Path, *, args: bool = False) -> PipelineController:
    """a, b: held in parallel; after_a: a child of a. With ``args`` the folder is the
    argument ``folder`` (so a new run can hold elsewhere)."""
    pipe = PipelineController(name=name, project=PROJECT, version="1.0.0")
    where: Any = str(folder)
    if args:
        pipe.add_parameter("folder", str(folder))
        where = "${pipeline.folder}"
    for step in ("a", "b"):
        pipe.add_function_step(
            step, hold, function_kwargs={"folder": where, "name": step}, function_return=["out"]
        )
    pipe.add_function_step(
        "after_a", double, function_kwargs={"n": 1}, function_return=["value"], parents=["a"]
    )
    return pipe


def doubler(name: str = "doubler") -> PipelineController:
    pipe = PipelineController(name=name, project=PROJECT, version="1.0.0")
    pipe.add_parameter("n", 2, param_type="int")
    pipe.add_function_step(
        "twice", double, function_kwargs={"n": "${pipeline.n}"}, function_return=["value"]
    )
    return pipe


def env_of(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env["STEPLINE_HOME"] = str(home)
    return env


# -- a new run ---------------------------------------------------------------------------------
def test_a_new_run_with_a_changed_argument_runs_with_it(home: Path) -> None:
    pipe = doubler()
    assert pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
    assert pipe.id is not None
    backend = get_backend()

    rec = new_run(backend, pipe.id, {"n": "21"}, queue=None)

    assert rec.id != pipe.id and rec.status == TaskStatus.created
    runtime = backend.get_runtime(rec.id)
    assert runtime["_pipeline_name"] == f"{PROJECT}/doubler"
    assert runtime["version"] == "1.0.0"
    assert {p.key: (p.value, p.type) for p in backend.get_params(rec.id)}["Args/n"] == ("21", "int")
    assert shown(rec.id) == {"twice": "pending"}

    done = subprocess.run(
        [sys.executable, "-m", "stepline.runner", rec.id], env=env_of(home),
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ran = view(rec.id)
    assert ran.task.status == TaskStatus.completed
    assert ran.args == {"n": "21"}
    (step,) = ran.steps
    assert step.status == "completed" and step.task_status == "completed"
    assert step.task is not None
    returned = {p.key: p.value for p in backend.get_params(step.task)}
    assert returned["return/value"] == "42"
    # the source run is untouched
    assert {p.key: p.value for p in backend.get_params(pipe.id)}["Args/n"] == "2"


def test_arguments_and_queues_are_checked_before_anything_is_made(home: Path) -> None:
    pipe = doubler("checked")
    assert pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
    assert pipe.id is not None
    backend = get_backend()

    def runs() -> list[str]:
        return [t.id for t in backend.find_tasks(TaskFilter(type=["controller"], archived=None))]

    with pytest.raises(ValidationError, match=r"no parameter 'Args/bogus'.*Args/n"):
        new_run(backend, pipe.id, {"bogus": "1"})
    with pytest.raises(ValidationError, match=r"Args/n: 'many' is not a value of its type, int"):
        new_run(backend, pipe.id, {"n": "many"})
    with pytest.raises(NotFoundError, match="queue 'nowhere' does not exist"):
        new_run(backend, pipe.id, {"n": "3"}, queue="nowhere")
    plain = backend.create_task(NewTask(name="plain", project=PROJECT))
    with pytest.raises(ValidationError, match="is not a pipeline run"):
        new_run(backend, plain.id, {})
    assert runs() == [pipe.id]

    (param,) = check_args(backend, pipe.id, {"Args/n": "3"})
    assert (param.section, param.name, param.value, param.type) == ("Args", "n", "3", "int")
    queued = new_run(backend, pipe.id, {"n": "3"})
    assert queued.status == TaskStatus.queued
    assert backend.queue_tasks("services") == [queued.id]


# -- aborting tasks ----------------------------------------------------------------------------
def test_abort_task_stops_a_task_that_has_not_ended(home: Path) -> None:
    backend = get_backend()
    made = {s: backend.create_task(NewTask(name=s, project=PROJECT)).id for s in ("c", "q", "r")}
    backend.enqueue(made["q"], "default")
    backend.set_status(made["r"], TaskStatus.in_progress)

    for task_id in made.values():
        rec = abort_task(backend, task_id, "not needed")
        assert (rec.status, rec.status_message, rec.status_reason) == (
            TaskStatus.stopped, "aborted", "not needed"
        )  # fmt: skip
    assert backend.queue_tasks("default") == []
    with pytest.raises(InvalidTransitionError, match="from 'stopped'"):
        abort_task(backend, made["c"], "again")
    done = backend.create_task(NewTask(name="done", project=PROJECT))
    backend.set_status(done.id, TaskStatus.completed)
    with pytest.raises(InvalidTransitionError, match="from 'completed'"):
        abort_task(backend, done.id, "")


def test_aborting_a_run_with_local_processes_kills_its_steps(gate: Path) -> None:
    pipe = held_pipe("local-abort", gate)
    assert pipe.start_locally(run_pipeline_steps_locally=True, wait=False)
    run_id = pipe.id
    assert run_id is not None
    pids = [started_pid(gate, "a"), started_pid(gate, "b")]
    backend = get_backend()
    tasks = {n: str(node.executed) for n, node in pipe.get_pipeline_dag().items() if node.executed}

    stopped = abort_run(backend, run_id, "enough of this")

    assert stopped[0] == run_id and set(stopped) == {run_id, tasks["a"], tasks["b"]}
    wait_until(lambda: not pipe.is_running(), "the run to stop")
    for pid in pids:
        wait_until(ended(pid), f"step process {pid} to end")
    assert {n: node.status.value for n, node in pipe.get_pipeline_dag().items()} == {
        "a": "aborted", "b": "aborted", "after_a": "skipped"
    }  # fmt: skip
    assert shown(run_id) == {"a": "aborted", "b": "aborted", "after_a": "skipped"}
    run = backend.get_task(run_id)
    assert (run.status, run.status_reason) == (TaskStatus.stopped, "enough of this")
    assert {status_of(t) for t in tasks.values()} == {TaskStatus.stopped}
    assert not pipe.is_successful()
    assert abort_run(backend, run_id) == []  # nothing left to stop


def test_aborting_one_step_aborts_its_node_and_fails_the_run(gate: Path) -> None:
    pipe = held_pipe("step-abort", gate)
    assert pipe.start_locally(run_pipeline_steps_locally=True, wait=False)
    run_id = pipe.id
    assert run_id is not None
    pid_a, pid_b = started_pid(gate, "a"), started_pid(gate, "b")
    dag = pipe.get_pipeline_dag()
    task_a = dag["a"].executed
    assert isinstance(task_a, str)

    abort_task(get_backend(), task_a, "not this one")

    wait_until(lambda: dag["a"].status.value == "aborted", "step a to be aborted")
    wait_until(lambda: not alive(pid_a), "step a's process to end")
    assert dag["a"].status_message == "not this one"
    assert alive(pid_b) and pipe.is_running()  # the other step runs on
    (gate / "release").touch()
    assert pipe.wait(timeout=DEADLINE / 60)
    assert {n: node.status.value for n, node in dag.items()} == {
        "a": "aborted", "b": "completed", "after_a": "skipped"
    }  # fmt: skip
    run = get_backend().get_task(run_id)
    assert run.status == TaskStatus.failed
    assert "step 'a' was aborted" in run.status_reason
    assert shown(run_id) == {"a": "aborted", "b": "completed", "after_a": "skipped"}


def test_aborting_a_decorator_pipeline_in_debug_mode(gate: Path) -> None:
    PipelineDecorator.debug_pipeline()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            held_flow(str(gate))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-deco-run", daemon=True)
    try:
        thread.start()
        started_pid(gate, "deco")
        backend = get_backend()
        (run_id,) = [
            t.id for t in backend.find_tasks(TaskFilter(type=["controller"], project=PROJECT))
        ]
        stopped = abort_run(backend, run_id, "stop the decorator")
        assert len(stopped) == 2
        thread.join(DEADLINE)
        assert not thread.is_alive()
    finally:
        PipelineDecorator._mode_default = None
    # the logic waited for the step: it hears that the step was aborted, and why
    assert len(errors) == 1 and isinstance(errors[0], StepFailedError), errors
    assert "was aborted: stop the decorator" in str(errors[0])
    record = backend.get_task(run_id)
    assert (record.status, record.status_reason) == (TaskStatus.stopped, "stop the decorator")
    assert shown(run_id) == {"held_component": "aborted"}


# -- the run view ------------------------------------------------------------------------------
def recorded_run(backend: Backend, nodes: dict[str, dict[str, Any]]) -> str:
    """A run's task as a controller records it: the graph, and each step's state."""
    rec = backend.create_task(
        NewTask(
            name="recorded", project=PROJECT, type="controller", status=TaskStatus.in_progress,
            configs=[ConfigObject("Pipeline", json.dumps({"nodes": {n: {} for n in nodes}}))],
        )
    )  # fmt: skip
    backend.set_runtime(rec.id, {f"_node/{n}": json.dumps(st) for n, st in nodes.items()})
    return rec.id


def step_task(backend: Backend, run_id: str | None, status: TaskStatus, reason: str = "") -> str:
    rec = backend.create_task(NewTask(name="step", project=PROJECT, parent=run_id))
    if status != TaskStatus.created:
        backend.set_status(rec.id, TaskStatus.in_progress)
    if status in (TaskStatus.completed, TaskStatus.failed, TaskStatus.stopped):
        backend.set_status(rec.id, status, message="ended", reason=reason)
    return rec.id


def test_the_view_shows_what_step_tasks_say_when_the_controller_did_not(home: Path) -> None:
    backend = get_backend()
    earlier = step_task(backend, None, TaskStatus.completed)
    run_id = recorded_run(backend, {})
    tasks = {
        "done": step_task(backend, run_id, TaskStatus.completed),
        "broke": step_task(backend, run_id, TaskStatus.failed, "Traceback...\nKeyError: 'x'"),
        "killed": step_task(backend, run_id, TaskStatus.stopped, "the user said so"),
        "working": step_task(backend, run_id, TaskStatus.in_progress),
        "waiting": step_task(backend, run_id, TaskStatus.created),
    }
    states: dict[str, dict[str, Any]] = {
        "done": {"status": "running", "task": tasks["done"], "message": "cache miss: new code"},
        "broke": {"status": "running", "task": tasks["broke"]},
        "killed": {"status": "queued", "task": tasks["killed"]},
        "working": {"status": "running", "task": tasks["working"]},
        "waiting": {"status": "queued", "task": tasks["waiting"]},
        "reused": {"status": "cached", "task": earlier, "cached_from": earlier},
        "later": {"status": "pending"},
    }
    backend.set_runtime(run_id, {f"_node/{n}": json.dumps(st) for n, st in states.items()})

    steps = {s.name: s for s in view(run_id).steps}
    assert {n: s.status for n, s in steps.items()} == {
        "done": "completed", "broke": "failed", "killed": "aborted", "working": "running",
        "waiting": "queued", "reused": "cached", "later": "pending",
    }  # fmt: skip
    assert {n: s.task_status for n, s in steps.items()} == {
        "done": "completed", "broke": "failed", "killed": "stopped", "working": "in_progress",
        "waiting": "created", "reused": "completed", "later": None,
    }  # fmt: skip
    assert steps["broke"].message == "KeyError: 'x'"
    assert steps["killed"].message == "the user said so"
    assert steps["done"].message == "cache miss: new code"
    assert steps["done"].ended == backend.get_task(tasks["done"]).completed
    assert {s["name"]: s["task_status"] for s in view(run_id).to_json()["steps"]}["done"] == (
        "completed"
    )

    # the run ended (its controller was killed): what had not ended never will
    backend.set_status(run_id, TaskStatus.stopped, message="aborted")
    assert shown(run_id) == {
        "done": "completed", "broke": "failed", "killed": "aborted", "working": "aborted",
        "waiting": "aborted", "reused": "cached", "later": "skipped",
    }  # fmt: skip


class CountingBackend:
    """The real backend, counting the calls made through it."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        return getattr(self.inner, name)


def test_the_view_of_a_thousand_steps_takes_a_fixed_number_of_reads(home: Path) -> None:
    backend = get_backend()
    run_id = recorded_run(backend, {f"s{i}": {"status": "pending"} for i in range(1000)})
    earlier = step_task(backend, None, TaskStatus.completed)
    states = {}
    for i in range(1000):
        if i % 2:
            states[f"s{i}"] = {"status": "cached", "task": earlier, "cached_from": earlier}
        else:
            done = NewTask(name="step", project=PROJECT, parent=run_id, status=TaskStatus.completed)
            states[f"s{i}"] = {"status": "running", "task": backend.create_task(done).id}
    backend.set_runtime(run_id, {f"_node/{n}": json.dumps(st) for n, st in states.items()})

    counting = CountingBackend(backend)
    loaded = RunView.load(counting, backend.get_task(run_id))

    assert len(loaded.steps) == 1000
    assert {s.status for s in loaded.steps} == {"completed", "cached"}
    assert counting.calls == {
        "get_configs": 1, "get_runtime": 1, "find_tasks": 3, "get_params": 1,
        "get_last_scalars": 1,
    }  # fmt: skip


# -- on agents ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_new_runs_on_agents_are_aborted_with_their_steps(gate: Path, home: Path) -> None:
    """Two new runs, each with its controller on a ``services`` agent and a changed argument
    (where its steps hold): one whose steps go to a ``default`` agent, one whose steps run as
    processes beside its controller. Aborting each ends every step process and the run."""
    from tests.agentproc import start_agent

    backend = get_backend()
    free = gate / "free"
    free.mkdir()
    (free / "release").touch()
    agents = [
        start_agent(home, ["services"], extra=["--services-mode", "--poll", "0.02"]),
        start_agent(home, ["default"], extra=["--max-jobs", "2", "--poll", "0.02"]),
    ]
    try:
        wait_until(lambda: len(backend.get_agents()) == 2, "the agents to register")
        by_agents = held_pipe("on-agents", free, args=True)
        assert by_agents.start_locally(run_pipeline_steps_locally=False)
        by_processes = held_pipe("beside-controller", free, args=True)
        assert by_processes.start_locally(run_pipeline_steps_locally=True)

        for source, name in ((by_agents, "queue"), (by_processes, "local")):
            folder = gate / name
            folder.mkdir()
            assert source.id is not None
            run = new_run(backend, source.id, {"folder": str(folder)})
            pids = [started_pid(folder, "a"), started_pid(folder, "b")]

            stopped = abort_run(backend, run.id, f"abort the {name} run")

            assert stopped[0] == run.id and len(stopped) == 3
            for pid in pids:
                wait_until(ended(pid), f"{name}: step process {pid} to end")
            wait_until(
                lambda: not any(a.running for a in backend.get_agents()),
                f"{name}: the agents to end the run's tasks",
            )
            assert shown(run.id) == {"a": "aborted", "b": "aborted", "after_a": "skipped"}
            rec = backend.get_task(run.id)
            assert (rec.status, rec.status_reason) == (TaskStatus.stopped, f"abort the {name} run")
            children = backend.find_tasks(TaskFilter(parent=run.id, archived=None))
            assert {c.status for c in children} == {TaskStatus.stopped}
            assert not (folder / "started-after_a").exists()
    except AssertionError as exc:
        consoles = "\n".join(f"--- agent {i}:\n{a.output()}" for i, a in enumerate(agents))
        raise AssertionError(f"{exc}\n{consoles}") from exc
    finally:
        for agent in agents:
            agent.stop()
