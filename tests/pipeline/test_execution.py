"""Execution semantics of PipelineController, end to end against a real store.

Most tests run in both local modes: each step in a child process forked from the fork server
(``process``) and function steps in threads of the test process (``in_process``). Steps that
must be "slow" wait for a marker file that the test (or another step) writes, so every
assertion follows an event, never a sleep.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepline import Task
from stepline.backend import get_backend
from stepline.core.status import TaskStatus
from stepline.pipeline.controller import PipelineController
from stepline.pipeline.dag import NodeStatus
from tests.pipeline import exec_steps as steps

PROJECT = "exec-tests"
DEADLINE = 60.0  # seconds any awaited event may take before a test gives up


# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture(params=["process", "in_process"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(pipe: PipelineController, mode: str, **kwargs: Any) -> bool:
    return pipe.start_locally(
        run_pipeline_steps_locally=True, in_process=mode == "in_process", **kwargs
    )


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def status_of(task_id: Any) -> str:
    assert isinstance(task_id, str), f"not a task id: {task_id!r}"
    return Task.get_task(task_id).status


def reason_of(task_id: Any) -> str:
    assert isinstance(task_id, str), f"not a task id: {task_id!r}"
    return Task.get_task(task_id).data.status_reason


def log_of(task_id: Any) -> str:
    assert isinstance(task_id, str), f"not a task id: {task_id!r}"
    return "\n".join(Task.get_task(task_id).get_reported_console_output(number_of_reports=100))


def statuses(pipe: PipelineController) -> dict[str, str]:
    return {name: node.status.value for name, node in pipe.get_pipeline_dag().items()}


def params_of(task_id: Any) -> dict[str, Any]:
    assert isinstance(task_id, str), f"not a task id: {task_id!r}"
    return Task.get_task(task_id).get_parameters(cast=True)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


def new_pipe(name: str, **kwargs: Any) -> PipelineController:
    return PipelineController(name=name, project=PROJECT, version="1.0.0", **kwargs)


@pytest.fixture
def gate(home: Path, tmp_path: Path) -> Iterator[Path]:
    """A folder for marker files. Held steps wait for ``release``, written at teardown; then
    the step threads an in-process run abandoned are joined (before the store goes away)."""
    folder = tmp_path / "gate"
    folder.mkdir()
    yield folder
    (folder / "release").touch()
    for thread in threading.enumerate():
        if thread.name.startswith("stepline-step") and thread is not threading.current_thread():
            thread.join(timeout=DEADLINE)


# -- a plain run ---------------------------------------------------------------------------------
def test_three_steps_pass_typed_values_and_record_the_run(home: Path, mode: str) -> None:
    pipe = new_pipe("three")
    pipe.add_function_step("first", steps.make_number, function_return=["number"])
    pipe.add_function_step(
        "second",
        steps.add_one,
        function_kwargs={"x": "${first.number}"},
        function_return=["number"],
    )
    pipe.add_function_step(
        "third",
        steps.type_and_value,
        function_kwargs={"x": "${second.number}"},
        function_return=["text"],
    )
    assert run(pipe, mode) is True
    assert pipe.is_successful()
    assert statuses(pipe) == {"first": "completed", "second": "completed", "third": "completed"}

    dag = pipe.get_pipeline_dag()
    second, third = params_of(dag["second"].executed), params_of(dag["third"].executed)
    assert second["kwargs/x"] == 41 and type(second["kwargs/x"]) is int
    assert second["return/number"] == 42 and type(second["return/number"]) is int
    assert third["kwargs/x"] == 42 and type(third["kwargs/x"]) is int
    assert third["return/text"] == "int:42"

    for name, node in dag.items():
        assert isinstance(node.executed, str), name
        step = Task.get_task(node.executed)
        assert step.status == "completed", name
        assert step.parent == pipe.id, name
        assert node.job_started is not None and node.job_ended is not None, name
        assert node.job_started <= node.job_ended, name
        assert node.retries == 0, name
    # each step starts after its parent ended
    assert dag["first"].job_ended <= dag["second"].job_started  # type: ignore[operator]
    assert dag["second"].job_ended <= dag["third"].job_started  # type: ignore[operator]

    controller = Task.get_task(pipe.id)
    assert controller.status == "completed"
    assert controller.task_type == "controller"
    runtime = controller.get_runtime_properties()
    assert runtime["progress"] == "100"
    for name, node in dag.items():
        state = json.loads(runtime[f"_node/{name}"])
        assert state["status"] == "completed", name
        assert state["task"] == node.executed, name
    assert pipe.elapsed() > 0
    assert pipe.wait() is True
    assert not pipe.is_running()


def test_independent_steps_run_in_parallel(home: Path, tmp_path: Path, mode: str) -> None:
    """Each of the two steps waits for the other's marker: both succeed only if concurrent."""
    folder = str(tmp_path)
    pipe = new_pipe("parallel")
    pipe.add_function_step(
        "left",
        steps.rendezvous,
        function_kwargs={"folder": folder, "me": "left", "other": "right"},
        function_return=["who"],
    )
    pipe.add_function_step(
        "right",
        steps.rendezvous,
        function_kwargs={"folder": folder, "me": "right", "other": "left"},
        function_return=["who"],
    )
    pipe.add_function_step(
        "join",
        steps.echo,
        function_kwargs={"value": "${left.who}"},
        function_return=["value"],
        parents=["right"],
    )
    assert run(pipe, mode, max_workers=2) is True, statuses(pipe)
    dag = pipe.get_pipeline_dag()
    assert statuses(pipe) == {"left": "completed", "right": "completed", "join": "completed"}
    left, right = dag["left"], dag["right"]
    assert left.job_started < right.job_ended  # type: ignore[operator]
    assert right.job_started < left.job_ended  # type: ignore[operator]
    assert params_of(dag["join"].executed)["return/value"] == "left"


