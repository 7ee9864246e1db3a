"""The ``stepline`` command line, run against real tasks in a fresh store per test."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import stepline
from stepline.backend import get_backend
from stepline.cli import tasks as cli_tasks
from stepline.cli.main import app
from stepline.cli.render import fmt_duration, fmt_size
from stepline.core.records import NewTask
from stepline.sdk.task import Task
from tests.conftest import run_env

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


@dataclass
class Tasks:
    train: Task  # vision, training, completed, tag gpu: params, artifact, metrics, log
    evaluate: Task  # vision, testing, failed, tag nightly
    prep: Task  # tabular, data_processing, created, archived


@pytest.fixture
def tasks(home: Path) -> Tasks:
    train = Task.create(project_name="vision", task_name="train resnet", task_type="training")
    train.set_parameters(
        {"General/lr": 0.01, "General/epochs": 10, "Data/path": "/data/train", "General/aug": True}
    )
    train.add_tags(["gpu"])
    train.mark_started()
    train.upload_artifact("stats", {"mean": 0.5, "count": 3})
    logger = train.get_logger()
    for i, loss in enumerate((0.9, 0.5, 0.25)):
        logger.report_scalar("loss", "train", loss, i)
        logger.report_text(f"epoch {i} loss {loss}", print_console=False)
    logger.report_scalar("accuracy", "val", 0.75, 2)
    train.flush()
    train.mark_completed(status_message="all epochs done")

    evaluate = Task.create(project_name="vision", task_name="eval resnet", task_type="testing")
    evaluate.add_tags(["nightly"])
    evaluate.mark_started()
    evaluate.mark_failed(status_reason="ValueError: no checkpoint", status_message="crashed")

    prep = Task.create(project_name="tabular", task_name="prep", task_type="data_processing")
    prep.set_archived(True)
    return Tasks(train, evaluate, prep)


def listed_ids(output: str, candidates: list[Task]) -> list[str]:
    """The ids among ``candidates`` that appear in ``output``, in order of appearance."""
    found = [(output.find(t.id), t.id) for t in candidates if t.id in output]
    return [tid for _, tid in sorted(found)]


# -- tasks list --------------------------------------------------------------------------------
def test_list_shows_unarchived_tasks_newest_first(tasks: Tasks) -> None:
    out = ok("tasks", "list")
    everything = [tasks.train, tasks.evaluate, tasks.prep]
    assert listed_ids(out, everything) == [tasks.evaluate.id, tasks.train.id]
    header = out.splitlines()[0].split()
    assert header == ["id", "project", "name", "type", "status", "started", "duration"]
    row = next(line for line in out.splitlines() if tasks.train.id in line)
    assert re.search(r"vision\s+train resnet\s+training\s+completed\s+\d{4}-\d\d-\d\d", row)
    assert "failed" in next(line for line in out.splitlines() if tasks.evaluate.id in line)

    out = ok("tasks", "list", "--all")
    assert listed_ids(out, everything) == [tasks.prep.id, tasks.evaluate.id, tasks.train.id]
    assert "created (archived)" in out
    assert listed_ids(ok("tasks", "list", "--archived"), everything)[0] == tasks.prep.id


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--project", "vision"], ["evaluate", "train"]),
        (["-p", "tabular", "--all"], ["prep"]),
        (["--status", "failed"], ["evaluate"]),
        (["-s", "completed", "-s", "failed"], ["evaluate", "train"]),
        (["--tag", "gpu"], ["train"]),
        (["--tag=-gpu"], ["evaluate"]),
        (["--name", "^train"], ["train"]),
        (["--name", "resnet$", "--status", "completed"], ["train"]),
        (["--type", "testing"], ["evaluate"]),
        (["--project", "nowhere"], []),
    ],
)
def test_list_filters(tasks: Tasks, args: list[str], expected: list[str]) -> None:
    out = ok("tasks", "list", *args)
    every = [tasks.train, tasks.evaluate, tasks.prep]
    assert listed_ids(out, every) == [getattr(tasks, name).id for name in expected]
    if not expected:
        assert "no tasks found" in out


def test_list_json_parses_and_matches_the_store(tasks: Tasks) -> None:
    rows = json.loads(ok("tasks", "list", "--json", "--all"))
    assert [r["id"] for r in rows] == [tasks.prep.id, tasks.evaluate.id, tasks.train.id]
    by_id = {r["id"]: r for r in rows}
    train = by_id[tasks.train.id]
    assert train["name"] == "train resnet"
    assert train["project"] == "vision"
    assert train["type"] == "training"
    assert train["status"] == "completed"
    assert train["status_message"] == "all epochs done"
    assert train["tags"] == ["gpu"]
    assert train["archived"] is False
    assert train["progress"] is None
    assert "script" not in train
    assert train["started"] <= train["completed"]
    assert train["duration"] == pytest.approx(train["completed"] - train["started"])
    assert by_id[tasks.prep.id]["archived"] is True
    assert by_id[tasks.prep.id]["duration"] is None
    assert json.loads(ok("tasks", "list", "--json", "--tag", "nightly"))[0]["id"] == (
        tasks.evaluate.id
    )
    assert json.loads(ok("tasks", "list", "--json", "--project", "nowhere")) == []


def test_list_limit_keeps_the_newest(tasks: Tasks) -> None:
    out = ok("tasks", "list", "--limit", "1")
    assert listed_ids(out, [tasks.train, tasks.evaluate]) == [tasks.evaluate.id]
    assert "showing the newest 1" in out
    out = ok("tasks", "list", "--limit", "2")
    assert "showing the newest" not in out
    assert len(json.loads(ok("tasks", "list", "--json", "--limit", "0", "--all"))) == 3


def test_list_shows_progress_of_running_tasks(home: Path) -> None:
    running = Task.create(project_name="p", task_name="running")
    running.mark_started()
    running.set_progress(42)
    idle = Task.create(project_name="p", task_name="draft")
    out = ok("tasks", "list")
    assert out.splitlines()[0].split()[-1] == "progress"
    assert re.search(rf"{running.id}\s+p\s+running\s+training\s+in_progress.*\s42%$", out, re.M)
    rows = {r["id"]: r for r in json.loads(ok("tasks", "list", "--json"))}
    assert rows[running.id]["progress"] == 42
    assert rows[idle.id]["progress"] is None


def test_list_fits_a_narrow_terminal_without_cutting_ids(tasks: Tasks) -> None:
    tasks.train.set_name("a very long name " * 5)
    result = cli("tasks", "list", "--all", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    for t in (tasks.train, tasks.evaluate, tasks.prep):
        assert t.id in result.stdout
    assert "…" in result.stdout  # the long name was shortened, not wrapped


def test_list_rejects_a_bad_regular_expression(home: Path) -> None:
    result = cli("tasks", "list", "--name", "(unclosed")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --name '(unclosed' is not a regular expression")
    assert "Traceback" not in result.output


# -- tasks show --------------------------------------------------------------------------------
def test_show_prints_everything_about_a_task(tasks: Tasks) -> None:
    t = tasks.train
    out = ok("tasks", "show", t.id)
    lines = out.splitlines()
    assert lines[0] == f"Task {t.id}"
    assert re.search(r"^name\s+train resnet$", out, re.M)
    assert re.search(r"^project\s+vision$", out, re.M)
    assert re.search(r"^type\s+training$", out, re.M)
    assert re.search(r"^status\s+completed\s+all epochs done$", out, re.M)
    assert re.search(r"^tags\s+gpu$", out, re.M)
    assert re.search(r"^completed\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\(ran ", out, re.M)

    # parameters, grouped by section, with their types
    params = out[out.index("Parameters") : out.index("Artifacts")]
    assert params.index("Data") < params.index("/data/train") < params.index("General")
    assert re.search(r"^\s+lr\s+0\.01\s+float$", params, re.M)
    assert re.search(r"^\s+epochs\s+10\s+int$", params, re.M)
    assert re.search(r"^\s+aug\s+True\s+bool$", params, re.M)
    assert re.search(r"^\s+path\s+/data/train\s+str$", params, re.M)

    # artifacts: name, type, size, sha256 prefix, url, preview
    (art,) = get_backend().get_artifacts(t.id)
    section = out[out.index("Artifacts") : out.index("Metrics")]
    assert re.search(rf"^  stats  json  {art.size} B  sha256:{art.hash[:12]}$", section, re.M)
    assert art.hash[12:] not in section
    assert f"url      {art.url}" in section
    assert 'preview  {"count": 3, "mean": 0.5}' in section

    # last metrics: title, series, last, min, max, iteration
    metrics = out[out.index("Metrics") : out.index("Console log")]
    assert re.search(r"^\s+loss\s+train\s+0\.25\s+0\.25\s+0\.9\s+2$", metrics, re.M)
    assert re.search(r"^\s+accuracy\s+val\s+0\.75\s+0\.75\s+0\.75\s+2$", metrics, re.M)

    # the console log
    assert "Console log (last 3 of 3 lines)" in out
    assert [ln.split(" ", 1)[1] for ln in lines[-3:]] == [
        "epoch 0 loss 0.9",
        "epoch 1 loss 0.5",
        "epoch 2 loss 0.25",
    ]


def test_show_log_option_limits_the_tail(tasks: Tasks) -> None:
    out = ok("tasks", "show", tasks.train.id, "--log", "1")
    assert "Console log (last 1 of 3 lines)" in out
    assert out.rstrip().endswith("epoch 2 loss 0.25")
    assert "epoch 1 loss" not in out
    out = ok("tasks", "show", tasks.train.id, "--log", "0")
    assert "Console log" not in out
    assert "epoch 2 loss" not in out


def test_show_log_tail(home: Path) -> None:
    task = Task.create(project_name="p", task_name="chatty")
    logger = task.get_logger()
    for i in range(11):
        logger.report_text(f"line {i}", print_console=False)
    task.flush()
    out = ok("tasks", "show", task.id, "--log", "3")
    assert "Console log (last 3 of 11 lines)" in out
    assert [ln.split(" ", 1)[1] for ln in out.splitlines()[-3:]] == ["line 8", "line 9", "line 10"]
    log = json.loads(ok("tasks", "show", task.id, "--json", "--log", "5"))["log"]
    assert [ln["text"] for ln in log] == [f"line {i}" for i in range(6, 11)]


def test_show_failed_task_with_parent_and_no_outputs(tasks: Tasks) -> None:
    child = Task.clone(tasks.evaluate, name="eval again")
    out = ok("tasks", "show", child.id)
    assert re.search(rf"^parent\s+{tasks.evaluate.id}\s+eval resnet$", out, re.M)
    assert re.search(r"^status\s+created$", out, re.M)
    assert "Console log (empty)" in out

    out = ok("tasks", "show", tasks.evaluate.id)
    assert re.search(r"^status\s+failed\s+crashed$", out, re.M)
    assert re.search(r"^reason\s+ValueError: no checkpoint$", out, re.M)
    assert re.search(r"^tags\s+nightly$", out, re.M)
    for heading in ("Parameters", "Artifacts", "Metrics (last values)"):
        assert re.search(rf"^{re.escape(heading)}\n  none$", out, re.M)


def test_show_json_parses_and_matches_the_store(tasks: Tasks) -> None:
    t = tasks.train
    data = json.loads(ok("tasks", "show", t.id, "--json"))
    assert data["task"]["id"] == t.id
    assert data["task"]["status"] == "completed"
    assert isinstance(data["task"]["script"], dict)
    params = {(p["section"], p["name"]): (p["value"], p["type"]) for p in data["parameters"]}
    assert params == {
        ("General", "lr"): ("0.01", "float"),
        ("General", "epochs"): ("10", "int"),
        ("General", "aug"): ("True", "bool"),
        ("Data", "path"): ("/data/train", "str"),
    }
    (art,) = get_backend().get_artifacts(t.id)
    assert [(a["name"], a["hash"], a["size"], a["url"]) for a in data["artifacts"]] == [
        ("stats", art.hash, art.size, art.url)
    ]
    loss = data["metrics"]["loss"]["train"]
    assert loss == {"last": 0.25, "min": 0.25, "max": 0.9, "iteration": 2}
    texts = [ln["text"] for ln in data["log"]]
    assert texts == ["epoch 0 loss 0.9", "epoch 1 loss 0.5", "epoch 2 loss 0.25"]
    assert data["log_total"] == 3


def test_show_accepts_a_unique_id_prefix(tasks: Tasks) -> None:
    out = ok("tasks", "show", tasks.evaluate.id[:8])
    assert out.splitlines()[0] == f"Task {tasks.evaluate.id}"
    # archived tasks are found by prefix too
    data = json.loads(ok("tasks", "show", tasks.prep.id[:6], "--json"))
    assert data["task"]["id"] == tasks.prep.id


def test_show_ambiguous_prefix_is_an_error(home: Path) -> None:
    backend = get_backend()
    ids = [f"abcdef{n:026x}" for n in (1, 2)]
    for tid in ids:
        backend.create_task(NewTask(name=f"task {tid[-1]}", project="p", id=tid))
    result = cli("tasks", "show", "abcdef")
    assert result.exit_code == 1
    assert result.stdout == ""
    msg = result.stderr
    assert msg.startswith("error: task id prefix 'abcdef' is ambiguous: it matches 2 tasks")
    assert ids[0] in msg and ids[1] in msg
    assert msg.count("\n") == 1
    # one more character decides
    assert ok("tasks", "show", ids[1][:-1] + "2").startswith(f"Task {ids[1]}")
    assert ok("tasks", "show", "abcdef" + "0" * 25 + "1").startswith(f"Task {ids[0]}")


@pytest.mark.parametrize("ref", ["0123456789abcdef0123456789abcdef", "feedbeef", "abc"])
def test_show_unknown_id_is_one_error_line(tasks: Tasks, ref: str) -> None:
    result = cli("tasks", "show", ref)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: task '{ref}' does not exist in this store")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    if len(ref) < cli_tasks.MIN_PREFIX:
        assert "at least 6 characters" in result.stderr


# -- version, help, formatting -------------------------------------------------------------------
def test_version() -> None:
    assert ok("version") == f"stepline {stepline.__version__}\n"


def test_help_lists_the_commands() -> None:
    out = ok("--help")
    assert "tasks" in out and "version" in out
    out = ok("tasks", "--help")
    assert "list" in out and "show" in out


def test_formatting_helpers() -> None:
    assert fmt_size(0) == "0 B"
    assert fmt_size(1023) == "1023 B"
    assert fmt_size(3712) == "3.6 KiB"
    assert fmt_size(5 * 1024**3) == "5.0 GiB"
    assert fmt_duration(None) == "-"
    assert fmt_duration(0.25) == "0.2s"
    assert fmt_duration(42) == "42s"
    assert fmt_duration(185) == "3m 05s"
    assert fmt_duration(2 * 3600 + 3 * 60) == "2h 03m"
    assert fmt_duration(28 * 3600) == "1d 04h"


# -- a real process ----------------------------------------------------------------------------
def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = run_env(home)
    for var in _TERMINAL_VARS:
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "stepline.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_in_a_real_process(tasks: Tasks, home: Path) -> None:
    t = tasks.train
    proc = run_cli(home, "tasks", "show", t.id[:10], "--log", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith(f"Task {t.id}\n")
    assert re.search(r"^\s+lr\s+0\.01\s+float$", proc.stdout, re.M)
    assert re.search(r"^\s+loss\s+train\s+0\.25\s+0\.25\s+0\.9\s+2$", proc.stdout, re.M)
    assert proc.stdout.rstrip().endswith("epoch 2 loss 0.25")

    proc = run_cli(home, "tasks", "list", "--json", "--project", "vision")
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in json.loads(proc.stdout)] == [tasks.evaluate.id, t.id]

    proc = run_cli(home, "tasks", "show", "deadbeefdeadbeef")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: task 'deadbeefdeadbeef' does not exist in this store")
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
