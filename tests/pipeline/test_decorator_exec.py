"""Execution semantics of PipelineDecorator, end to end against a real store.

Every test runs in both modes (the ``mode`` fixture): ``debug`` (steps in threads of this
process, calling the component's own function) and ``local`` (each step's stored code in a child
process forked from the fork server). The components and pipeline functions live in
``deco_exec_steps``; steps that must overlap or wait use marker files, never sleeps.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stepline import Task
from stepline.automation.controller import PipelineDecorator
from stepline.backend import get_backend
from stepline.core.records import TaskFilter, TaskRecord
from stepline.pipeline.decorator import PipelineFailedError, StepFailedError
from tests.pipeline import deco_exec_steps as steps

PROJECT = steps.PROJECT
DEADLINE = 60.0  # seconds any awaited event may take before a test gives up


# -- fixtures ------------------------------------------------------------------------------------
# -- helpers -------------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def controller(name: str) -> Task:
    """The task of the one run of pipeline ``name``, found in the store."""
    found = Task.get_tasks(
        project_name=PROJECT, task_filter={"type": ["controller"], "order_by": ["-created"]}
    )
    runs = [
        t for t in found if t.get_runtime_properties().get("_pipeline_name") == f"{PROJECT}/{name}"
    ]
    assert len(runs) == 1, [t.name for t in found]
    assert runs[0].task_type == "controller"
    return runs[0]


def step_records(pipeline_id: str) -> list[TaskRecord]:
    """Every task recorded as a step of the run (nested steps and inner pipelines included)."""
    return get_backend().find_tasks(TaskFilter(runtime={"_pipeline_id": pipeline_id}))


def step_tasks(pipeline_id: str) -> dict[str, TaskRecord]:
    """The run's step tasks by step name (each name once)."""
    backend = get_backend()
    out: dict[str, TaskRecord] = {}
    for rec in step_records(pipeline_id):
        name = backend.get_runtime(rec.id)["_pipeline_step"]
        assert name not in out, f"two tasks of step {name!r}"
        out[name] = rec
    return out


def node_states(task: Task) -> dict[str, dict[str, Any]]:
    """The ``_node/NAME`` runtime entries of a run's task."""
    return {
        key.split("/", 1)[1]: json.loads(value)
        for key, value in task.get_runtime_properties().items()
        if key.startswith("_node/")
    }


def stored_dag(task: Task) -> dict[str, Any]:
    """The nodes of the DAG stored on a run's task (configuration object "Pipeline")."""
    text = task.get_configuration_object("Pipeline")
    assert text is not None
    return dict(json.loads(text)["nodes"])


def statuses(pipe: PipelineDecorator) -> dict[str, str]:
    return {name: node.status.value for name, node in pipe.get_pipeline_dag().items()}


def kwargs_of(task_id: Any) -> dict[str, Any]:
    assert isinstance(task_id, str), f"not a task id: {task_id!r}"
    params = Task.get_task(task_id).get_parameters(cast=True)
    return {k.split("/", 1)[1]: v for k, v in params.items() if k.startswith("kwargs/")}


def stamp(path: Path) -> tuple[float, int]:
    when, pid = path.read_text().split()
    return float(when), int(pid)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:  # gone, or going while /proc is read
        return False
    return state not in ("Z", "X")


