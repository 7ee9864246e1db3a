"""PipelineDecorator end to end: values between steps, where they are stored, caching, the DAG
as stored, monitoring, and debug mode against local mode.

Every test runs real pipelines in its own stepline home, in both modes (``mode`` fixture):
``debug`` runs each step in a thread of this process (calling the component's own function),
``local`` runs each step's stored code in a child process. Components and pipelines live in
``deco_data_steps.py``; the tests that need a module of their own (a local import next to the
pipeline's module, a change of a component's code) write one into ``tmp_path``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stepline.automation.controller import PipelineDecorator
from stepline.backend import get_backend
from stepline.core import params as pv
from stepline.core.records import TaskFilter, TaskRecord
from stepline.sdk.artifacts import Artifact
from tests.pipeline import deco_data_steps as steps

PROJECT = steps.PROJECT


# -- reading what a run stored -------------------------------------------------------------------
def _runs(name: str) -> list[TaskRecord]:
    """The pipeline tasks of pipeline ``name``, by run number."""
    backend = get_backend()
    found = backend.find_tasks(
        TaskFilter(type=["controller"], runtime={"_pipeline_name": f"{PROJECT}/{name}"})
    )
    return sorted(found, key=lambda t: int(backend.get_runtime(t.id)["_run_number"]))


def _last_run(name: str) -> TaskRecord:
    runs = _runs(name)
    assert runs, f"no run of pipeline {name!r}"
    return runs[-1]


def _nodes(pipe_id: str) -> dict[str, dict[str, Any]]:
    """{step: state} from the pipeline task's runtime properties ``_node/STEP``."""
    return {
        k[len("_node/") :]: json.loads(v)
        for k, v in get_backend().get_runtime(pipe_id).items()
        if k.startswith("_node/")
    }


def _dag(pipe_id: str) -> dict[str, Any]:
    configs = {c.name: c for c in get_backend().get_configs(pipe_id)}
    assert configs["Pipeline"].content_type == "json"
    return json.loads(configs["Pipeline"].value)


def _params(task_id: str) -> dict[str, tuple[str, str]]:
    """{"section/name": (stored text, type name)}."""
    return {p.key: (p.value, p.type) for p in get_backend().get_params(task_id)}


def _values(task_id: str, section: str) -> dict[str, Any]:
    """The typed values of one parameter section."""
    return {
        p.name: pv.decode(p.value, p.type)
        for p in get_backend().get_params(task_id)
        if p.section == section
    }


def _artifacts(task_id: str) -> dict[str, Any]:
    return {a.name: a for a in get_backend().get_artifacts(task_id)}


def _load(task_id: str, name: str) -> Any:
    return Artifact(_artifacts(task_id)[name], get_backend()).get()


def _step_tasks(pipe_id: str) -> list[TaskRecord]:
    """Tasks created by this run for its steps."""
    return get_backend().find_tasks(TaskFilter(parent=pipe_id))


def _step_id(pipe_id: str, step: str) -> str:
    task = _nodes(pipe_id)[step]["task"]
    assert isinstance(task, str), _nodes(pipe_id)[step]
    return task


def _expected_report(values: dict[str, Any]) -> dict[str, list[Any]]:
    """What ``describe_args`` reports when it receives ``values`` unchanged."""
    return {name: [type(v).__name__, steps.plain(v)] for name, v in values.items()}


def _all_completed(pipe_id: str) -> None:
    states = _nodes(pipe_id)
    assert states
    assert {n: s["status"] for n, s in states.items()} == dict.fromkeys(states, "completed")
    assert get_backend().get_task(pipe_id).status.value == "completed"


