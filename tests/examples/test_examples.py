"""The pipeline examples, run as a user runs them: a fresh process on a fresh store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from stepline.backend import get_backend
from stepline.sdk.task import Task
from tests.conftest import TIMEOUT, run_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE_TASKS = (
    "pipeline step 1 dataset artifact",
    "pipeline step 2 process dataset",
    "pipeline step 3 train model",
)


def run_example(home: Path, script: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=run_env(home),
        capture_output=True,
        text=True,
        timeout=2 * TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def runs(pipeline_name: str) -> list[Task]:
    """Runs of the pipeline (name, or name #N), newest first."""
    return Task.get_tasks(
        project_name="examples",
        task_name=f"^{re.escape(pipeline_name)}( #\\d+)?$",
        task_filter={"type": "controller"},
    )


def step_states(run: Task) -> dict[str, dict[str, object]]:
    runtime = run.get_runtime_properties()
    return {
        key.removeprefix("_node/"): json.loads(value)
        for key, value in runtime.items()
        if key.startswith("_node/")
    }


def dag_parents(run: Task) -> dict[str, list[str]]:
    configs = {c.name: c.value for c in get_backend().get_configs(run.id)}
    return {
        name: node["parents"] for name, node in json.loads(configs["Pipeline"])["nodes"].items()
    }


def test_pipeline_from_tasks(home: Path) -> None:
    script = EXAMPLES / "pipeline_from_tasks" / "pipeline_controller.py"
    out = run_example(home, script)

    # a fresh store: the controller ran each step script once to make the base tasks
    for name in BASE_TASKS:
        assert f"no task {name!r}" in out
        assert Task.get_task(project_name="examples", task_name=name).status == "completed"

    [run] = runs("pipeline demo")
    assert run.status == "completed"
    assert f"stepline pipelines show {run.id}" in out
    assert dag_parents(run) == {
        "stage_data": [],
        "stage_process": ["stage_data"],
        "stage_train": ["stage_process"],
    }
    states = step_states(run)
    assert {name: s["status"] for name, s in states.items()} == {
        "stage_data": "completed",
        "stage_process": "completed",
        "stage_train": "completed",
    }
    steps = {name: Task.get_task(str(s["task"])) for name, s in states.items()}
    for name, task in steps.items():
        assert task.name == name
        assert task.parent == run.id
        assert task.status == "completed"

    # the overrides reached the clones, and the data went from step to step
    dataset = steps["stage_data"].artifacts["dataset"]
    process = steps["stage_process"].get_parameters(cast=True)
    assert process["General/dataset_url"] == dataset.url
    assert process["General/test_size"] == 0.25
    assert set(steps["stage_process"].artifacts) == {"X_train", "X_test", "y_train", "y_test"}
    assert len(steps["stage_process"].artifacts["X_test"].get()) == 38  # 25% of 150 rows
    train = steps["stage_train"].get_parameters()
    assert train["General/dataset_task_id"] == steps["stage_process"].id
    assert "model" in steps["stage_train"].artifacts
    accuracy = steps["stage_train"].get_last_scalar_metrics()["accuracy"]["test"]["last"]
    assert 0.8 < accuracy <= 1.0
    # monitor_metrics copied it onto the pipeline's task
    assert run.get_last_scalar_metrics()["accuracy"]["test"]["last"] == accuracy

    # a second run clones the same base tasks instead of making new ones
    out = run_example(home, script)
    assert "no task" not in out
    for name in BASE_TASKS:
        assert len(Task.get_tasks(project_name="examples", task_name=f"^{name}$")) == 1
    second, first = runs("pipeline demo")
    assert first.id == run.id
    assert second.name == "pipeline demo #2"
    assert second.status == "completed"
    assert {s["status"] for s in step_states(second).values()} == {"completed"}


def test_pipeline_from_functions(home: Path) -> None:
    script = EXAMPLES / "pipeline_from_functions.py"
    out = run_example(home, script)
    [run] = runs("pipeline demo (functions)")
    assert run.status == "completed"
    assert f"stepline pipelines show {run.id}" in out
    assert run.get_parameters(cast=True) == {"Args/test_size": 0.25}
    assert dag_parents(run) == {
        "load_data": [],
        "split_data": ["load_data"],
        "train": ["split_data"],
    }
    states = step_states(run)
    assert {name: s["status"] for name, s in states.items()} == {
        "load_data": "completed",
        "split_data": "completed",
        "train": "completed",
    }
    train = Task.get_task(str(states["train"]["task"]))
    assert train.parent == run.id
    returned = train.get_parameters(cast=True)["return/accuracy"]
    assert 0.8 < returned <= 1.0
    assert run.get_last_scalar_metrics()["accuracy"]["test"]["last"] == returned
    split = Task.get_task(str(states["split_data"]["task"]))
    assert len(split.artifacts["X_test"].get()) == 38  # test_size 0.25 of 150 rows

    # the data step is cached: the second run reuses the first run's task
    run_example(home, script)
    second, first = runs("pipeline demo (functions)")
    assert first.id == run.id
    assert second.status == "completed"
    again = step_states(second)
    assert again["load_data"]["status"] == "cached"
    assert again["load_data"]["cached_from"] == states["load_data"]["task"]
    assert again["split_data"]["status"] == "completed"
    assert again["train"]["status"] == "completed"


def test_pipeline_from_decorator(home: Path) -> None:
    script = EXAMPLES / "pipeline_from_decorator.py"
    out = run_example(home, script)
    [run] = runs("pipeline demo (decorator)")
    assert run.status == "completed"
    assert f"stepline pipelines show {run.id}" in out
    assert run.get_parameters(cast=True) == {
        "Args/test_size": 0.25,
        "Args/max_iter": 500,
        "return/accuracy": run.get_parameters(cast=True)["return/accuracy"],
    }
    accuracy = run.get_parameters(cast=True)["return/accuracy"]
    assert 0.8 < accuracy <= 1.0
    assert f"accuracy: {100 * accuracy:.1f}%" in out
    assert dag_parents(run) == {
        "load_dataset": [],
        "split_dataset": ["load_dataset"],
        "train_model": ["split_dataset"],
        "score_model": ["train_model", "split_dataset"],
    }
    states = step_states(run)
    assert {name: s["status"] for name, s in states.items()} == dict.fromkeys(
        ("load_dataset", "split_dataset", "train_model", "score_model"), "completed"
    )
    score = Task.get_task(str(states["score_model"]["task"]))
    assert score.parent == run.id
    assert score.get_parameters(cast=True)["return/accuracy"] == accuracy
    assert run.get_last_scalar_metrics()["accuracy"]["test"]["last"] == accuracy
    split = Task.get_task(str(states["split_dataset"]["task"]))
    assert len(split.artifacts["X_test"].get()) == 38  # test_size 0.25 of 150 rows

    # in debug mode the data steps are reused from the first run, the rest run again
    proc = subprocess.run(
        [sys.executable, str(script), "--debug"],
        env=run_env(home),
        capture_output=True,
        text=True,
        timeout=2 * TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    second, first = runs("pipeline demo (decorator)")
    assert first.id == run.id
    again = step_states(second)
    assert again["load_dataset"]["status"] == "cached"
    assert again["load_dataset"]["cached_from"] == states["load_dataset"]["task"]
    assert again["split_dataset"]["status"] == "cached"
    assert again["train_model"]["status"] == "completed"
    assert second.get_parameters(cast=True)["return/accuracy"] == accuracy