# -- 1. parallelism ------------------------------------------------------------------------------
def test_independent_steps_run_at_the_same_time(mode: str, gate: Path) -> None:
    """Each step waits for the other's start marker: both succeed only if they overlap."""
    seen: dict[str, Any] = {}
    assert steps.parallel_logic(str(gate), seen) is None
    assert seen["who"] == ["left", "right"]
    (l_start, l_pid), (l_end, _) = stamp(gate / "start-left"), stamp(gate / "end-left")
    (r_start, r_pid), (r_end, _) = stamp(gate / "start-right"), stamp(gate / "end-right")
    assert l_start < r_end and r_start < l_end, "the two steps did not overlap"
    if mode == "debug":
        assert l_pid == r_pid == os.getpid()
    else:
        assert len({l_pid, r_pid, os.getpid()}) == 3

    pipe = seen["pipeline"]
    assert statuses(pipe) == {"rendezvous": "completed", "rendezvous_1": "completed"}
    dag = pipe.get_pipeline_dag()
    assert dag["rendezvous"].parents == [] and dag["rendezvous_1"].parents == []
    run = controller("parallel")
    assert run.id == pipe.id and run.status == "completed"
    tasks = step_tasks(run.id)
    assert set(tasks) == {"rendezvous", "rendezvous_1"}
    for name, rec in tasks.items():
        assert rec.status == "completed" and rec.parent == run.id, name
        assert rec.id == dag[name].executed
    assert kwargs_of(tasks["rendezvous_1"].id) == {
        "folder": str(gate),
        "me": "right",
        "other": "left",
    }


# -- 2. lazy results -----------------------------------------------------------------------------
def test_component_call_returns_while_its_step_still_runs(mode: str, gate: Path) -> None:
    """The step waits for a marker that the logic writes only after the call returned."""
    seen: dict[str, Any] = {}
    assert steps.lazy_logic(str(gate), seen) == 8
    assert seen["proxy_type"].__name__ == "LazyResult"
    assert seen["step_ended_at_return"] is False
    assert seen["step_running_at_return"] is True
    assert (gate / "ended-go").exists()
    run = controller("lazy")
    assert run.status == "completed"
    assert run.get_parameters(cast=True)["return/result"] == 8


def test_proxies_behave_like_their_values(mode: str) -> None:
    seen: dict[str, Any] = {}
    assert steps.operators_logic(seen) == 20  # add(9, 11)
    assert seen["types"] == ["LazyResult"] * 4
    assert seen["ops"] == {
        "add": 8,
        "radd": 8,
        "mul": 14,
        "rsub": 3,
        "truediv": 3.5,
        "floordiv": 3,
        "mod": 3,
        "pow": 49,
        "neg": -7,
        "abs": 7,
        "eq": True,
        "ne": False,
        "lt": True,
        "ge": False,
        "bool": True,
        "bool_zero": False,
        "not_zero": True,
        "str": "7",
        "repr": "'hello'",
        "format": "<007>",
        "int": 7,
        "float": 7.0,
        "index": 80,
        "isinstance_int": True,
        "isinstance_str": False,
        "iter": [0, 1, 2, 3],
        "getitem": 2,
        "slice": [1, 2],
        "len": 4,
        "contains": True,
        "not_contains": False,
        "key": "v",
        "method": "HELLO",
        "isinstance_list": True,
        "isinstance_dict": True,
        "low": 9,
        "high": 11,
    }
    for key in ("float", "truediv"):
        assert type(seen["ops"][key]) is float, key
    for key in ("int", "add", "floordiv", "len", "index"):
        assert type(seen["ops"][key]) is int, key

    run = controller("operators")
    tasks = step_tasks(run.id)
    assert set(tasks) == {"make_number", "make_number_1", "make_list", "make_dict", "make_text",
                          "split", "add"}  # fmt: skip
    # the unpacked proxies went to "add" by reference: both from the one "split" step
    assert kwargs_of(tasks["add"].id) == {"a": 9, "b": 11}
    # its data parent first, then the steps the logic waited for before the call
    assert node_states(run)["add"]["parents"][0] == "split"
    split_params = Task.get_task(tasks["split"].id).get_parameters(cast=True)
    assert (split_params["return/low"], split_params["return/high"]) == (9, 11)