# -- 1. types of arguments and return values ------------------------------------------------------
def test_argument_and_return_types_round_trip(mode: str):
    result = steps.types_pipeline(n=3)

    # literals passed by the logic: basic ones as typed parameters, the others as artifacts
    sent = {
        **steps.LITERALS,
        "frame": steps.sample_frame(2),
        "arr": steps.sample_array(4),
        "point": steps.Point(1.5, -2.0),
    }
    assert result["direct"] == _expected_report(sent)

    # return values, as the logic got them (each proxy loaded)
    got = dict(zip(steps.ARG_NAMES, result["values"], strict=True))
    expected = {
        "i": 21,
        "f": 3.0,
        "b": True,
        "s": "hé\nllo",
        "s2": "007",
        "none": None,
        "lst": [3, "a", None, 1.5],
        "dct": {"k": [1, 2], "nested": {"x": 3}},
        "tup": (3, "t"),
    }
    for name, value in expected.items():
        assert type(got[name]) is type(value), (name, got[name])
        assert got[name] == value, name
    pd.testing.assert_frame_equal(got["frame"], steps.sample_frame(3))
    assert isinstance(got["arr"], np.ndarray) and got["arr"].dtype == np.float32
    np.testing.assert_array_equal(got["arr"], steps.sample_array(3))
    assert isinstance(got["point"], steps.Point) and got["point"] == steps.Point(4.5, -2.0)

    # the same values, passed by reference into another step, arrive unchanged
    assert result["via_refs"] == _expected_report(got)
    # a list of results (a DataFrame, an array, an int) is built when its step launches
    assert result["kinds"] == ["DataFrame", "ndarray", "int", "Point"]


def test_argument_and_return_types_are_stored_by_kind(mode: str):
    steps.types_pipeline(n=2)
    pipe = _last_run("types")
    direct = _step_id(pipe.id, "describe_args")
    via_refs = _step_id(pipe.id, "describe_args_1")
    make = _step_id(pipe.id, "make_values")

    # literal basic arguments: section kwargs, with their types
    params = _params(direct)
    assert {k: t for k, (_, t) in params.items() if k.startswith("kwargs/")} == {
        "kwargs/i": "int",
        "kwargs/f": "float",
        "kwargs/b": "bool",
        "kwargs/s": "str",
        "kwargs/s2": "str",
        "kwargs/none": "NoneType",
        "kwargs/lst": "list",
        "kwargs/dct": "dict",
        "kwargs/tup": "tuple",
    }
    assert _values(direct, "kwargs") == steps.LITERALS
    # literal objects: artifacts STEP.ARG of the pipeline's task, passed in kwargs_artifacts
    assert _values(direct, "kwargs_artifacts") == {
        a: f"{pipe.id}/describe_args.{a}" for a in ("frame", "arr", "point")
    }
    pipe_arts = _artifacts(pipe.id)
    assert {n: pipe_arts[f"describe_args.{n}"].type for n in ("frame", "arr", "point")} == {
        "frame": "pandas",
        "arr": "numpy",
        "point": "pickle",
    }
    pd.testing.assert_frame_equal(_load(pipe.id, "describe_args.frame"), steps.sample_frame(2))

    # return values: basic ones are parameters return/NAME, the others artifacts NAME
    assert {k: v for k, v in _params(make).items() if k.startswith("return/")} == {
        "return/i": ("14", "int"),
        "return/f": ("2.0", "float"),
        "return/b": ("False", "bool"),
        "return/s": ("hé\nllo", "str"),
        "return/s2": ("007", "str"),
        "return/none": ("", "NoneType"),
    }
    make_arts = _artifacts(make)
    assert {n: a.type for n, a in make_arts.items()} == {
        "lst": "json",
        "dct": "json",
        "tup": "pickle",
        "frame": "pandas",
        "arr": "numpy",
        "point": "pickle",
    }
    assert _load(make, "tup") == (2, "t")
    assert _load(make, "dct") == {"k": [1, 2], "nested": {"x": 2}}

    # results passed on: basic values copied into kwargs, objects referenced where they are
    assert _values(via_refs, "kwargs") == {
        "i": 14, "f": 2.0, "b": False, "s": "hé\nllo", "s2": "007", "none": None,
    }  # fmt: skip
    assert _values(via_refs, "kwargs_artifacts") == {
        n: f"{make}/{n}" for n in ("lst", "dct", "tup", "frame", "arr", "point")
    }
    assert not any(name.startswith("describe_args_1.") for name in pipe_arts)
    # a list of results that is not a parameter value is stored on the pipeline's task
    kinds = _step_id(pipe.id, "kinds")
    assert _values(kinds, "kwargs_artifacts") == {"items": f"{pipe.id}/kinds.items"}
    assert [type(v).__name__ for v in _load(pipe.id, "kinds.items")] == [
        "DataFrame", "ndarray", "int", "Point",
    ]  # fmt: skip
    # the pipeline's own argument and result
    assert _params(pipe.id)["Args/n"] == ("2", "int")
    assert _artifacts(pipe.id)["result"].type == "pickle"
    _all_completed(pipe.id)