# -- failures ----------------------------------------------------------------------------------
def test_failing_step_fails_the_run_and_skips_its_children(home: Path, mode: str) -> None:
    pipe = new_pipe("failing")
    pipe.add_function_step("bad", steps.boom, function_kwargs={"message": "kaboom-1234"})
    pipe.add_function_step("child", steps.echo, function_kwargs={"value": 1}, parents=["bad"])
    pipe.add_function_step(
        "grandchild", steps.echo, function_kwargs={"value": 2}, parents=["child"]
    )
    pipe.add_function_step("other", steps.echo, function_kwargs={"value": 3})
    assert run(pipe, mode) is False
    assert not pipe.is_successful()
    dag = pipe.get_pipeline_dag()
    assert statuses(pipe) == {
        "bad": "failed",
        "child": "skipped",
        "grandchild": "skipped",
        "other": "completed",
    }
    bad = dag["bad"]
    assert status_of(bad.executed) == "failed"
    assert "ValueError: kaboom-1234" in reason_of(bad.executed)
    assert "kaboom-1234" in bad.status_message
    assert "kaboom-1234" in log_of(bad.executed)
    assert dag["child"].executed is False
    assert dag["grandchild"].executed is False
    assert status_of(dag["other"].executed) == "completed"

    controller = Task.get_task(pipe.id)
    assert controller.status == "failed"
    assert "bad" in controller.data.status_reason
    runtime = controller.get_runtime_properties()
    assert runtime["progress"] == "100"
    assert json.loads(runtime["_node/bad"])["status"] == "failed"
    assert json.loads(runtime["_node/child"])["status"] == "skipped"


def test_abort_on_failure_kills_running_steps_and_skips_pending(gate: Path, mode: str) -> None:
    folder = str(gate)
    pipe = new_pipe("abort", abort_on_failure=True)
    pipe.add_function_step("slow", steps.hold, function_kwargs={"folder": folder, "name": "slow"})
    pipe.add_function_step(
        "bad",
        steps.fail_after_started,
        function_kwargs={"folder": folder, "other": "slow", "message": "fatal-5678"},
    )
    pipe.add_function_step("later", steps.echo, function_kwargs={"value": 1})
    pipe.add_function_step("after_slow", steps.echo, function_kwargs={"value": 2}, parents=["slow"])
    started = time.monotonic()
    assert run(pipe, mode, max_workers=2) is False
    assert time.monotonic() - started < steps.HOLD / 2, "the slow step was not killed"
    dag = pipe.get_pipeline_dag()
    assert statuses(pipe) == {
        "slow": "aborted",
        "bad": "failed",
        "later": "skipped",
        "after_slow": "skipped",
    }
    assert status_of(dag["slow"].executed) == "stopped"
    assert status_of(dag["bad"].executed) == "failed"
    assert "fatal-5678" in reason_of(dag["bad"].executed)
    assert dag["later"].executed is False
    assert Task.get_task(pipe.id).status == "failed"
    assert not pipe.is_successful()
    if mode == "process":
        pid = int((gate / "started-slow").read_text())
        wait_until(lambda: not alive(pid), f"the slow step's process {pid} to end")


