"""PipelineController end to end: data flow between steps, caching, and what a run records.

Every test builds a real pipeline in its own stepline home and runs it, with the function
steps in threads of this process (``in_process=True``) or in child processes (the default
local mode). Step functions live in ``flow_steps.py``; base tasks for script steps are made
by running ``scripts/*.py`` as real processes or with ``Task.create``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from stepline import PipelineController, Task
from stepline.backend import get_backend
from stepline.pipeline.cache import PART_NAMES, cache_key
from stepline.pipeline.dag import Node, NodeStatus
from tests.conftest import PYTHON, TIMEOUT, run_env
from tests.pipeline import flow_steps as steps

SCRIPTS = Path(__file__).parent / "scripts"
HAS_PANDAS = importlib.util.find_spec("pandas") is not None

MODES = pytest.mark.parametrize("in_process", [True, False], ids=["threads", "processes"])


# -- helpers -----------------------------------------------------------------------------------
def _states(pipe: PipelineController) -> dict[str, str]:
    return {
        name: f"{node.status.value}: {node.status_message}"
        for name, node in pipe.get_pipeline_dag().items()
    }


def _run(pipe: PipelineController, in_process: bool = True) -> dict[str, Node]:
    ok = pipe.start_locally(run_pipeline_steps_locally=True, in_process=in_process)
    assert ok, _states(pipe)
    return pipe.get_pipeline_dag()


def _task(node: Node) -> Task:
    assert isinstance(node.executed, str), (node.name, node.status, node.status_message)
    return Task.get_task(task_id=node.executed)


def _named(name: str, project: str = "flow") -> list[Task]:
    return Task.get_tasks(project_name=project, task_name=f"^{re.escape(name)}$")


def _param_types(task_id: str) -> dict[str, str]:
    return {p.key: p.type for p in get_backend().get_params(task_id)}


def _run_script(home: Path, name: str) -> Task:
    """Run scripts/NAME.py as a real process; the task it made (its base task)."""
    proc = subprocess.run(
        [PYTHON, str(SCRIPTS / f"{name}.py")],
        env=run_env(home),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    return Task.get_task(project_name="flow", task_name=name)


def _snapshot(task: Task) -> tuple[object, ...]:
    """What running a task would change."""
    rec = task.reload().data
    arts = tuple(sorted((a.name, a.url, a.hash) for a in get_backend().get_artifacts(task.id)))
    return (rec.status, rec.started, rec.completed, task.get_parameters(), arts)


# -- steps made from existing tasks ----------------------------------------------------------
def _override_pipeline(stage2_id: str) -> PipelineController:
    pipe = PipelineController(name="scripts", project="flow")
    pipe.add_parameter("arg", 42)
    pipe.add_step(
        "stage1",
        base_task_project="flow",
        base_task_name="stage1",
        parameter_override={"General/rows": 6},
    )
    pipe.add_step(
        "stage2",
        base_task_id=stage2_id,
        parameter_override={
            "General/x": "${stage1.artifacts.data.url}",
            "General/y": 0.25,
            "General/src": "${stage1.id}",
            "General/src_x": "${stage1.parameters.General/x}",
            "General/digest": "${stage1.artifacts.data.hash}",
            "General/size": "${stage1.artifacts.data.size}",
            "General/arg": "${pipeline.arg}",
            "General/note": "from ${stage1.id}",
        },
    )
    return pipe


def _check_override_run(pipe: PipelineController, bases: dict[str, Task]) -> None:
    dag = pipe.get_pipeline_dag()
    assert dag["stage1"].parents == []
    assert dag["stage2"].parents == ["stage1"]  # referenced, so a parent
    s1, s2 = _task(dag["stage1"]), _task(dag["stage2"])
    for step, base in (("stage1", bases["stage1"]), ("stage2", bases["stage2"])):
        clone = _task(dag[step])
        assert clone.id != base.id
        assert clone.parent == pipe.id
        assert clone.status == "completed"
        assert clone.name == step
        assert clone.script["entry_path"] == base.script["entry_path"]
    # the override reached stage1's code
    assert s1.get_parameters(cast=True)["General/rows"] == 6
    assert s1.artifacts["data"].get() == {"rows": 6, "values": list(range(6))}
    data = s1.artifacts["data"]
    got = s2.artifacts["received"].get()
    assert got["values"] == {
        "x": data.url,
        "y": 0.25,
        "src": s1.id,
        "src_x": "stage1-x",
        "digest": data.hash,
        "size": data.size,
        "arg": 42,
        "note": f"from {s1.id}",
    }
    assert got["types"] == {
        "x": "str", "y": "float", "src": "str", "src_x": "str", "digest": "str",
        "size": "int", "arg": "int", "note": "str",
    }  # fmt: skip
    assert data.hash and len(data.hash) == 64 and data.size > 0
    # a script step always runs as a process of its own, also with in_process=True
    assert got["pid"] != os.getpid()


@MODES
def test_script_steps_clone_base_tasks_made_by_running_scripts(home: Path, in_process: bool):
    bases = {name: _run_script(home, name) for name in ("stage1", "stage2")}
    assert bases["stage1"].get_parameters(cast=True) == {"General/rows": 4, "General/x": "stage1-x"}
    before = {name: _snapshot(t) for name, t in bases.items()}

    pipe = _override_pipeline(bases["stage2"].id)
    _run(pipe, in_process)

    _check_override_run(pipe, bases)
    # the base tasks never ran again: same status, times, parameters and artifacts
    assert {name: _snapshot(t) for name, t in bases.items()} == before
    assert bases["stage1"].artifacts["data"].get() == {"rows": 4, "values": [0, 1, 2, 3]}
    # one clone per step and run, nothing else
    for name, base in bases.items():
        assert {t.id for t in _named(name)} == {base.id, pipe.get_pipeline_dag()[name].executed}

    # a second run clones the base tasks again
    again = _override_pipeline(bases["stage2"].id)
    _run(again, in_process)
    _check_override_run(again, bases)
    assert {name: _snapshot(t) for name, t in bases.items()} == before
    assert len(_named("stage1")) == 3 and len(_named("stage2")) == 3


@MODES
def test_script_steps_from_drafts_made_by_task_create(home: Path, in_process: bool):
    bases = {
        name: Task.create(project_name="flow", task_name=name, script=str(SCRIPTS / f"{name}.py"))
        for name in ("stage1", "stage2")
    }
    pipe = _override_pipeline(bases["stage2"].id)
    _run(pipe, in_process)

    _check_override_run(pipe, bases)
    for base in bases.values():
        assert base.status == "created"  # a draft stays a draft
        assert base.get_parameters() == {}
        assert len(base.artifacts) == 0


# -- function steps ----------------------------------------------------------------------------
@MODES
def test_basic_returns_are_typed_parameters(home: Path, in_process: bool):
    pipe = PipelineController(name="basics", project="flow")
    pipe.add_function_step(
        "make",
        steps.basics,
        function_kwargs={"n": 4},
        function_return=["i", "f", "s", "t", "z"],
    )
    pipe.add_function_step(
        "use",
        steps.describe,
        function_kwargs={"arr": [1, 2], "info": "${make.s}", "plain": "${make.i}"},
        function_return=["out"],
    )
    dag = _run(pipe, in_process)
    make = _task(dag["make"])
    assert make.get_parameters(cast=True) == {
        "kwargs/n": 4,
        "kwargs/scale": 1.5,  # the function's default is recorded too
        "return/i": 8,
        "return/f": 6.0,
        "return/s": "n=4",
        "return/t": True,
        "return/z": None,
    }
    types = _param_types(make.id)
    assert {k: v for k, v in types.items() if k.startswith("return/")} == {
        "return/i": "int",
        "return/f": "float",
        "return/s": "str",
        "return/t": "bool",
        "return/z": "NoneType",
    }
    assert len(make.artifacts) == 0  # basic values are not artifacts
    out = _task(dag["use"]).artifacts["out"].get()
    assert out["info"] == "n=4"
    assert out["plain"] == 8 and out["plain_type"] == "int"
    assert dag["use"].parents == ["make"]


@MODES
def test_objects_travel_as_artifacts(home: Path, in_process: bool):
    pipe = PipelineController(name="objects", project="flow")
    pipe.add_function_step(
        "make", steps.make_objects, function_kwargs={"n": 5}, function_return=["arr", "info"]
    )
    kwargs = {"arr": "${make.arr}", "info": "${make.info}", "plain": 3}
    if HAS_PANDAS:
        pipe.add_function_step("frame", steps.make_frame, function_return=["df"])
        kwargs["frame"] = "${frame.df}"
    pipe.add_function_step("use", steps.describe, function_kwargs=kwargs, function_return=["out"])
    dag = _run(pipe, in_process)

    make = _task(dag["make"])
    assert set(make.artifacts) == {"arr", "info"}
    assert not [k for k in make.get_parameters() if k.startswith("return/")]
    np.testing.assert_array_equal(make.artifacts["arr"].get(), np.arange(5, dtype=float))
    info = {"rows": 5, "names": ["a", "b"], "nested": {"k": 1.5}}
    assert make.artifacts["info"].get() == info

    use = _task(dag["use"])
    refs = use.get_parameters()
    assert refs["kwargs_artifacts/arr"] == f"{make.id}/arr"
    assert refs["kwargs_artifacts/info"] == f"{make.id}/info"
    out = use.artifacts["out"].get()
    assert out["arr_type"] == "ndarray" and out["arr_sum"] == 10.0
    assert out["info"] == info
    assert out["plain"] == 3
    if HAS_PANDAS:
        assert out["frame_type"] == "DataFrame"
        assert out["frame_y"] == 1.5
        assert sorted(dag["use"].parents) == ["frame", "make"]


@MODES
def test_multiple_return_names_unpack(home: Path, in_process: bool):
    pipe = PipelineController(name="unpack", project="flow")
    pipe.add_function_step(
        "split",
        steps.split,
        function_kwargs={"values": [1, 2, 3, 4, 5]},
        function_return=["left", "right", "count"],
    )
    pipe.add_function_step(
        "use",
        steps.use_split,
        function_kwargs={
            "left": "${split.left}",
            "right": "${split.right}",
            "count": "${split.count}",
        },
        function_return=["out"],
    )
    dag = _run(pipe, in_process)
    split = _task(dag["split"])
    assert split.artifacts["left"].get() == [1, 2]
    assert split.artifacts["right"].get() == [3, 4, 5]
    assert split.get_parameters(cast=True)["return/count"] == 5
    assert _task(dag["use"]).artifacts["out"].get() == {
        "left": [1, 2],
        "right": [3, 4, 5],
        "count": 5,
    }


@MODES
def test_non_basic_literal_kwarg_is_stored_on_the_pipeline_task(home: Path, in_process: bool):
    arr = np.arange(5, dtype=np.int32)
    pipe = PipelineController(name="literal", project="flow")
    pipe.add_function_step(
        "stats",
        steps.array_stats,
        function_kwargs={"arr": arr, "label": "v"},
        function_return=["text"],
    )
    dag = _run(pipe, in_process)
    pipe_task = Task.get_task(task_id=pipe.id)
    np.testing.assert_array_equal(pipe_task.artifacts["stats.arr"].get(), arr)
    stats = _task(dag["stats"])
    assert stats.get_parameters()["kwargs_artifacts/arr"] == f"{pipe.id}/stats.arr"
    assert stats.get_parameters(cast=True)["return/text"] == "v:ndarray:int32:10.0"


# -- caching -----------------------------------------------------------------------------------
def _cache_pipeline(n: int = 5, b: int = 1, adder=steps.add) -> PipelineController:
    """up (not cached, deterministic) -> down (cached); adder (cached)."""
    pipe = PipelineController(name="cache", project="flow")
    pipe.add_function_step("up", steps.numbers, function_kwargs={"n": n}, function_return=["arr"])
    pipe.add_function_step(
        "down",
        steps.total,
        function_kwargs={"arr": "${up.arr}"},
        function_return=["ret"],
        cache_executed_step=True,
    )
    pipe.add_function_step(
        "adder",
        adder,
        function_kwargs={"a": 2, "b": b},
        function_return=["ret"],
        cache_executed_step=True,
    )
    return pipe


@MODES
def test_second_run_reuses_cached_steps(home: Path, in_process: bool):
    first = _cache_pipeline()
    dag1 = _run(first, in_process)
    assert dag1["down"].status == NodeStatus.completed
    assert dag1["down"].status_message.startswith("cache miss")
    assert not dag1["down"].cached_from
    counts = {name: len(_named(name)) for name in ("up", "down", "adder")}
    assert counts == {"up": 1, "down": 1, "adder": 1}

    second = _cache_pipeline()
    dag2 = _run(second, in_process)
    assert second.is_successful()
    for name in ("down", "adder"):
        node = dag2[name]
        assert node.status == NodeStatus.cached, _states(second)
        assert node.executed == dag1[name].executed
        assert node.cached_from == dag1[name].executed
        assert len(_named(name)) == 1  # no new task for a cached step
    # "up" is not cached: it ran again, its artifact has a new URL but the same content,
    # and "down" (which takes it) was still a hit
    assert dag2["up"].status == NodeStatus.completed
    assert dag2["up"].executed != dag1["up"].executed
    up1, up2 = _task(dag1["up"]).artifacts["arr"], _task(dag2["up"]).artifacts["arr"]
    assert up1.url != up2.url and up1.hash == up2.hash
    assert len(_named("up")) == 2
    assert _task(dag2["down"]).get_parameters(cast=True)["return/ret"] == 10
    # the pipeline task records the reuse
    state = json.loads(Task.get_task(task_id=second.id).get_runtime_properties()["_node/down"])
    assert state["status"] == "cached"
    assert state["cached_from"] == dag1["down"].executed


def test_changed_kwarg_is_a_miss_naming_parameters(home: Path):
    dag1 = _run(_cache_pipeline(b=1))
    pipe = _cache_pipeline(b=2)
    dag2 = _run(pipe)
    node = dag2["adder"]
    assert node.status == NodeStatus.completed
    assert node.executed != dag1["adder"].executed
    assert node.status_message == "cache miss: changed since the last run: parameters"
    assert _task(node).get_parameters(cast=True)["return/ret"] == 4
    assert dag2["down"].status == NodeStatus.cached  # untouched steps still hit
    assert len(_named("adder")) == 2


def test_changed_code_is_a_miss_naming_code(home: Path):
    dag1 = _run(_cache_pipeline())
    # another module-level function under the same step name: same arguments, same result
    dag2 = _run(_cache_pipeline(adder=steps.add_v2))
    node = dag2["adder"]
    assert node.status == NodeStatus.completed
    assert node.executed != dag1["adder"].executed
    assert node.status_message == "cache miss: changed since the last run: code"
    assert _task(node).get_parameters(cast=True)["return/ret"] == 3
    assert dag2["down"].status == NodeStatus.cached
    assert len(_named("adder")) == 2


def test_changed_upstream_artifact_content_is_a_miss(home: Path):
    dag1 = _run(_cache_pipeline(n=5))
    dag2 = _run(_cache_pipeline(n=6))
    node = dag2["down"]
    assert node.status == NodeStatus.completed
    assert node.executed != dag1["down"].executed
    assert node.status_message.startswith("cache miss")
    assert "parameters" in node.status_message and "code" not in node.status_message
    assert _task(node).get_parameters(cast=True)["return/ret"] == 15
    assert dag2["adder"].status == NodeStatus.cached


def test_archived_task_is_not_reused(home: Path):
    dag1 = _run(_cache_pipeline())
    Task.get_task(task_id=dag1["adder"].executed).set_archived(True)
    dag2 = _run(_cache_pipeline())
    node = dag2["adder"]
    assert node.status == NodeStatus.completed
    assert node.executed != dag1["adder"].executed
    assert node.status_message.startswith("cache miss")
    assert dag2["down"].status == NodeStatus.cached
    # the new task is reused next time
    dag3 = _run(_cache_pipeline())
    assert dag3["adder"].status == NodeStatus.cached
    assert dag3["adder"].executed == node.executed


def test_script_step_hits_the_cache_when_an_input_artifact_only_moved(home: Path):
    bases = {
        name: Task.create(project_name="flow", task_name=name, script=str(SCRIPTS / f"{name}.py"))
        for name in ("stage1", "stage2")
    }

    def build() -> PipelineController:
        pipe = PipelineController(name="script-cache", project="flow")
        pipe.add_step("stage1", base_task_id=bases["stage1"].id)
        pipe.add_step(
            "stage2",
            base_task_id=bases["stage2"].id,
            parameter_override={
                "General/x": "${stage1.artifacts.data.url}",
                "General/note": "read ${stage1.artifacts.data.url}",
            },
            cache_executed_step=True,
        )
        return pipe

    dag1 = _run(build())
    dag2 = _run(build())
    assert dag2["stage1"].executed != dag1["stage1"].executed
    url1 = _task(dag1["stage1"]).artifacts["data"].url
    assert _task(dag2["stage1"]).artifacts["data"].url != url1
    assert dag2["stage2"].status == NodeStatus.cached
    assert dag2["stage2"].executed == dag1["stage2"].executed
    # the reused task holds what it was run with
    assert _task(dag2["stage2"]).artifacts["received"].get()["values"]["x"] == url1
    assert len(_named("stage2")) == 2  # the base task and one clone


def _chain(force: str | None = None) -> PipelineController:
    pipe = PipelineController(name="chain", project="flow")
    pipe.add_function_step(
        "a", steps.add, function_kwargs={"a": 1}, function_return=["ret"], cache_executed_step=True
    )
    for prev, name in (("a", "b"), ("b", "c")):
        pipe.add_function_step(
            name,
            steps.add,
            function_kwargs={"a": f"${{{prev}.ret}}"},
            function_return=["ret"],
            cache_executed_step=True,
        )
    pipe.add_function_step(
        "side",
        steps.add,
        function_kwargs={"a": 7},
        function_return=["ret"],
        cache_executed_step=True,
    )
    if force:
        pipe.force_recompute(force)
    return pipe


def test_force_recompute_reruns_the_step_and_its_children(home: Path):
    dag1 = _run(_chain())
    dag2 = _run(_chain(force="b"))
    assert dag2["a"].status == NodeStatus.cached
    assert dag2["side"].status == NodeStatus.cached
    for name in ("b", "c"):
        assert dag2[name].status == NodeStatus.completed
        assert dag2[name].executed != dag1[name].executed
        assert not dag2[name].cached_from
        assert len(_named(name)) == 2
    assert _task(dag2["c"]).get_parameters(cast=True)["return/ret"] == 4
    # without force, everything hits again
    dag3 = _run(_chain())
    assert {n.status for n in dag3.values()} == {NodeStatus.cached}


@MODES
def test_step_tasks_record_their_cache_key_and_parts(home: Path, in_process: bool):
    base = Task.create(project_name="flow", task_name="stage1", script=str(SCRIPTS / "stage1.py"))
    pipe = PipelineController(name="keys", project="flow")
    pipe.add_step("script", base_task_id=base.id)
    pipe.add_function_step("fn", steps.add, function_kwargs={"a": 1}, function_return=["ret"])
    dag = _run(pipe, in_process)
    keys = set()
    for name in ("script", "fn"):
        runtime = _task(dag[name]).get_runtime_properties()
        parts = json.loads(runtime["_cache_parts"])
        assert set(parts) == set(PART_NAMES) == {
            "code", "parameters", "configurations", "packages", "container"
        }  # fmt: skip
        assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in parts.values())
        assert runtime["_cache_key"] == cache_key(parts)
        assert runtime["_cache_key"] == dag[name].cache_key
        keys.add(runtime["_cache_key"])
    assert len(keys) == 2


# -- what a run records ------------------------------------------------------------------------
def test_pipeline_task_records_dag_args_and_steps(home: Path):
    pipe = PipelineController(
        name="records", project="flow", add_pipeline_tags=True, target_project="flow/steps"
    )
    pipe.add_parameter("lr", 0.5)
    pipe.add_parameter("epochs", 3)
    pipe.add_parameter("tag", "x")
    pipe.add_parameter("flag", True)
    pipe.add_function_step(
        "first", steps.add, function_kwargs={"a": "${pipeline.epochs}"}, function_return=["ret"]
    )
    pipe.add_function_step(
        "second", steps.add, function_kwargs={"a": "${first.ret}"}, function_return=["ret"]
    )
    dag = _run(pipe)
    task = Task.get_task(task_id=pipe.id)
    assert task.task_type == "controller"
    assert task.name == "records"
    assert task.get_project_name() == "flow"
    assert task.status == "completed"

    stored = task.get_configuration_object_as_dict("Pipeline")
    assert stored is not None
    assert set(stored["nodes"]) == {"first", "second"}
    assert stored["nodes"]["first"]["parents"] == []
    assert stored["nodes"]["second"]["parents"] == ["first"]
    assert stored["nodes"]["second"]["function"]["function_name"] == "add"
    assert stored["nodes"]["second"]["function"]["kwargs"] == {"a": "${first.ret}", "b": 1}

    args = {k: v for k, v in task.get_parameters(cast=True).items() if k.startswith("Args/")}
    assert args == {"Args/lr": 0.5, "Args/epochs": 3, "Args/tag": "x", "Args/flag": True}
    types = _param_types(pipe.id)
    assert (types["Args/lr"], types["Args/epochs"], types["Args/tag"], types["Args/flag"]) == (
        "float", "int", "str", "bool"
    )  # fmt: skip

    runtime = task.get_runtime_properties()
    assert runtime["version"] == "1.0.0" == pipe.version
    assert runtime["progress"] == "100"
    for name in ("first", "second"):
        step = _task(dag[name])
        assert step.parent == pipe.id
        assert f"pipe: {pipe.id}" in step.get_tags()
        assert step.get_project_name() == "flow/steps"
        assert json.loads(runtime[f"_node/{name}"])["task"] == step.id
    assert _task(dag["first"]).get_parameters(cast=True)["kwargs/a"] == 3
    assert _task(dag["second"]).get_parameters(cast=True)["return/ret"] == 5


def test_steps_are_untagged_and_in_the_pipeline_project_by_default(home: Path):
    pipe = PipelineController(name="plain", project="flow")
    pipe.add_function_step("only", steps.add, function_kwargs={"a": 1}, function_return=["ret"])
    dag = _run(pipe)
    step = _task(dag["only"])
    assert not [t for t in step.get_tags() if t.startswith("pipe:")]
    assert step.get_project_name() == "flow"
    assert step.parent == pipe.id


def _versioned(
    a: int = 1, fn=steps.add, version: str | None = None, add_run_number: bool = True
) -> PipelineController:
    pipe = PipelineController(
        name="ver", project="flow", version=version, add_run_number=add_run_number
    )
    pipe.add_function_step("s", fn, function_kwargs={"a": a}, function_return=["ret"])
    return pipe


def test_version_and_run_number(home: Path):
    runs = []
    for pipe in (
        _versioned(),  # first run
        _versioned(),  # same definition
        _versioned(a=2),  # a parameter changed
        _versioned(a=2, fn=steps.add_v2),  # the code changed
        _versioned(a=2, fn=steps.add_v2, version="2.1"),  # explicit
        _versioned(a=2, fn=steps.add_v2),  # unchanged since the explicit one
    ):
        _run(pipe)
        task = Task.get_task(task_id=pipe.id)
        runs.append((task.name, task.get_runtime_properties()["version"], pipe.version))
    assert runs == [
        ("ver", "1.0.0", "1.0.0"),
        ("ver #2", "1.0.0", "1.0.0"),
        ("ver #3", "1.0.1", "1.0.1"),
        ("ver #4", "1.0.2", "1.0.2"),
        ("ver #5", "2.1", "2.1"),
        ("ver #6", "2.1", "2.1"),
    ]
    pipe = _versioned(a=3, add_run_number=False)
    _run(pipe)
    task = Task.get_task(task_id=pipe.id)
    assert task.name == "ver"
    assert task.get_runtime_properties()["version"] == "2.1.1"


# -- roll-ups onto the pipeline task -----------------------------------------------------------
@MODES
def test_monitored_metrics_and_artifacts_are_copied_to_the_pipeline(home: Path, in_process: bool):
    pipe = PipelineController(name="monitor", project="flow")
    pipe.add_function_step(
        "current",
        steps.report_current_logger,
        function_kwargs={"steps": 3},
        function_return=["n"],
        monitor_metrics=[("loss", "train")],
    )
    pipe.add_function_step(
        "renamed",
        steps.report_task_logger,
        function_kwargs={"steps": 2},
        function_return=["n"],
        monitor_metrics=[(("loss", "train"), ("final", "loss"))],
    )
    pipe.add_function_step(
        "arts",
        steps.make_artifacts,
        function_return=["z"],
        monitor_artifacts=["a", ("b", "b_final")],
    )
    dag = _run(pipe, in_process)
    task = Task.get_task(task_id=pipe.id)
    scalars = task.get_reported_scalars()
    assert scalars["loss"]["train"] == {"x": [0, 1, 2], "y": [1.0, 0.5, 1.0 / 3]}
    assert scalars["final"]["loss"] == {"x": [0, 1], "y": [10.0, 11.0]}
    # the steps keep their own
    assert _task(dag["renamed"]).get_reported_scalars()["loss"]["train"]["y"] == [10.0, 11.0]

    arts = task.artifacts
    assert {"a", "b_final"} <= set(arts)
    assert "b" not in arts
    assert arts["a"].get() == {"which": "a", "values": [1, 2, 3]}
    assert arts["b_final"].get() == [4, 5, 6]
    assert arts["a"].metadata["source_task"] == dag["arts"].executed


@MODES
def test_pipeline_logger_and_artifacts_from_inside_a_step(home: Path, in_process: bool):
    pipe = PipelineController(name="to-pipe", project="flow")
    pipe.add_function_step(
        "one", steps.to_pipeline, function_kwargs={"tag": "one"}, function_return=["tag"]
    )
    pipe.add_function_step(
        "two", steps.to_pipeline, function_kwargs={"tag": "two"}, function_return=["tag"]
    )
    dag = _run(pipe, in_process)
    task = Task.get_task(task_id=pipe.id)
    assert task.artifacts["shared_one"].get() == {"tag": "one", "values": [1, 2]}
    assert task.artifacts["shared_two"].get() == {"tag": "two", "values": [1, 2]}
    scalars = task.get_reported_scalars()
    assert scalars.get("from_step") == {
        "one": {"x": [3], "y": [7.5]},
        "two": {"x": [3], "y": [7.5]},
    }
    for name in ("one", "two"):
        step = _task(dag[name])
        assert "from_step" not in step.get_reported_scalars()
        assert not [a for a in step.artifacts if a.startswith("shared_")]


# -- a pipeline as a step of another -----------------------------------------------------------
@MODES
def test_pipeline_runs_another_pipeline_as_a_step(home: Path, in_process: bool):
    inner = PipelineController(name="inner", project="flow")
    inner.add_parameter("start", 5)
    inner.add_function_step(
        "one",
        steps.add,
        function_kwargs={"a": "${pipeline.start}", "b": 2},
        function_return=["ret"],
    )
    inner.add_function_step(
        "two", steps.plus_offset, function_kwargs={"a": "${one.ret}"}, function_return=["ret"]
    )
    _run(inner, in_process=True)
    inner_id = inner.id
    assert inner_id is not None
    inner_steps = {t.id for t in Task.get_tasks(task_filter={"parent": inner_id})}
    assert len(inner_steps) == 2

    outer = PipelineController(name="outer", project="flow")
    outer.add_step("sub", base_task_id=inner_id)
    outer.add_function_step(
        "after", steps.add, function_kwargs={"a": 1}, function_return=["ret"], parents=["sub"]
    )
    dag = _run(outer, in_process)
    assert Task.get_task(task_id=outer.id).status == "completed"
    assert dag["sub"].status == NodeStatus.completed
    assert dag["after"].status == NodeStatus.completed

    sub = _task(dag["sub"])
    assert sub.id != inner_id
    assert sub.task_type == "controller"
    assert sub.parent == outer.id
    assert sub.status == "completed"
    assert sub.get_parameters(cast=True)["Args/start"] == 5
    nested = {t.name: t for t in Task.get_tasks(task_filter={"parent": sub.id})}
    assert set(nested) == {"one", "two"}
    assert {t.status for t in nested.values()} == {"completed"}
    assert nested["one"].get_parameters(cast=True)["return/ret"] == 7
    assert nested["two"].get_parameters(cast=True)["return/ret"] == 107
    runtime = sub.get_runtime_properties()
    for name in ("one", "two"):
        assert json.loads(runtime[f"_node/{name}"])["status"] == "completed"
    # the inner pipeline's own run is untouched
    assert Task.get_task(task_id=inner_id).status == "completed"
    assert {t.id for t in Task.get_tasks(task_filter={"parent": inner_id})} == inner_steps


def test_pipeline_step_is_cached_and_a_miss_names_the_change(home: Path):
    inner = PipelineController(name="inner", project="flow")
    inner.add_parameter("start", 5)
    inner.add_function_step(
        "one", steps.add, function_kwargs={"a": "${pipeline.start}"}, function_return=["ret"]
    )
    _run(inner)
    assert inner.id is not None
    inner_id = inner.id

    def outer(start: int) -> PipelineController:
        pipe = PipelineController(name="outer", project="flow")
        pipe.add_step(
            "sub",
            base_task_id=inner_id,
            parameter_override={"Args/start": start},
            cache_executed_step=True,
        )
        return pipe

    dag1 = _run(outer(5))
    dag2 = _run(outer(5))
    assert dag2["sub"].status == NodeStatus.cached
    assert dag2["sub"].executed == dag1["sub"].executed
    dag3 = _run(outer(6))
    node = dag3["sub"]
    assert node.status == NodeStatus.completed
    nested = Task.get_tasks(task_filter={"parent": node.executed})
    assert [t.get_parameters(cast=True)["return/ret"] for t in nested] == [7]
    # like any other step, the miss names what changed since the step's last run
    assert node.status_message == "cache miss: changed since the last run: parameters"


# -- many steps, in local process mode ---------------------------------------------------------
def test_fan_out_of_100_steps_and_a_join(home: Path):
    pipe = PipelineController(name="fan", project="flow")
    for i in range(100):
        pipe.add_function_step(
            f"s_{i}", steps.square, function_kwargs={"i": i}, function_return=["ret"]
        )
    pipe.add_function_step(
        "join",
        steps.join_all,
        function_kwargs={f"v{i}": f"${{s_{i}.ret}}" for i in range(100)},
        function_return=["total"],
    )
    dag = _run(pipe, in_process=False)
    assert len(dag["join"].parents) == 100
    assert {n.status for n in dag.values()} == {NodeStatus.completed}
    assert _task(dag["join"]).get_parameters(cast=True)["return/total"] == sum(
        i * i for i in range(100)
    )
    assert len(Task.get_tasks(task_filter={"parent": pipe.id})) == 101


def test_chain_of_100_steps(home: Path):
    pipe = PipelineController(name="chain100", project="flow")
    pipe.add_function_step("c_0", steps.inc, function_kwargs={"x": 0}, function_return=["ret"])
    for i in range(1, 100):
        pipe.add_function_step(
            f"c_{i}",
            steps.inc,
            function_kwargs={"x": f"${{c_{i - 1}.ret}}"},
            function_return=["ret"],
        )
    dag = _run(pipe, in_process=False)
    assert {n.status for n in dag.values()} == {NodeStatus.completed}
    assert _task(dag["c_99"]).get_parameters(cast=True)["return/ret"] == 100
    assert _task(dag["c_50"]).get_parameters(cast=True)["return/ret"] == 51