# -- 2. where values are stored ------------------------------------------------------------------
def test_pipeline_args_args_map_and_basic_result(mode: str):
    result = steps.storage_pipeline(n=5, path="in/data.csv", weights=[0.5, 2])
    assert result == 16 and type(result) is int
    pipe = _last_run("storage")
    params = _params(pipe.id)
    assert {k: v for k, v in params.items() if not k.startswith("return/")} == {
        "Args/n": ("5", "int"),
        "Args/weights": ("[0.5, 2]", "list"),
        "Data/path": ("in/data.csv", "str"),
        "Data/rows": ("2", "int"),  # a default is recorded too
    }
    assert params["return/result"] == ("16", "int")
    assert "result" not in _artifacts(pipe.id)
    assert get_backend().get_runtime(pipe.id)["version"] == "2.0"

    # the step task: its project, type and tags
    [step] = _step_tasks(pipe.id)
    assert step.id == _step_id(pipe.id, "store_step")
    assert step.project == f"{PROJECT}/steps"  # target_project
    assert step.type == "training"
    assert sorted(step.tags) == sorted([f"pipe: {pipe.id}", "stored"])
    assert step.status.value == "completed"

    # arguments: basic -> kwargs (typed), objects -> kwargs_artifacts
    assert {k: v for k, v in _params(step.id).items() if k.startswith("kwargs/")} == {
        "kwargs/n": ("5", "int"),
        "kwargs/label": ("in/data.csv", "str"),
        "kwargs/ratio": ("0.5", "float"),
        "kwargs/flag": ("True", "bool"),
        "kwargs/nothing": ("", "NoneType"),
        "kwargs/items": ("[0.5, 2]", "list"),
    }
    assert _values(step.id, "kwargs_artifacts") == {
        "table": f"{pipe.id}/store_step.table",
        "vec": f"{pipe.id}/store_step.vec",
    }
    np.testing.assert_array_equal(_load(pipe.id, "store_step.vec"), steps.sample_array(5))
    # returns: basic -> return/NAME, others -> artifacts NAME of the step's task
    assert _values(step.id, "return") == {
        "count": 6, "name": "IN/DATA.CSV", "ratio": 0.25, "flag": False, "nothing": None,
    }  # fmt: skip
    arts = _artifacts(step.id)
    assert {n: a.type for n, a in arts.items()} == {
        "frame": "pandas",
        "arr": "numpy",
        "items": "json",
    }
    pd.testing.assert_frame_equal(_load(step.id, "frame"), steps.sample_frame(2))
    np.testing.assert_array_equal(_load(step.id, "arr"), steps.sample_array(5) * 2)
    assert _load(step.id, "items") == [0.5, 2, 5]
    _all_completed(pipe.id)