def test_continue_on_fail_completes_the_run_but_skips_children(home: Path, mode: str) -> None:
    pipe = new_pipe("continue")
    pipe.add_function_step(
        "bad", steps.boom, function_kwargs={"message": "tolerated"}, continue_on_fail=True
    )
    pipe.add_function_step("child", steps.echo, function_kwargs={"value": 1}, parents=["bad"])
    pipe.add_function_step("other", steps.echo, function_kwargs={"value": 2})
    run(pipe, mode)
    assert statuses(pipe) == {"bad": "failed", "child": "skipped", "other": "completed"}
    assert status_of(pipe.get_pipeline_dag()["bad"].executed) == "failed"
    assert Task.get_task(pipe.id).status == "completed"


def test_continue_behaviour_can_run_children_of_a_failed_step(home: Path, mode: str) -> None:
    pipe = new_pipe("continue-children")
    pipe.add_function_step(
        "bad",
        steps.boom,
        function_kwargs={"message": "tolerated"},
        continue_behaviour={"continue_on_fail": True, "skip_children_on_fail": False},
    )
    pipe.add_function_step(
        "child", steps.echo, function_kwargs={"value": 7}, function_return=["v"], parents=["bad"]
    )
    run(pipe, mode)
    dag = pipe.get_pipeline_dag()
    assert statuses(pipe) == {"bad": "failed", "child": "completed"}
    assert params_of(dag["child"].executed)["return/v"] == 7
    assert Task.get_task(pipe.id).status == "completed"


# -- retries -----------------------------------------------------------------------------------
def test_retry_on_failure_reruns_a_flaky_step(home: Path, tmp_path: Path, mode: str) -> None:
    pipe = new_pipe("retry")
    pipe.add_function_step(
        "flaky",
        steps.fail_once,
        function_kwargs={"folder": str(tmp_path)},
        function_return=["result"],
        retry_on_failure=2,
    )
    pipe.add_function_step(
        "child", steps.echo, function_kwargs={"value": "${flaky.result}"}, function_return=["v"]
    )
    assert run(pipe, mode) is True
    dag = pipe.get_pipeline_dag()
    flaky = dag["flaky"]
    assert statuses(pipe) == {"flaky": "completed", "child": "completed"}
    assert flaky.retries == 1
    assert status_of(flaky.executed) == "completed"
    assert params_of(flaky.executed)["return/result"] == "second attempt"
    assert params_of(dag["child"].executed)["return/v"] == "second attempt"
    runtime = Task.get_task(pipe.id).get_runtime_properties()
    assert json.loads(runtime["_node/flaky"])["retries"] == 1
    assert Task.get_task(pipe.id).status == "completed"


def test_retry_on_failure_callable_gets_increasing_retries(home: Path, mode: str) -> None:
    calls: list[tuple[Any, str, int]] = []

    def rule(pipeline: Any, node: Any, retries: int) -> bool:
        calls.append((pipeline, node.name, retries))
        return retries < 2

    pipe = new_pipe("retry-callable")
    pipe.add_function_step(
        "bad", steps.boom, function_kwargs={"message": "always"}, retry_on_failure=rule
    )
    assert run(pipe, mode) is False
    node = pipe.get_pipeline_dag()["bad"]
    assert [(n, r) for _, n, r in calls] == [("bad", 0), ("bad", 1), ("bad", 2)]
    assert all(p is pipe for p, _, _ in calls)
    assert node.status == NodeStatus.failed
    assert node.retries == 2
    assert status_of(node.executed) == "failed"
    assert "always" in reason_of(node.executed)


