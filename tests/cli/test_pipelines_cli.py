"""``stepline pipelines``: real pipeline runs (function steps in threads of the test process)
in a fresh store, then the commands' output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from stepline.backend import get_backend
from stepline.cli.main import app
from stepline.core.records import NewTask
from stepline.core.status import TaskStatus
from stepline.pipeline.actions import new_run
from stepline.pipeline.controller import PipelineController
from stepline.pipeline.views import dag_order
from stepline.sdk.task import Task

#: Environment variables that would make Rich colour or size its output as for a terminal.
_TERMINAL_VARS = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _TERMINAL_VARS:
        monkeypatch.delenv(var, raising=False)


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stderr == ""
    return result.stdout


# -- the steps (module level: a step stores and runs its function's source) --------------------
def make_numbers(count=3):
    return list(range(1, count + 1))


def total(numbers, scale=1):
    return sum(numbers) * scale


def count_items(numbers):
    return len(numbers)


def report(value, size):
    return f"{value}/{size}"


def explode(value):
    raise RuntimeError(f"cannot handle {value}")


def build(name: str = "numbers", *, failing: bool = False) -> PipelineController:
    """make (cached) -> sum, count -> report; ``failing`` swaps count for a step that raises."""
    pipe = PipelineController(name=name, project="cli-pipes", add_pipeline_tags=False)
    pipe.add_parameter("scale", 2)
    pipe.add_function_step(
        "make", make_numbers, function_return=["numbers"], cache_executed_step=True
    )
    pipe.add_function_step(
        "sum",
        total,
        function_kwargs={"numbers": "${make.numbers}", "scale": "${pipeline.scale}"},
        function_return=["value"],
    )
    if failing:
        pipe.add_function_step("count", explode, function_kwargs={"value": "${make.numbers}"})
    else:
        pipe.add_function_step(
            "count", count_items, function_kwargs={"numbers": "${make.numbers}"},
            function_return=["size"],
        )  # fmt: skip
    pipe.add_function_step(
        "report",
        report,
        function_kwargs={"value": "${sum.value}", "size": "${count.size}"}
        if not failing
        else {"value": "${sum.value}", "size": 0},
        parents=["sum", "count"],
        function_return=["text"],
    )
    return pipe


def run(pipe: PipelineController) -> bool:
    return pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)


def step_row(out: str, step: str) -> str:
    return next(line for line in out.splitlines() if re.match(rf"^\s+{step}\s", line))


# -- pipelines list ----------------------------------------------------------------------------
def test_list_shows_runs_newest_first_with_version_status_and_progress(home: Path) -> None:
    first, second = build(), build()
    assert run(first) and run(second)
    assert first.id and second.id
    Task.create(project_name="cli-pipes", task_name="not a pipeline")

    out = ok("pipelines", "list")
    lines = out.splitlines()
    assert lines[0].split() == [
        "id", "name", "version", "status", "progress", "started", "duration"
    ]  # fmt: skip
    assert len(lines) == 3  # the plain task is not a run
    assert second.id in lines[1] and first.id in lines[2]
    assert re.search(r"\snumbers #2\s+1\.0\.0\s+completed\s+100%\s+\d{4}-\d\d-\d\d", lines[1])
    assert re.search(r"\snumbers\s+1\.0\.0\s+completed\s+100%", lines[2])

    assert ok("pipelines", "list", "--project", "cli-pipes").splitlines()[1:] == lines[1:]
    assert "no pipeline runs found" in ok("pipelines", "list", "--project", "elsewhere")
    limited = ok("pipelines", "list", "--limit", "1")
    assert second.id in limited and first.id not in limited
    assert "--limit N shows more" in limited

    rows = json.loads(ok("pipelines", "list", "--json"))
    assert [r["id"] for r in rows] == [second.id, first.id]
    assert rows[0]["name"] == "numbers #2"
    assert rows[0]["version"] == "1.0.0"
    assert rows[0]["run_number"] == 2
    assert rows[0]["status"] == "completed"
    assert rows[0]["progress"] == 100
    assert rows[0]["duration"] >= 0


def test_list_with_no_runs(home: Path) -> None:
    assert "no pipeline runs found" in ok("pipelines", "list")
    assert json.loads(ok("pipelines", "list", "--json")) == []


# -- pipelines show ----------------------------------------------------------------------------
def test_show_prints_header_and_steps_in_dag_order(home: Path) -> None:
    first = build()
    assert run(first)
    second = build()
    assert run(second)
    assert second.id
    dag = second.get_pipeline_dag()

    out = ok("pipelines", "show", second.id[:8])
    assert out.startswith(f"Pipeline run {second.id}\n")
    assert re.search(r"^name\s+numbers #2$", out, re.M)
    assert re.search(r"^project\s+cli-pipes$", out, re.M)
    assert re.search(r"^version\s+1\.0\.0$", out, re.M)
    assert re.search(r"^status\s+completed$", out, re.M)
    assert re.search(r"^progress\s+100%$", out, re.M)
    assert re.search(r"^args\s+scale=2$", out, re.M)

    header = next(line for line in out.splitlines() if line.strip().startswith("step"))
    assert header.split() == ["step", "status", "duration", "task", "message"]
    rows = [step_row(out, s) for s in ("make", "sum", "count", "report")]
    assert [out.index(r) for r in rows] == sorted(out.index(r) for r in rows)

    # the cached step shows the task of the first run whose outputs it reused
    reused = first.get_pipeline_dag()["make"].executed
    assert isinstance(reused, str)
    assert dag["make"].cached_from == reused
    assert re.search(rf"make\s+cached\s+-\s+{reused}\s+\S", rows[0])  # then a message
    for row, name in zip(rows[1:], ("sum", "count", "report"), strict=True):
        task_id = dag[name].executed
        assert isinstance(task_id, str)
        assert re.search(rf"{name}\s+completed\s+\d+\.\ds\s+{task_id}$", row), row
    assert "stepline tasks show TASK" in out


def test_show_json_matches_the_store(home: Path) -> None:
    pipe = build()
    assert run(pipe)
    assert pipe.id
    data = json.loads(ok("pipelines", "show", pipe.id, "--json"))
    assert data["id"] == pipe.id
    assert data["name"] == "numbers"
    assert data["version"] == "1.0.0"
    assert data["status"] == "completed"
    assert data["progress"] == 100
    assert data["args"] == {"scale": "2"}
    steps = data["steps"]
    assert [s["name"] for s in steps] == ["make", "sum", "count", "report"]
    assert steps[3]["parents"] == ["sum", "count"]
    dag = pipe.get_pipeline_dag()
    for s in steps:
        assert s["status"] == "completed"
        assert s["task"] == dag[s["name"]].executed
        assert s["cached_from"] is None
        assert s["duration"] == pytest.approx(s["ended"] - s["started"])
        task = Task.get_task(s["task"])
        assert task.status == "completed"
        assert task.parent == pipe.id
    assert Task.get_task(steps[3]["task"]).get_parameters()["return/text"] == "12/3"


def test_show_failed_run_with_skipped_step(home: Path) -> None:
    pipe = build("breaks", failing=True)
    assert run(pipe) is False
    assert pipe.id
    out = ok("pipelines", "show", pipe.id)
    assert re.search(r"^status\s+failed", out, re.M)
    failed = pipe.get_pipeline_dag()["count"].executed
    assert isinstance(failed, str)
    assert re.search(rf"count\s+failed\s+\S+\s+{failed}", step_row(out, "count"))
    assert re.search(r"report\s+skipped\s+-\s+-", step_row(out, "report"))
    assert re.search(r"sum\s+completed", step_row(out, "sum"))
    assert "cannot handle [1, 2, 3]" in Task.get_task(failed).data.status_reason
    assert "RuntimeError: cannot handle [1, 2, 3]" in step_row(out, "count")

    # a narrow terminal: the table keeps whole ids and the messages follow it
    result = cli("pipelines", "show", pipe.id, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    narrow = result.stdout
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert re.search(rf"^\s+count\s+failed\s+\S+\s+{failed}$", narrow, re.M)
    assert re.search(r"^  count: RuntimeError: cannot handle \[1, 2, 3\]$", narrow, re.M)


def test_show_refuses_a_task_that_is_not_a_run(home: Path) -> None:
    plain = Task.create(project_name="cli-pipes", task_name="plain")
    result = cli("pipelines", "show", plain.id)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: task {plain.id} ('plain', type training)")
    assert "is not a pipeline run" in result.stderr
    assert result.stderr.count("\n") == 1

    result = cli("pipelines", "show", "deadbeefdeadbeef")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: task 'deadbeefdeadbeef' does not exist")


def test_show_a_run_whose_steps_have_not_started(home: Path) -> None:
    """A draft run (not started yet) shows every step pending, in DAG order; once a run has
    ended, a step it never recorded as started shows skipped (e.g. its controller was
    killed)."""
    backend = get_backend()
    pipe = build()
    assert run(pipe)
    assert pipe.id
    draft = new_run(backend, pipe.id, {}, queue=None)
    out = ok("pipelines", "show", draft.id)
    rows = [step_row(out, s) for s in ("make", "sum", "count", "report")]
    assert [out.index(r) for r in rows] == sorted(out.index(r) for r in rows)
    for row, name in zip(rows, ("make", "sum", "count", "report"), strict=True):
        assert re.search(rf"{name}\s+pending\s+-\s+-$", row), row

    backend.set_runtime(
        pipe.id,
        {f"_node/{n}": json.dumps({"status": "pending"}) for n in ("make", "sum", "count")},
    )
    out = ok("pipelines", "show", pipe.id)
    assert re.search(r"make\s+skipped\s+-\s+-\s+the run ended$", step_row(out, "make"))
    assert re.search(r"report\s+completed", step_row(out, "report"))


def test_dag_order_puts_parents_first_and_keeps_the_added_order() -> None:
    parents = {
        "report": ["train", "evaluate"],
        "train": ["split"],
        "load": [],
        "evaluate": ["train"],
        "split": ["load"],
        "side": [],
    }
    assert dag_order(parents) == ["load", "split", "train", "evaluate", "report", "side"]
    order = dag_order(parents)
    assert sorted(order) == sorted(parents)
    for name, ps in parents.items():
        for p in ps:
            assert order.index(p) < order.index(name)
    assert dag_order({"b": [], "a": []}) == ["b", "a"]
    assert dag_order({"x": ["y"], "y": ["x"], "z": []}) == ["z", "x", "y"]
    assert dag_order({"a": ["gone"]}) == ["a"]


# -- pipelines abort ---------------------------------------------------------------------------
def test_abort_stops_a_run_and_its_steps(home: Path) -> None:
    backend = get_backend()
    pipe = build()
    assert run(pipe)
    assert pipe.id
    draft = new_run(backend, pipe.id, {"scale": "3"}, queue=None)
    backend.set_status(draft.id, TaskStatus.in_progress)  # as its controller does
    step = backend.create_task(NewTask(name="make", project="cli-pipes", parent=draft.id))

    out = ok("pipelines", "abort", draft.id[:8], "--reason", "wrong data")

    assert out.startswith(f"run {draft.id} aborted: 2 task(s) stopped (1 step(s))")
    for task_id in (draft.id, step.id):
        rec = backend.get_task(task_id)
        assert (rec.status, rec.status_reason) == (TaskStatus.stopped, "wrong data")
    assert "had ended (stopped); nothing to abort" in ok("pipelines", "abort", draft.id)

    result = cli("pipelines", "abort", step.id)
    assert result.exit_code == 1
    assert "is not a pipeline run" in result.stderr