def test_object_result_is_stored_as_an_artifact(mode: str):
    result = steps.object_result_pipeline(n=3)
    assert set(result) == {"frame", "count"}
    pd.testing.assert_frame_equal(result["frame"], steps.sample_frame(3))
    assert result["count"] == 4
    pipe = _last_run("storage-obj")
    assert not [k for k in _params(pipe.id) if k.startswith("return/")]
    stored = _load(pipe.id, "result")
    pd.testing.assert_frame_equal(stored["frame"], steps.sample_frame(3))
    assert stored["count"] == 4 and type(stored["count"]) is int
    assert _params(pipe.id) == {"Args/n": ("3", "int")}
    assert "pipe: " not in " ".join(_step_tasks(pipe.id)[0].tags)  # add_pipeline_tags off


# -- 3. caching ------------------------------------------------------------------------------------
def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_cached_rerun_and_changed_argument(mode: str, tmp_path: Path):
    log = tmp_path / "calls.log"
    first = steps.cache_pipeline(str(log), a=1, b=2, n=4)
    assert first == [2003, 6]
    run1 = _last_run("cached")
    states1 = _nodes(run1.id)
    names = ["cached_add", "cached_array", "cached_inc", "cached_inc_1", "cached_sum"]
    assert sorted(states1) == names
    assert all(s["status"] == "completed" and not s["cached_from"] for s in states1.values())
    assert len(_step_tasks(run1.id)) == 5
    assert sorted(_calls(log)) == sorted(
        ["cached_inc 1", "cached_inc 2", "cached_add 1001 1002", "cached_array 4", "cached_sum 4"]
    )
    tasks1 = {n: s["task"] for n, s in states1.items()}
    keys1 = {n: get_backend().get_runtime(t)["_cache_key"] for n, t in tasks1.items()}
    assert all(keys1.values()) and len(set(keys1.values())) == 5

    # the same run again: every step is a cache hit, nothing runs, no step task is made
    second = steps.cache_pipeline(str(log), a=1, b=2, n=4)
    assert second == first
    run2 = _last_run("cached")
    assert run2.id != run1.id
    assert _step_tasks(run2.id) == []
    assert len(_calls(log)) == 5
    states2 = _nodes(run2.id)
    assert {n: s["status"] for n, s in states2.items()} == dict.fromkeys(names, "cached")
    assert {n: s["cached_from"] for n, s in states2.items()} == tasks1
    assert {n: s["task"] for n, s in states2.items()} == tasks1
    assert {n: s["cache_key"] for n, s in states2.items()} == keys1
    assert get_backend().get_task(run2.id).status.value == "completed"
    assert _load(run2.id, "result") == [2003, 6]

    # b changes: its step and the step downstream of it run, the others are still hits
    third = steps.cache_pipeline(str(log), a=1, b=5, n=4)
    assert third == [2006, 6]
    run3 = _last_run("cached")
    states3 = _nodes(run3.id)
    assert {n: s["status"] for n, s in states3.items()} == {
        "cached_inc": "cached",
        "cached_inc_1": "completed",
        "cached_add": "completed",
        "cached_array": "cached",
        "cached_sum": "cached",
    }
    assert (
        states3["cached_inc_1"]["message"] == "cache miss: changed since the last run: parameters"
    )
    assert states3["cached_add"]["message"] == "cache miss: changed since the last run: parameters"
    assert states3["cached_inc"]["cached_from"] == tasks1["cached_inc"]
    assert states3["cached_sum"]["cached_from"] == tasks1["cached_sum"]
    assert {t.name for t in _step_tasks(run3.id)} == {"cached_inc_1", "cached_add"}
    assert _calls(log)[5:] == ["cached_inc 5", "cached_add 1001 1005"]


_CODE_V1 = """
from stepline.automation.controller import PipelineDecorator


@PipelineDecorator.component(return_values=["v"], cache=True)
def work(x: int):
    return x + 1


@PipelineDecorator.component(return_values=["v"], cache=True)
def other(x: int):
    return x * 3


@PipelineDecorator.component(return_values=["v"], cache=True)
def after(v: int):
    return v * 10


@PipelineDecorator.pipeline(name="code-change", project="deco-data", return_value="result")
def code_pipeline(x: int = 1):
    return [after(work(x)), other(x)]
"""