def test_pipeline_level_retry_on_failure(home: Path, tmp_path: Path, mode: str) -> None:
    pipe = new_pipe("retry-pipeline", retry_on_failure=1)
    pipe.add_function_step("flaky", steps.fail_once, function_kwargs={"folder": str(tmp_path)})
    pipe.add_function_step("bad", steps.boom, function_kwargs={"message": "always"})
    assert run(pipe, mode) is False
    dag = pipe.get_pipeline_dag()
    assert statuses(pipe) == {"flaky": "completed", "bad": "failed"}
    assert dag["flaky"].retries == 1
    assert dag["bad"].retries == 1


# -- callbacks -----------------------------------------------------------------------------------
def test_pre_execute_callback_false_skips_the_node_and_its_children(home: Path, mode: str) -> None:
    seen: list[str] = []

    def veto(pipeline: Any, node: Any, parameters: dict[str, Any]) -> bool:
        seen.append(node.name)
        return False

    pipe = new_pipe("veto")
    pipe.add_function_step("a", steps.echo, function_kwargs={"value": 1})
    pipe.add_function_step("b", steps.echo, function_kwargs={"value": 2}, pre_execute_callback=veto)
    pipe.add_function_step("c", steps.echo, function_kwargs={"value": 3}, parents=["b"])
    pipe.add_function_step("d", steps.echo, function_kwargs={"value": 4}, parents=["a"])
    run(pipe, mode)
    dag = pipe.get_pipeline_dag()
    assert seen == ["b"]
    assert statuses(pipe) == {"a": "completed", "b": "skipped", "c": "skipped", "d": "completed"}
    assert dag["b"].executed is False
    assert dag["c"].executed is False
    assert Task.get_task(pipe.id).status == "completed"
    # the vetoed step leaves no task behind
    step_names = {t.name for t in Task.get_tasks(project_name=PROJECT)}
    assert "b" not in step_names and "a" in step_names


def test_pre_execute_callback_can_change_the_parameters(home: Path, mode: str) -> None:
    received: list[dict[str, Any]] = []

    def change(pipeline: Any, node: Any, parameters: dict[str, Any]) -> bool:
        received.append(dict(parameters))
        parameters["kwargs/value"] = 100
        return True

    pipe = new_pipe("mutate")
    pipe.add_function_step(
        "step",
        steps.echo,
        function_kwargs={"value": 1},
        function_return=["out"],
        pre_execute_callback=change,
    )
    assert run(pipe, mode) is True
    assert received == [{"kwargs/value": 1}]
    task_id = pipe.get_pipeline_dag()["step"].executed
    assert params_of(task_id)["kwargs/value"] == 100
    assert params_of(task_id)["return/out"] == 100


def test_post_execute_and_status_change_callbacks(home: Path, mode: str) -> None:
    posted: list[tuple[str, str, Any, Any]] = []
    changes: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def post(pipeline: Any, node: Any) -> None:
        assert pipeline is pipe
        job_task = node.job.task.id if node.job is not None else None
        with lock:
            posted.append((node.name, str(node.status), node.executed, job_task))

    def changed(pipeline: Any, node: Any, previous: Any) -> None:
        assert pipeline is pipe
        with lock:
            changes.append((node.name, str(previous), str(node.status)))

    callbacks = {"post_execute_callback": post, "status_change_callback": changed}
    pipe = new_pipe("observed")
    pipe.add_function_step("ok", steps.echo, function_kwargs={"value": 1}, **callbacks)
    pipe.add_function_step("bad", steps.boom, function_kwargs={"message": "no"}, **callbacks)
    pipe.add_function_step(
        "after_bad", steps.echo, function_kwargs={"value": 2}, parents=["bad"], **callbacks
    )
    run(pipe, mode)
    dag = pipe.get_pipeline_dag()

    def of(name: str) -> list[tuple[str, str]]:
        return [(prev, new) for n, prev, new in changes if n == name]

    assert of("ok") == [("pending", "running"), ("running", "completed")]
    assert of("bad") == [("pending", "running"), ("running", "failed")]
    assert of("after_bad") == [("pending", "skipped")]
    assert sorted(posted) == sorted(
        [
            ("ok", "completed", dag["ok"].executed, dag["ok"].executed),
            ("bad", "failed", dag["bad"].executed, dag["bad"].executed),
        ]
    )