# -- 3. failures ---------------------------------------------------------------------------------
def test_using_a_failed_steps_value_raises_step_failed_error(mode: str) -> None:
    seen: dict[str, Any] = {}
    with pytest.raises(StepFailedError) as info:
        steps.failing_value_used_logic(seen)
    assert seen == {"call_returned": True}
    assert isinstance(info.value, ValueError)
    run = controller("step-fails")
    bad = step_tasks(run.id)["boom"]
    message = str(info.value)
    assert 'Pipeline step "boom"' in message
    assert f"Task ID={bad.id}" in message
    assert "kaboom-1234" in message
    assert bad.status == "failed"
    assert "ValueError: kaboom-1234" in bad.status_reason
    assert run.status == "failed"
    assert "StepFailedError" in run.data.status_reason
    assert "kaboom-1234" in run.data.status_reason
    assert node_states(run)["boom"]["status"] == "failed"


def test_failed_step_skips_its_children_and_fails_the_run(mode: str) -> None:
    """The logic catches the StepFailedError and goes on: the failed step's child is skipped
    (its value is None), an independent step still runs, and the run ends failed."""
    seen: dict[str, Any] = {}
    with pytest.raises(PipelineFailedError) as info:
        steps.failing_value_caught_logic(seen)
    assert isinstance(seen["error"], StepFailedError)
    assert "value" not in seen
    assert seen["child_is_none"] is True
    assert seen["child_str"] == "None"
    assert seen["other"] == 5
    run = controller("step-fails-caught")
    assert run.id in str(info.value) and "boom" in str(info.value)
    assert run.status == "failed"
    assert "kaboom-4321" in run.data.status_reason
    states = node_states(run)
    assert {n: s["status"] for n, s in states.items()} == {
        "boom": "failed",
        "increment": "skipped",
        "make_number": "completed",
    }
    assert states["increment"]["parents"] == ["boom"]
    assert states["increment"]["task"] is None
    assert set(step_tasks(run.id)) == {"boom", "make_number"}


def test_continue_on_fail_gives_none_and_the_run_completes(mode: str) -> None:
    seen: dict[str, Any] = {}
    assert steps.tolerated_logic(seen) == [None, None, 3]
    assert seen == {"bad_is_none": True, "bad_str": "None"}
    run = controller("tolerated")
    assert run.status == "completed"
    tasks = step_tasks(run.id)
    assert set(tasks) == {"tolerated_boom", "make_number"}
    assert tasks["tolerated_boom"].status == "failed"
    assert "tolerated-99" in tasks["tolerated_boom"].status_reason
    assert tasks["make_number"].status == "completed"
    # its child is skipped all the same (skip_children_on_fail defaults to True)
    states = node_states(run)
    assert states["increment"]["status"] == "skipped"
    assert states["increment"]["parents"] == ["tolerated_boom"]


def test_abort_on_failure_stops_running_steps_and_skips_pending(mode: str, gate: Path) -> None:
    seen: dict[str, Any] = {}
    started = time.monotonic()
    with pytest.raises(PipelineFailedError):
        steps.abort_logic(str(gate), seen)
    assert time.monotonic() - started < steps.HOLD / 2, "the held step was not stopped"
    assert seen["logic_returned"] is True
    pipe = seen["pipeline"]
    assert statuses(pipe) == {
        "hold": "aborted",
        "fail_after_started": "failed",
        "increment": "skipped",
    }
    run = controller("abort")
    assert run.status == "failed"
    assert "fatal-5678" in run.data.status_reason
    tasks = step_tasks(run.id)
    assert set(tasks) == {"hold", "fail_after_started"}
    assert tasks["hold"].status == "stopped"
    assert tasks["fail_after_started"].status == "failed"
    if mode == "local":
        pid = int((gate / "started-slow").read_text())
        wait_until(lambda: not alive(pid), f"the held step's process {pid} to end")


def test_logic_raising_fails_the_run_and_reraises(mode: str) -> None:
    seen: dict[str, Any] = {}
    with pytest.raises(KeyError, match="logic-says-no"):
        steps.raising_logic(seen)
    assert seen == {"x": 2}
    run = controller("logic-raises")
    assert run.status == "failed"
    assert "KeyError" in run.data.status_reason
    assert "logic-says-no" in run.data.status_reason
    assert step_tasks(run.id)["increment"].status == "completed"


