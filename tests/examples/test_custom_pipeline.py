"""The custom pipeline example (examples/custom_pipeline): a random search whose trials are
clones of a template task, queued for real agents."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stepline.backend import get_backend
from stepline.sdk.task import Task
from tests.agentproc import start_agent
from tests.conftest import TIMEOUT, run_env

SEARCH = Path(__file__).resolve().parents[2] / "examples" / "custom_pipeline" / "search.py"
TEMPLATE = "custom pipeline: train"
BEST = re.compile(r"^best C: (\S+) \(validation accuracy ([\d.]+), task (\w+)\)$", re.M)

pytestmark = pytest.mark.slow


def run_search(home: Path, *args: str, ok: bool = True) -> str:
    """Run search.py from an empty folder; its output (it must exit 0 unless not ``ok``)."""
    folder = home.parent / "user"
    folder.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(SEARCH), *args],
        cwd=folder,
        env=run_env(home),
        capture_output=True,
        text=True,
        timeout=2 * TIMEOUT,
    )
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def searches() -> list[Task]:
    """The search tasks, newest first."""
    return Task.get_tasks(project_name="examples", task_name="^custom pipeline: search$")


def trials_of(search: Task) -> list[Task]:
    """The search's trials, in trial order."""
    found = Task.get_tasks(project_name="examples", task_filter={"parent": search.id})
    return sorted(found, key=lambda t: t.name)


def accuracy(trial: Task) -> float:
    return trial.get_last_scalar_metrics()["accuracy"]["validation"]["last"]


def test_search_with_local_agent(home: Path) -> None:
    out = run_search(home, "--trials", "3", "--local-agent")

    # a fresh store: the template was stored from train.py, with its local module
    assert f"no task {TEMPLATE!r}" in out
    [template] = Task.get_tasks(project_name="examples", task_name=f"^{re.escape(TEMPLATE)}$")
    assert template.status == "created"
    assert "Task.init(" in template.script["content"]
    assert "def load_split" in template.script["modules"]["data.py"]

    [search] = searches()
    assert search.status == "completed"
    assert search.task_type == "optimizer"
    trials = trials_of(search)
    assert [t.name for t in trials] == [f"{TEMPLATE} trial {i}" for i in range(3)]
    values = []
    for trial in trials:
        assert trial.status == "completed"
        runtime = trial.get_runtime_properties()
        assert runtime["_queue"] == "default"
        assert runtime["_agent"]
        params = trial.get_parameters(cast=True)
        values.append(params["General/C"])
        assert params["General/max_iter"] == 200  # the code's default, stored by connect()
        # the code ran with the C set on the clone, and saw the split of the local module
        result = trial.artifacts["result"].get()
        assert result["C"] == params["General/C"]
        assert result["accuracy"] == accuracy(trial)
        assert trial.artifacts["confusion_matrix"].get().sum() == 75  # half of 150 rows
    assert len(set(values)) == 3

    # the printed best C is the C of a trial with the highest stored accuracy
    [(best_c, best_acc, best_task)] = BEST.findall(out)
    top = max(accuracy(t) for t in trials)
    best = Task.get_task(task_id=best_task)
    assert best in trials
    assert accuracy(best) == top
    assert float(best_c) == best.get_parameters(cast=True)["General/C"]
    assert float(best_acc) == pytest.approx(top, abs=5e-5)
    assert search.artifacts["best"].get() == {"C": float(best_c), "accuracy": top, "task": best.id}
    assert len(search.artifacts["trials"].get()) == 3

    # the local agent was stopped (it unregistered) and ran all three trials
    assert get_backend().get_agents() == []
    assert len({t.get_runtime_properties()["_agent"] for t in trials}) == 1


def test_search_on_running_agent_reuses_template(home: Path) -> None:
    agent = start_agent(home, ["default"], name="cp-agent", extra=["--max-jobs", "2"])
    try:
        first_out = run_search(home, "--trials", "2")
        second_out = run_search(home, "--trials", "2", "--seed", "1")
    finally:
        assert agent.stop() == 0, agent.output()

    assert f"no task {TEMPLATE!r}" in first_out
    assert "no task" not in second_out
    assert len(Task.get_tasks(project_name="examples", task_name=f"^{re.escape(TEMPLATE)}$")) == 1
    second, first = searches()
    for search in (first, second):
        trials = trials_of(search)
        assert len(trials) == 2
        for trial in trials:
            assert trial.status == "completed"
            assert trial.get_runtime_properties()["_agent"].startswith("cp-agent-")
            assert 0 < accuracy(trial) <= 1
    c_of = {s.id: {t.get_parameters()["General/C"] for t in trials_of(s)} for s in (first, second)}
    assert c_of[first.id] != c_of[second.id]  # another seed, other values


def test_search_without_agent_times_out_and_dequeues(home: Path) -> None:
    out = run_search(home, "--trials", "2", "--timeout", "0.5", ok=False)
    assert "no result from trial 0" in out
    [search] = searches()
    assert search.status == "failed"
    trials = trials_of(search)
    assert len(trials) == 2
    # nothing is left on the queue for a later agent
    assert {t.status for t in trials} == {"created"}
    assert get_backend().queue_tasks("default") == []