def _load_module(path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_changed_code_is_a_cache_miss(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "code_steps.py"
    tag = uuid.uuid4().hex[:8]
    path.write_text(_CODE_V1)
    v1 = _load_module(path, f"code_steps_v1_{tag}", monkeypatch)
    assert v1.code_pipeline(x=2) == [30, 6]
    run1 = _last_run("code-change")
    tasks1 = {n: s["task"] for n, s in _nodes(run1.id).items()}

    # the same file, the body of one component changed
    path.write_text(_CODE_V1.replace("return x + 1", "return x + 20"))
    v2 = _load_module(path, f"code_steps_v2_{tag}", monkeypatch)
    assert v2.code_pipeline(x=2) == [220, 6]
    run2 = _last_run("code-change")
    states = _nodes(run2.id)
    assert {n: s["status"] for n, s in states.items()} == {
        "work": "completed",
        "after": "completed",
        "other": "cached",
    }
    assert states["work"]["message"] == "cache miss: changed since the last run: code"
    assert states["after"]["message"] == "cache miss: changed since the last run: parameters"
    assert states["other"]["cached_from"] == tasks1["other"]
    assert states["work"]["task"] != tasks1["work"]


# -- 4. the DAG as stored ----------------------------------------------------------------------
def test_dag_is_stored_as_it_grows(mode: str):
    result = steps.dag_pipeline(n=3)
    assert result["total"] == 15 and result["extra"] == 100
    pipe = _last_run("dag")
    expected_parents = {
        "dag_source": [],
        "dag_square": ["dag_source"],
        "dag_square_1": ["dag_source"],
        "dag_square_2": ["dag_source"],
        "dag_sum": ["dag_square", "dag_square_1", "dag_square_2"],
        "dag_source_1": ["dag_sum"],  # called after the logic waited for dag_sum
        "dag_peek": ["dag_sum"],
    }
    # read from the store by the last step while the pipeline still ran: every step so far
    seen = result["seen"]
    assert seen["pipeline_status"] == "in_progress"
    assert seen["nodes"] == sorted(expected_parents)
    assert seen["total"] == 15

    dag = _dag(pipe.id)
    assert dag["name"] == "dag" and dag["project"] == PROJECT
    assert {n: e["parents"] for n, e in dag["nodes"].items()} == expected_parents
    assert {n: e["function"]["function_name"] for n, e in dag["nodes"].items()} == {
        "dag_source": "dag_source",
        "dag_square": "dag_square",
        "dag_square_1": "dag_square",
        "dag_square_2": "dag_square",
        "dag_sum": "dag_sum",
        "dag_source_1": "dag_source",
        "dag_peek": "dag_peek",
    }
    assert dag["nodes"]["dag_square_2"]["function"]["kwargs"] == {
        "x": "${dag_source.value}",
        "i": 2,
    }
    assert dag["nodes"]["dag_source_1"]["function"]["kwargs"] == {"n": 100}
    assert dag["nodes"]["dag_sum"]["function"]["kwargs"]["values"] == (
        "<list of dag_square, dag_square_1, dag_square_2>"
    )
    assert all(e["function"]["returns"] == ["value"] for n, e in dag["nodes"].items()
               if n != "dag_peek")  # fmt: skip

    states = _nodes(pipe.id)
    assert {n: s["parents"] for n, s in states.items()} == expected_parents
    _all_completed(pipe.id)
    tasks = {n: s["task"] for n, s in states.items()}
    assert len(set(tasks.values())) == len(tasks)
    by_id = {t.id: t for t in _step_tasks(pipe.id)}
    assert set(by_id) == set(tasks.values())
    for name, task_id in tasks.items():
        assert by_id[task_id].name == name
        assert get_backend().get_runtime(task_id)["_pipeline_step"] == name
    # the list of results was built into a list parameter when dag_sum launched
    assert _params(tasks["dag_sum"])["kwargs/values"] == ("[0, 3, 12]", "list")
    assert _values(tasks["dag_square_1"], "kwargs") == {"x": 3, "i": 1}


# -- 5. monitoring ---------------------------------------------------------------------------------
def _series(task_id: str, title: str, series: str) -> list[tuple[int, float]]:
    return sorted((p.iteration, p.value) for p in get_backend().get_scalars(task_id, title, series))


def test_monitored_metrics_and_artifacts_roll_up(mode: str):
    result = steps.monitor_pipeline(epochs=3)
    pipe = _last_run("monitor")
    step = _step_id(pipe.id, "train")
    assert result["step_task"] == step  # Task.current_task() in a component is its step
    if mode == "local":
        assert result["pid"] != os.getpid()
    else:
        assert result["pid"] == os.getpid()

    scalars = get_backend().get_last_scalars(pipe.id)
    assert set(scalars) == {"loss", "step acc", "from step", "logic"}
    assert _series(pipe.id, "loss", "train") == [(0, 0.5), (1, 0.25), (2, 0.125)]
    assert _series(pipe.id, "step acc", "validation") == [(0, 0.5), (1, 0.75), (2, 0.875)]
    # PipelineDecorator.get_logger() in a component reports on the pipeline's task only
    assert _series(pipe.id, "from step", "series") == [(3, 42.5)]
    assert _series(pipe.id, "logic", "s") == [(0, 7.0)]
    assert set(get_backend().get_last_scalars(step)) == {"loss", "acc", "not monitored"}

    arts = _artifacts(pipe.id)
    assert set(arts) == {"summary", "step_table", "pipe_note", "result"}
    assert _load(pipe.id, "summary") == {"epochs": 3, "loss": 0.125}
    assert arts["summary"].metadata["source_task"] == step
    assert arts["summary"].metadata["source_step"] == "train"
    pd.testing.assert_frame_equal(_load(pipe.id, "step_table"), steps.sample_frame(3))
    assert _load(pipe.id, "pipe_note") == {"by": "train", "pid": result["pid"]}
    assert set(_artifacts(step)) == {"summary", "table", "private", "final"}
    assert _dag(pipe.id)["nodes"]["train"]["monitor_artifacts"] == [
        "summary",
        ["table", "step_table"],
    ]


# -- 6. a module next to the pipeline's module, imported in a step ---------------------------------
_HELPER = """
VALUE = 41


def shout(text):
    return text.upper() + "!"
"""

_LOCAL_STEPS = """
import os

import {helper}
from {helper} import shout
from stepline.automation.controller import PipelineDecorator


@PipelineDecorator.component(return_values=["out"])
def use_helper(text: str):
    return {{"shout": shout(text), "value": {helper}.VALUE + 1, "file": {helper}.__file__,
            "pid": os.getpid()}}


@PipelineDecorator.pipeline(name="local-import", project="deco-data", return_value="result")
def local_pipeline(text: str = "hi"):
    return use_helper(text)
"""


def test_module_next_to_the_pipeline_imports_in_a_step(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    tag = uuid.uuid4().hex[:8]
    helper, module = f"deco_helper_{tag}", f"deco_local_steps_{tag}"
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{helper}.py").write_text(_HELPER)
    (folder / f"{module}.py").write_text(_LOCAL_STEPS.format(helper=helper))
    monkeypatch.syspath_prepend(str(folder))
    try:
        local_steps = importlib.import_module(module)
        result = local_steps.local_pipeline(text="ok")
    finally:
        sys.modules.pop(module, None)
        sys.modules.pop(helper, None)
    assert result["shout"] == "OK!"
    assert result["value"] == 42
    assert Path(result["file"]).resolve() == (folder / f"{helper}.py").resolve()
    if mode == "local":
        assert result["pid"] != os.getpid()  # imported in the step's own process
        assert str(folder) not in os.environ.get("PYTHONPATH", "")
    pipe = _last_run("local-import")
    _all_completed(pipe.id)


# -- 7. debug mode and local mode agree ------------------------------------------------------------
def _run_compare(mode: str) -> tuple[Any, TaskRecord]:
    (PipelineDecorator.debug_pipeline if mode == "debug" else PipelineDecorator.run_locally)()
    try:
        result = steps.compare_pipeline(rows=5, scale=1.5)
    finally:
        PipelineDecorator._mode_default = None
    return result, _last_run("compare")


def _stored(pipe: TaskRecord) -> dict[str, Any]:
    """What a run stored, without its task ids."""
    out: dict[str, Any] = {
        "pipeline": _params(pipe.id),
        "pipeline artifacts": {n: a.type for n, a in _artifacts(pipe.id).items()},
    }
    for step, state in _nodes(pipe.id).items():
        task = state["task"]
        params = _params(task)
        for key, (value, tname) in list(params.items()):
            if key.startswith("kwargs_artifacts/"):
                src, _, art = value.partition("/")
                producer = get_backend().get_runtime(src).get("_pipeline_step", "pipeline")
                params[key] = (f"{producer}/{art}", tname)
        arts = {}
        for name, rec in _artifacts(task).items():
            value = _load(task, name)
            if isinstance(value, pd.DataFrame):
                value = value.to_dict("list")
            elif isinstance(value, np.ndarray):
                value = (str(value.dtype), value.tolist())
            arts[name] = (rec.type, value)
        out[step] = {"status": state["status"], "parents": state["parents"], "params": params,
                     "artifacts": arts}  # fmt: skip
    return out


def test_debug_and_local_mode_give_the_same_results(home: Path):
    debug_result, debug_run = _run_compare("debug")
    local_result, local_run = _run_compare("local")
    assert debug_run.id != local_run.id

    assert set(debug_result) == set(local_result) == {"out", "arr", "k", "first"}
    assert (
        debug_result["out"]
        == local_result["out"]
        == {
            "cols": ["x", "y", "s"],
            "stats": {"rows": 5, "sum": 7.5},
            "extra": [7.5, 5],
            "k": 7.5,
        }
    )
    for result in (debug_result, local_result):
        assert type(result["k"]) is float and result["k"] == 7.5
        assert type(result["first"]) is float and result["first"] == 7.5
        assert result["arr"].dtype == np.float64
    np.testing.assert_array_equal(debug_result["arr"], local_result["arr"])

    debug_stored, local_stored = _stored(debug_run), _stored(local_run)
    assert set(debug_stored) == {"pipeline", "pipeline artifacts", "prepare", "consume"}
    assert debug_stored["pipeline artifacts"] == {"result": "pickle"}
    assert debug_stored == local_stored
    assert debug_stored["consume"]["params"]["kwargs_artifacts/frame"] == ("prepare/frame", "str")
    assert debug_stored["consume"]["params"]["kwargs/k"] == ("7.5", "float")


# -- values that used to change on the way ------------------------------------------------
def test_numpy_float_return_reaches_the_next_step_as_a_number(mode: str):
    result = steps.numpy_float_pipeline(n=4)
    assert result["logic"] == 1.5  # the value in the pipeline's logic
    assert result["step"][1] == 3.0  # the value in the next step (doubled there)


def test_json_lossy_values_round_trip_unchanged(mode: str):
    result = steps.lossy_pipeline()
    assert result["int_keys"] == ["dict", {1: "a", 2: "b"}]
    assert result["tuple_in_list"] == ["list", [(1, 2)]]


def test_component_reading_an_attribute_of_its_own_name(mode: str):
    assert steps.mean_pipeline() == 2.0


def test_fixture_resets_the_mode(home: Path):
    assert PipelineDecorator._mode_default is None
    with pytest.raises(SystemExit) as info:  # the default (remote) mode queues the controller
        steps.dag_pipeline(n=1)
    assert info.value.code == 0
    assert len(get_backend().queue_tasks("services")) == 1