def test_failed_step_whose_value_is_never_used_fails_the_run(mode: str) -> None:
    seen: dict[str, Any] = {}
    with pytest.raises(PipelineFailedError) as info:
        steps.unused_failure_logic(seen)
    assert seen == {"logic_returned": True}
    run = controller("unused-failure")
    assert run.id in str(info.value)
    assert "nobody-looks-9" in str(info.value)
    assert run.status == "failed"
    assert step_tasks(run.id)["boom"].status == "failed"


def test_without_a_mode_the_pipeline_is_queued_for_an_agent(home: Path, capsys: Any) -> None:
    assert PipelineDecorator._mode_default is None
    with pytest.raises(SystemExit) as info:
        steps.tolerated_logic({})
    assert info.value.code == 0
    (queued,) = get_backend().queue_tasks("services")
    run = get_backend().get_task(queued)
    assert run.type == "controller" and run.status == "queued"
    assert run.script["kind"] == "decorator" and run.script["steps"] == "queue"
    out = capsys.readouterr().out
    assert queued in out and "stepline agent --queue services" in out


# -- 4. names, loops, nesting, pipelines in pipelines -------------------------------------------
def test_repeated_calls_loops_and_ifs_grow_the_dag(mode: str) -> None:
    seen: dict[str, Any] = {}
    # increments 1, 2, 3, 4; only the even ones are squared: 1 + 4 + 3 + 16
    assert steps.loop_logic(4, seen) == 24
    expected = {"increment", "increment_1", "increment_2", "increment_3", "square", "square_1",
                "total"}  # fmt: skip
    pipe = seen["pipeline"]
    assert set(pipe.get_pipeline_dag()) == expected
    assert set(statuses(pipe).values()) == {"completed"}
    run = controller("loops")
    assert set(stored_dag(run)) == expected
    states = node_states(run)
    assert set(states) == expected
    tasks = step_tasks(run.id)
    assert set(tasks) == expected
    for name in expected:
        assert states[name]["task"] == tasks[name].id == pipe.get_pipeline_dag()[name].executed
    assert [kwargs_of(tasks[f"increment{s}"].id)["x"] for s in ("", "_1", "_2", "_3")] == [
        0,
        1,
        2,
        3,
    ]
    # each square took the increment the `if` looked at
    assert kwargs_of(tasks["square"].id) == {"x": 2}
    assert kwargs_of(tasks["square_1"].id) == {"x": 4}
    assert "increment_1" in states["square"]["parents"]
    assert "increment_3" in states["square_1"]["parents"]
    assert set(states["total"]["parents"]) == {"increment", "square", "increment_2", "square_1"}
    assert kwargs_of(tasks["total"].id) == {"values": [1, 4, 3, 16]}

    # a run with other data takes other branches: a DAG of its own
    seen = {}
    assert steps.loop_logic(1, seen) == 1
    assert set(seen["pipeline"].get_pipeline_dag()) == {"increment", "total"}


def test_repeated_calls_get_numbered_names(mode: str) -> None:
    seen: dict[str, Any] = {}
    assert steps.names_logic(seen) == [1, 2, 101, 11]
    pipe = seen["pipeline"]
    run = controller("names")
    tasks = step_tasks(run.id)
    # a component named "increment_1" comes after that name was given to a repeated call
    inputs = {"increment": 0, "increment_1": 1, "increment_1_1": 1, "increment_2": 10}
    assert set(pipe.get_pipeline_dag()) == set(tasks) == set(inputs)
    for name, x in inputs.items():
        assert kwargs_of(tasks[name].id) == {"x": x}, name
    assert (
        Task.get_task(tasks["increment_1_1"].id).get_parameters(cast=True)["return/number"] == 101
    )