def test_start_locally_step_task_callbacks(home: Path, mode: str) -> None:
    created: list[tuple[str, dict[str, Any]]] = []
    completed: list[tuple[str, str]] = []

    def on_created(pipeline: Any, node: Any, parameters: dict[str, Any]) -> bool:
        assert pipeline is pipe
        created.append((node.name, dict(parameters)))
        return node.name != "vetoed"

    def on_completed(pipeline: Any, node: Any) -> None:
        assert pipeline is pipe
        completed.append((node.name, str(node.status)))

    pipe = new_pipe("task-callbacks")
    pipe.add_function_step("a", steps.echo, function_kwargs={"value": 1}, function_return=["v"])
    pipe.add_function_step("b", steps.echo, function_kwargs={"value": "${a.v}"})
    pipe.add_function_step("vetoed", steps.echo, function_kwargs={"value": 3})
    run(
        pipe,
        mode,
        step_task_created_callback=on_created,
        step_task_completed_callback=on_completed,
    )
    assert sorted(created, key=lambda c: c[0]) == [
        ("a", {"kwargs/value": 1}),
        ("b", {"kwargs/value": 1}),
        ("vetoed", {"kwargs/value": 3}),
    ]
    assert sorted(completed) == [("a", "completed"), ("b", "completed")]
    assert statuses(pipe) == {"a": "completed", "b": "completed", "vetoed": "skipped"}


# -- time limits -------------------------------------------------------------------------------
def test_step_time_limit_kills_the_step_and_its_child_process(home: Path, tmp_path: Path) -> None:
    folder = str(tmp_path)
    pipe = new_pipe("step-limit")
    pipe.add_function_step(
        "sleeper", steps.sleep_with_child, function_kwargs={"folder": folder}, time_limit=4
    )
    pipe.add_function_step("child", steps.echo, function_kwargs={"value": 1}, parents=["sleeper"])
    pipe.add_function_step("other", steps.echo, function_kwargs={"value": 2})
    assert run(pipe, "process") is False
    dag = pipe.get_pipeline_dag()
    assert statuses(pipe) == {"sleeper": "failed", "child": "skipped", "other": "completed"}
    sleeper = dag["sleeper"]
    assert status_of(sleeper.executed) == "failed"
    assert "time limit" in reason_of(sleeper.executed)
    assert "time limit" in sleeper.status_message
    assert sleeper.job_ended - sleeper.job_started < 30  # type: ignore[operator]
    assert Task.get_task(pipe.id).status == "failed"

    pid_file = tmp_path / "child.pid"
    assert pid_file.exists(), "the step was killed before it started its child (limit too short?)"
    child_pid = int(pid_file.read_text())
    step_pid = int((tmp_path / "started-sleeper").read_text())
    wait_until(lambda: not alive(step_pid), f"the step's process {step_pid} to end", 15)
    wait_until(lambda: not alive(child_pid), f"the step's child process {child_pid} to end", 15)


def test_pipeline_time_limit_stops_the_run_and_fails_it(gate: Path, mode: str) -> None:
    pipe = new_pipe("run-limit")
    pipe.set_pipeline_execution_time_limit(1.5 / 60)
    pipe.add_function_step("slow", steps.hold, function_kwargs={"folder": str(gate), "name": "s"})
    pipe.add_function_step("after", steps.echo, function_kwargs={"value": 1}, parents=["slow"])
    assert run(pipe, mode) is False
    assert pipe.elapsed() < 1.0, "the run outlived its time limit by far"
    dag = pipe.get_pipeline_dag()
    assert dag["slow"].status in (NodeStatus.aborted, NodeStatus.failed)
    assert status_of(dag["slow"].executed) in ("stopped", "failed")
    assert dag["after"].status == NodeStatus.skipped
    controller = Task.get_task(pipe.id)
    assert controller.status == "failed"
    assert "time limit" in controller.data.status_reason
    assert not pipe.is_successful()


