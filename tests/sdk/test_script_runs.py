"""Scripts using Task.init, run as real processes: first from code, then from the store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stepline.sdk.task import Task
from tests.conftest import run_env

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from stepline import Task

    task = Task.init(project_name="tests", task_name="train")
    params = task.connect({"lr": 0.1, "epochs": 3, "use_bias": True, "layers": [8, 4], "tag": "a"})
    task.upload_artifact("weights", np.arange(params["epochs"], dtype=float) * params["lr"])
    for i in range(params["epochs"]):
        task.get_logger().report_scalar("loss", "train", 1.0 / (i + 1), i)
    print("lr is", params["lr"])
    with open(sys.argv[1], "w") as f:
        json.dump({"task": task.id, "params": params,
                   "types": {k: type(v).__name__ for k, v in params.items()}}, f)
    if len(sys.argv) > 2 and sys.argv[2] == "fail":
        raise RuntimeError("boom in the script")
    """
)


def _run(
    script: Path, out: Path, home: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), str(out), *args],
        env=run_env(home, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return path


def test_clone_with_edited_parameters_runs_with_the_new_typed_values(
    home: Path, script: Path, tmp_path: Path
) -> None:
    first = _run(script, tmp_path / "first.json", home)
    assert first.returncode == 0, first.stderr
    original_id = json.loads((tmp_path / "first.json").read_text())["task"]

    original = Task.get_task(original_id)
    assert original.status == "completed"
    assert original.get_parameters(cast=True)["General/epochs"] == 3
    assert original.script["entry_point"].endswith("train.py")
    assert "Task.init" in original.script["content"]

    clone = Task.clone(original, name="train (edited)")
    assert clone.status == "created"
    assert clone.parent == original.id
    # a person edits values as text (e.g. in the UI); they keep their types
    clone.set_parameters({"General/lr": "0.5", "General/epochs": "5"}, __update=True)
    clone.set_parameter("General/use_bias", False)

    second = _run(script, tmp_path / "second.json", home, STEPLINE_TASK_ID=clone.id)
    assert second.returncode == 0, second.stderr
    result = json.loads((tmp_path / "second.json").read_text())
    assert result["task"] == clone.id
    assert result["params"] == {
        "lr": 0.5,
        "epochs": 5,
        "use_bias": False,
        "layers": [8, 4],
        "tag": "a",
    }
    assert result["types"] == {
        "lr": "float",
        "epochs": "int",
        "use_bias": "bool",
        "layers": "list",
        "tag": "str",
    }
    clone.reload()
    assert clone.status == "completed"
    weights = clone.artifacts["weights"].get()
    assert weights.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert clone.get_last_scalar_metrics()["loss"]["train"]["iteration"] == 4
    assert "lr is 0.5" in clone.get_reported_console_output()
    # the original run is untouched
    assert original.artifacts["weights"].get().tolist() == [0.0, 0.1, 0.2]
    assert original.get_parameters()["General/lr"] == "0.1"


def test_uncaught_exception_marks_the_task_failed_with_the_traceback(
    home: Path, script: Path, tmp_path: Path
) -> None:
    proc = _run(script, tmp_path / "out.json", home, "fail")
    assert proc.returncode == 1
    assert "boom in the script" in proc.stderr  # still printed to the terminal
    task = Task.get_task(json.loads((tmp_path / "out.json").read_text())["task"])
    assert task.status == "failed"
    assert "RuntimeError: boom in the script" in task.data.status_reason
    log = "\n".join(task.get_reported_console_output(10))
    assert "RuntimeError: boom in the script" in log


def test_sigterm_marks_the_task_stopped(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "wait.py"
    ready = tmp_path / "ready"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            from pathlib import Path
            from stepline import Task
            task = Task.init(project_name="tests", task_name="long")
            Path({str(ready)!r}).write_text(task.id)
            while True:
                time.sleep(0.05)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], env=run_env(home))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() or not ready.read_text():
            assert proc.poll() is None, "the script ended early"
            assert time.monotonic() < deadline, "the script never became ready"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert Task.get_task(ready.read_text()).status == "stopped"


def test_argparse_arguments_are_connected_and_overridden_from_the_store(
    home: Path, tmp_path: Path
) -> None:
    script = tmp_path / "cli.py"
    out = tmp_path / "out.json"
    script.write_text(
        textwrap.dedent(
            f"""
            import argparse, json
            from stepline import Task
            parser = argparse.ArgumentParser()
            parser.add_argument("--batch", type=int, default=32)
            parser.add_argument("--name", default="x")
            args = parser.parse_args()   # before Task.init, as many scripts do
            task = Task.init(project_name="tests", task_name="cli")
            json.dump({{"task": task.id, "batch": args.batch, "name": args.name}},
                      open({str(out)!r}, "w"))
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script), "--batch", "64"],
        env=run_env(home),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    first = json.loads(out.read_text())
    task = Task.get_task(first["task"])
    assert task.get_parameters(cast=True) == {"Args/batch": 64, "Args/name": "x"}

    clone = Task.clone(task)
    clone.set_parameter("Args/batch", "128")
    proc = subprocess.run(
        [sys.executable, str(script), "--batch", "64"],
        env=run_env(home, STEPLINE_TASK_ID=clone.id),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    second = json.loads(out.read_text())
    assert second == {"task": clone.id, "batch": 128, "name": "x"}