def test_component_called_in_a_component_is_a_nested_step(mode: str) -> None:
    seen: dict[str, Any] = {}
    # square_plus_one(3) = 10, square_plus_one(4) = 17, sum_of_squares(3, 4) = 25
    assert steps.nesting_logic(3, seen) == [10, 17, 25]
    callers = {"square_plus_one", "square_plus_one_1", "sum_of_squares"}
    nested = {
        "square_plus_one_square": ("square_plus_one", 3),
        "square_plus_one_1_square": ("square_plus_one_1", 4),
        "sum_of_squares_square": ("sum_of_squares", 3),
        "sum_of_squares_square_1": ("sum_of_squares", 4),
    }
    pipe = seen["pipeline"]
    run = controller("nesting")
    dag = pipe.get_pipeline_dag()
    assert set(dag) == callers | set(nested)
    tasks = step_tasks(run.id)
    assert set(tasks) == callers | set(nested)
    states, stored = node_states(run), stored_dag(run)
    backend = get_backend()
    for name, (caller, x) in nested.items():
        node = dag[name]
        assert node.parents == [caller], name
        assert node.status.value == "completed", name
        task = tasks[name]
        assert node.executed == task.id, name
        assert task.status == "completed", name
        assert task.parent == tasks[caller].id, name  # the caller's task, not the pipeline's
        runtime = backend.get_runtime(task.id)
        assert runtime["_nested_in"] == caller, name
        assert runtime["_pipeline_id"] == run.id, name
        assert kwargs_of(task.id) == {"x": x}, name
        assert states[name]["parents"] == [caller] and states[name]["task"] == task.id, name
        assert stored[name]["parents"] == [caller], name
    for caller in callers:
        assert tasks[caller].parent == run.id
        assert dag[caller].parents == []
    listed = json.loads(backend.get_runtime(tasks["sum_of_squares"].id)["_nested_steps"])
    assert listed == ["sum_of_squares_square", "sum_of_squares_square_1"]


def test_pipeline_called_in_a_pipeline_is_one_step(mode: str) -> None:
    seen: dict[str, Any] = {}
    # make_number(3) -> inner: increment -> 4 * 10 = 40 -> increment -> 41
    assert steps.outer_logic(3, seen) == 41
    pipe = seen["pipeline"]
    outer = controller("outer")
    inner = controller("inner")
    assert outer.id == pipe.id
    assert statuses(pipe) == {"make_number": "completed", "inner": "completed",
                              "increment": "completed"}  # fmt: skip
    dag = pipe.get_pipeline_dag()
    assert dag["inner"].parents == ["make_number"]
    assert dag["increment"].parents == ["inner"]
    assert dag["inner"].executed == inner.id
    assert stored_dag(outer)["inner"]["job_type"] == "pipeline"

    assert inner.status == "completed"
    assert inner.parent == outer.id
    inner_rt = inner.get_runtime_properties()
    assert inner_rt["_pipeline_id"] == outer.id
    assert inner_rt["_pipeline_step"] == "inner"
    assert inner.get_parameters(cast=True)["return/inner_result"] == 40
    inner_steps = step_tasks(inner.id)
    assert set(inner_steps) == {"increment"}
    assert kwargs_of(inner_steps["increment"].id) == {"x": 3}

    outer_steps = step_tasks(outer.id)
    assert set(outer_steps) == {"make_number", "inner", "increment"}
    assert outer_steps["inner"].id == inner.id
    # the inner pipeline's return value is the later outer step's input
    assert kwargs_of(outer_steps["increment"].id) == {"x": 40}
    assert outer.get_parameters(cast=True)["return/result"] == 41


# -- 5. a thousand steps -------------------------------------------------------------------------
def test_a_thousand_steps_in_a_loop(mode: str) -> None:
    seen: dict[str, Any] = {}
    n = 1000
    assert steps.thousand_logic(n, seen) == n * (n - 1) // 2
    run = controller("thousand")
    assert run.status == "completed"
    records = step_records(run.id)
    assert len(records) == n + 1
    assert {r.status for r in records} == {"completed"}
    assert len({r.name for r in records}) == n + 1
    assert len(seen["pipeline"].get_pipeline_dag()) == n + 1
    assert len(node_states(run)) == n + 1