# -- stopping ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "marks, expected",
    [({}, None), ({"mark_aborted": True}, "stopped"), ({"mark_failed": True}, "failed")],
    ids=["plain", "mark_aborted", "mark_failed"],
)
def test_stop_while_a_step_runs(
    gate: Path, mode: str, marks: dict[str, bool], expected: str | None
) -> None:
    pipe = new_pipe("stopped")
    pipe.add_function_step("a", steps.hold, function_kwargs={"folder": str(gate), "name": "a"})
    pipe.add_function_step("b", steps.echo, function_kwargs={"value": 1}, parents=["a"])
    pipe.add_function_step("c", steps.echo, function_kwargs={"value": 2}, parents=["b"])
    pipe.add_function_step("d", steps.echo, function_kwargs={"value": 3})
    assert pipe.elapsed() == -1
    assert not pipe.is_running()
    assert run(pipe, mode, wait=False, max_workers=1) is True
    try:
        wait_until((gate / "started-a").exists, "step a to start")
        assert pipe.is_running()
        assert pipe.wait(timeout=0.1 / 60) is False
        assert [n.name for n in pipe.get_running_nodes()] == ["a"]
        assert pipe.elapsed() > 0
        assert not pipe.is_successful()
        pipe.stop(**marks)
    finally:
        if pipe.is_running():
            pipe.stop()
    assert not pipe.is_running()
    assert pipe.wait() is True
    first = pipe.elapsed()
    assert 0 < first < 1.0
    assert pipe.elapsed() == first  # the clock stopped with the run
    dag = pipe.get_pipeline_dag()
    assert statuses(pipe) == {"a": "aborted", "b": "skipped", "c": "skipped", "d": "skipped"}
    assert status_of(dag["a"].executed) == "stopped"
    controller = Task.get_task(pipe.id).status
    assert controller != "completed"
    if expected is not None:
        assert controller == expected
    assert not pipe.is_successful()


def test_steps_for_agents_wait_in_their_queue_until_stopped(home: Path) -> None:
    pipe = new_pipe("agents")
    pipe.add_function_step("a", steps.echo, function_kwargs={"value": 1})
    assert pipe.start_locally(wait=False) is True  # steps go to queues: nobody serves them
    backend = get_backend()
    # the scheduler marks the node queued once its task is on the queue (not at once)
    deadline = time.monotonic() + 30
    while pipe.get_pipeline_dag()["a"].status != "queued" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pipe.get_pipeline_dag()["a"].status == "queued"
    (queued,) = backend.queue_tasks("default")
    pipe.stop()
    assert backend.get_task(queued).status == TaskStatus.stopped
    assert backend.queue_tasks("default") == []
    assert not pipe.is_successful()


# -- how a step's process ends -----------------------------------------------------------------
def test_sys_exit_with_a_nonzero_code_fails_the_step(home: Path, mode: str) -> None:
    pipe = new_pipe("exits")
    pipe.add_function_step("exit3", steps.exit_with, function_kwargs={"code": 3})
    pipe.add_function_step("exit0", steps.exit_with, function_kwargs={"code": 0})
    assert run(pipe, mode) is False
    dag = pipe.get_pipeline_dag()
    assert statuses(pipe) == {"exit3": "failed", "exit0": "completed"}
    assert status_of(dag["exit3"].executed) == "failed"
    assert "3" in reason_of(dag["exit3"].executed)
    assert status_of(dag["exit0"].executed) == "completed"
    assert Task.get_task(pipe.id).status == "failed"


def test_a_step_killed_by_a_signal_fails_naming_the_signal(home: Path) -> None:
    pipe = new_pipe("sigkill")
    pipe.add_function_step("victim", steps.kill_myself)
    pipe.add_function_step("child", steps.echo, function_kwargs={"value": 1}, parents=["victim"])
    assert run(pipe, "process") is False
    victim = pipe.get_pipeline_dag()["victim"]
    assert statuses(pipe) == {"victim": "failed", "child": "skipped"}
    assert status_of(victim.executed) == "failed"
    assert "SIGKILL" in reason_of(victim.executed)
    assert "SIGKILL" in victim.status_message
    assert Task.get_task(pipe.id).status == "failed"


def test_console_output_of_a_step_lands_in_its_log(home: Path, mode: str) -> None:
    pipe = new_pipe("console")
    pipe.add_function_step("talker", steps.shout, function_kwargs={"text": f"hello-{mode}"})
    assert run(pipe, mode) is True
    task_id = pipe.get_pipeline_dag()["talker"].executed
    lines = Task.get_task(task_id).get_reported_console_output(number_of_reports=100)
    assert f"out:hello-{mode}" in lines
    assert f"err:hello-{mode}" in lines