# -- 6. retries and callbacks --------------------------------------------------------------------
def test_retry_on_failure_runs_a_flaky_step_again(mode: str, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    assert steps.retry_logic(str(tmp_path), seen) == "second attempt"
    assert (tmp_path / "failed-once").exists()
    node = seen["pipeline"].get_pipeline_dag()["fail_once"]
    assert node.status.value == "completed"
    assert node.retries == 1
    run = controller("retry")
    assert run.status == "completed"
    task = step_tasks(run.id)["fail_once"]
    assert task.id == node.executed and task.status == "completed"
    assert get_backend().get_runtime(task.id)["_retries"] == "1"
    assert node_states(run)["fail_once"]["retries"] == 1


def test_pre_execute_callback_false_skips_the_step(mode: str) -> None:
    seen: dict[str, Any] = {}
    assert steps.callback_logic(seen) == [None, None, 2]
    assert seen["skipped_is_none"] is True
    assert seen["child_is_none"] is True
    pipe = seen["pipeline"]
    assert statuses(pipe) == {"never_runs": "skipped", "increment": "skipped",
                              "make_number": "completed"}  # fmt: skip
    assert pipe.get_pipeline_dag()["never_runs"].executed is False
    run = controller("callbacks")
    assert run.status == "completed"
    assert set(step_tasks(run.id)) == {"make_number"}


# -- the DAG while the logic adds steps, retried callers, children of failed steps --------
def test_a_called_step_is_in_the_dag_at_once(home: Path) -> None:
    PipelineDecorator.debug_pipeline()
    try:
        seen: dict[str, Any] = {}
        steps.dag_at_once_logic(seen)
    finally:
        PipelineDecorator._mode_default = None
    names = ["make_number"] + [f"make_number_{i}" for i in range(1, 5)]
    assert seen["in_dag_later"] == sorted(names)
    assert all(seen["in_dag_at_return"]), (
        f"in get_pipeline_dag() right after each call: {seen['in_dag_at_return']}"
    )


def test_dag_writer_survives_steps_added_while_it_writes(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[tuple[str, BaseException | None]] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda a: errors.append((a.thread.name, a.exc_value))
    )
    steps.gated_rule.reset()
    PipelineDecorator.debug_pipeline()
    try:
        seen: dict[str, Any] = {}
        result = steps.dag_writer_logic(seen)
    finally:
        steps.gated_rule.release.set()
        PipelineDecorator._mode_default = None
    assert result == [1, 2]
    assert seen == {"writer_held": True, "added_while_held": True}
    assert steps.gated_rule.held_thread == "stepline-dag"
    run = controller("dag-writer")
    assert set(stored_dag(run)) == {"gated_number", "make_number"}
    assert errors == [], f"exceptions in threads: {errors}"


def test_retried_caller_gives_its_nested_steps_new_names(mode: str, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    assert steps.nested_retry_logic(str(tmp_path), seen) == 9
    run = controller("nested-retry")
    backend = get_backend()
    names = [backend.get_runtime(r.id)["_pipeline_step"] for r in step_records(run.id)]
    assert names.count("nests_then_fails_once") == 1
    assert len(names) == 3, names  # the caller and one nested step per attempt
    assert len(set(names)) == len(names), f"step names of the run's tasks: {sorted(names)}"
    dag = seen["pipeline"].get_pipeline_dag()
    caller = "nests_then_fails_once"
    expected = {caller, f"{caller}_square", f"{caller}_square_1"}
    assert set(dag) == expected, f"DAG: {sorted(dag)}"


def test_children_of_a_failed_step_can_run_with_none(mode: str) -> None:
    seen: dict[str, Any] = {}
    result = steps.run_children_logic(seen)
    assert result == [None, None]
    pipe = seen["pipeline"]
    assert statuses(pipe) == {"boom_but_run_children": "failed", "make_number": "completed"}
    run = controller("run-children")
    assert run.status == "completed"
    assert kwargs_of(step_tasks(run.id)["make_number"].id) == {"x": None}
