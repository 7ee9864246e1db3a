"""Resume and recovery with real processes: a controller or a step killed with SIGKILL, then
resumed (nothing that completed runs again: execution logs, task ids and counts are checked);
reruns from a step with new values; write failures during an artifact upload; a store locked
by another process; dead controllers found by their heartbeats."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepline.backend.sql.store import SqlBackend
from stepline.core.errors import NotFoundError, ValidationError
from stepline.core.records import ConfigObject, NewTask, TaskFilter
from stepline.core.status import TaskStatus, TaskTypes
from stepline.pipeline.actions import abort_run
from stepline.pipeline.recovery import RT_REUSE, reap_runs, resume_run
from stepline.pipeline.views import RunView
from tests.faults import (
    FAST,
    Chain,
    gone,
    hung_pipeline,
    new_step_tasks,
    run_ids,
    step_tasks,
    stepline,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)


def interrupted(backend: SqlBackend, run_id: str) -> bool:
    """Look for dead controllers (as the command line and agents do); whether ``run_id`` is
    now marked interrupted."""
    reap_runs(backend)
    rec = backend.get_task(run_id)
    return rec.status == TaskStatus.stopped and rec.status_message == "interrupted"


def the_run(backend: SqlBackend) -> str:
    ids = run_ids(backend)
    assert len(ids) == 1, ids
    return ids[0]


def resume_here(home: Path, chain: Chain, run_id: str, *args: str) -> str:
    """Resume through the command line (run here); the new run's id."""
    out = stepline(home, "pipelines", "resume", run_id, *args, cwd=chain.folder, **FAST)
    assert f"resuming run {run_id} as run " in out, out
    new_id = out.split(f"resuming run {run_id} as run ", 1)[1].split()[0]
    assert f"run {new_id}: completed" in out, out
    return new_id


# -- the controller killed mid-run ---------------------------------------------------------------
@pytest.mark.parametrize("mode", ["local", "debug"])
def test_a_killed_controller_is_interrupted_and_its_resume_runs_only_the_rest(
    home: Path, backend: SqlBackend, tmp_path: Path, mode: str
) -> None:
    chain = Chain(tmp_path, home, n=8, hold=4, mode=mode)
    chain.start(**FAST)
    step_pid = chain.held_pid()
    chain.kill()
    run_id = the_run(backend)
    first = step_tasks(backend, run_id)

    wait_until(lambda: interrupted(backend, run_id), "the run to be marked interrupted")
    assert "no longer running" in backend.get_task(run_id).status_reason
    # no step lives on: the local step's process was ended (debug: it died with the thread)
    wait_until(lambda: gone(step_pid), "the held step's process to end")
    held = backend.get_task(first["s4"])
    assert held.status == TaskStatus.stopped
    assert held.status_message == "interrupted"
    view = RunView.load(backend, backend.get_task(run_id))
    assert {s.name: s.status for s in view.steps}["s5"] == "skipped"

    chain.release()
    new_id = resume_here(home, chain, run_id)

    # every step ran exactly once, but the one killed mid-way: twice
    assert chain.executions() == {i: 2 if i == 4 else 1 for i in range(8)}
    again = step_tasks(backend, new_id)
    assert all(again[f"s{i}"] == first[f"s{i}"] for i in range(4)), "completed steps reused"
    assert len(new_step_tasks(backend, new_id)) == 4  # s4..s7, nothing more
    resumed = RunView.load(backend, backend.get_task(new_id))
    assert {s.name: s.status for s in resumed.steps} == {
        **{f"s{i}": "cached" for i in range(4)},
        **{f"s{i}": "completed" for i in range(4, 8)},
    }
    assert resumed.resume_of == run_id
    assert RunView.load(backend, backend.get_task(run_id)).resumed_by == [new_id]
    assert backend.get_task(new_id).status == TaskStatus.completed
    # the last step's result is the sum of the whole chain
    assert _returned(backend, again["s7"]) == sum(range(8))


def _returned(backend: SqlBackend, task_id: str) -> int:
    values = {p.name: p.value for p in backend.get_params(task_id) if p.section == "return"}
    return int(values["return"])


def test_a_run_interrupted_after_50_of_100_steps_resumes_exactly_the_remaining_50(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    chain = Chain(tmp_path, home, n=100, hold=50, mode="debug")
    chain.start(**FAST)
    chain.held_pid()
    chain.kill()
    run_id = the_run(backend)
    first = step_tasks(backend, run_id)
    done = [n for n, t in first.items() if backend.get_task(t).status == TaskStatus.completed]
    assert sorted(done) == sorted(f"s{i}" for i in range(50))
    wait_until(lambda: interrupted(backend, run_id), "the run to be marked interrupted")

    chain.release()
    new_id = resume_here(home, chain, run_id)

    counts = chain.executions()
    assert [counts[i] for i in range(100)] == [1] * 50 + [2] + [1] * 49
    assert len(new_step_tasks(backend, new_id)) == 50
    again = step_tasks(backend, new_id)
    assert [again[f"s{i}"] for i in range(50)] == [first[f"s{i}"] for i in range(50)]
    assert not set(again[f"s{i}"] for i in range(50, 100)) & set(first.values())
    assert _returned(backend, again["s99"]) == sum(range(100))


# -- a step killed on its own ---------------------------------------------------------------------
def test_a_step_killed_with_sigkill_fails_the_run_with_the_cause_and_resume_completes_it(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    chain = Chain(tmp_path, home, n=5, hold=2, mode="local")
    chain.start(**FAST)
    os.kill(chain.held_pid(), signal.SIGKILL)
    code, out = chain.wait()
    assert code == 3, out
    run_id = the_run(backend)
    run = backend.get_task(run_id)
    assert run.status == TaskStatus.failed
    assert "s2" in run.status_reason and "SIGKILL" in run.status_reason
    first = step_tasks(backend, run_id)
    killed = backend.get_task(first["s2"])
    assert killed.status == TaskStatus.failed and "SIGKILL" in killed.status_reason
    assert "s3" not in first  # never started

    chain.release()
    new_id = resume_here(home, chain, run_id)
    assert chain.executions() == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1}
    assert len(new_step_tasks(backend, new_id)) == 3
    assert _returned(backend, step_tasks(backend, new_id)["s4"]) == sum(range(5))


# -- rerun from a step ----------------------------------------------------------------------------
def test_rerun_from_a_step_with_a_new_value_reuses_the_steps_before_it(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    chain = Chain(tmp_path, home, n=5, hold=-1, mode="local")
    chain.start(**FAST)
    assert chain.wait()[0] == 0
    run_id = the_run(backend)
    first = step_tasks(backend, run_id)

    new_id = resume_here(home, chain, run_id, "--from", "s2", "--set", "i=10")
    # s0 and s1 reused; s2 (with i=10) and everything after it ran again
    assert chain.executions() == {0: 1, 1: 1, 2: 1, 3: 2, 4: 2, 10: 1}
    again = step_tasks(backend, new_id)
    assert again["s0"] == first["s0"] and again["s1"] == first["s1"]
    assert {again[f"s{i}"] for i in range(2, 5)}.isdisjoint(first.values())
    assert _returned(backend, again["s4"]) == 0 + 1 + 10 + 3 + 4
    params = {p.key: p for p in backend.get_params(again["s2"])}
    assert params["kwargs/i"].value == "10" and params["kwargs/i"].type == "int"

    # without new values the chosen steps run again even though their cache would hit
    third = resume_here(home, chain, new_id, "--from", "s4")
    assert len(new_step_tasks(backend, third)) == 1
    assert chain.executions()[4] == 3


def test_bad_resumes_are_refused_before_anything_is_created(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    chain = Chain(tmp_path, home, n=3, hold=-1, mode="local")
    chain.start(**FAST)
    assert chain.wait()[0] == 0
    run_id = the_run(backend)
    tasks_before = len(backend.find_tasks(TaskFilter(archived=None)))

    with pytest.raises(ValidationError, match="completed, there is nothing to resume"):
        resume_run(backend, run_id)
    with pytest.raises(ValidationError, match=r"no step 'nope'; its steps: s0, s1, s2"):
        resume_run(backend, run_id, from_step="nope")
    with pytest.raises(ValidationError, match=r"kwargs/i: 'ten' is not a value of its type, int"):
        resume_run(backend, run_id, from_step="s1", values={"i": "ten"})
    with pytest.raises(ValidationError, match=r"no argument 'j'; its arguments: .*\bi\b"):
        resume_run(backend, run_id, from_step="s1", values={"j": "1"})
    with pytest.raises(ValidationError, match="need the step they are for"):
        resume_run(backend, run_id, values={"i": "1"})
    with pytest.raises(NotFoundError, match="queue 'nowhere' does not exist"):
        resume_run(backend, run_id, from_step="s1", queue="nowhere")
    out = stepline(home, "pipelines", "resume", run_id, "--from", "s9", check=False)
    assert "no step 's9'" in out
    # a run that is still running
    running = backend.create_task(
        NewTask(name="live", project="recovery", type=str(TaskTypes.controller),
                status=TaskStatus.in_progress,
                configs=[ConfigObject("Pipeline", json.dumps({"nodes": {}}), "json")],
                runtime={"_heartbeat": str(time.time())})
    )  # fmt: skip
    with pytest.raises(ValidationError, match=r"is in_progress \(its controller was heard from"):
        resume_run(backend, running.id)
    assert len(backend.find_tasks(TaskFilter(archived=None))) == tasks_before + 1


# -- a decorator pipeline -------------------------------------------------------------------------
DECORATED = """
import os
import sys
from stepline import PipelineDecorator

LOG, FLAG = sys.argv[1], sys.argv[2]


@PipelineDecorator.component(return_values=["value"], cache=False)
def produce(i: int, log: str) -> int:
    with open(log, "a") as fh:
        fh.write(f"produce {i}\\n")
    return i * i


@PipelineDecorator.component(return_values=["total"], cache=False)
def combine(values: list, log: str, flag: str) -> int:
    import os

    with open(log, "a") as fh:
        fh.write("combine\\n")
    if os.path.exists(flag):
        raise RuntimeError("the flag is up")
    return sum(values)


@PipelineDecorator.pipeline(name="squares", project="recovery")
def squares(n: int = 4) -> int:
    parts = [produce(i, LOG) for i in range(n)]
    return combine(parts, LOG, FLAG)


if __name__ == "__main__":
    PipelineDecorator.run_locally()
    try:
        print("total", squares())
    except Exception as exc:
        print("failed:", exc)
        sys.exit(3)
"""


def test_a_decorator_pipeline_resumes_without_running_its_finished_components_again(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.conftest import run_env

    script = tmp_path / "squares.py"
    script.write_text(DECORATED)
    log, flag = tmp_path / "log", tmp_path / "flag"
    flag.touch()
    done = subprocess.run(
        [sys.executable, str(script), str(log), str(flag)],
        cwd=tmp_path, env=run_env(home, **FAST), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    run_id = the_run(backend)
    assert backend.get_task(run_id).status == TaskStatus.failed
    flag.unlink()

    out = stepline(home, "pipelines", "resume", run_id, cwd=tmp_path, **FAST)
    assert "4 step(s) reused" in out and "completed" in out, out
    lines = log.read_text().splitlines()
    assert sorted(lines) == sorted([f"produce {i}" for i in range(4)] + ["combine"] * 2)
    new_id = run_ids(backend)[-1]
    statuses = {s.name: s.status for s in RunView.load(backend, backend.get_task(new_id)).steps}
    assert sorted(statuses.values()) == ["cached"] * 4 + ["completed"]
    combine = step_tasks(backend, new_id)["combine"]
    total = next(p for p in backend.get_params(combine) if p.key == "return/total")
    assert total.value == str(sum(i * i for i in range(4)))


# -- storage faults -------------------------------------------------------------------------------
FULL_DISK = """
import sys
from stepline import PipelineController



def write_big(size: int, how: str, limit_file: str):
    import os
    import resource
    import signal

    if os.path.exists(limit_file):  # the disk "fills up" after LIMIT bytes of any one file
        limit = int(open(limit_file).read())
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    data = bytes(range(256)) * (size // 256)
    if how == "upload":
        from stepline import Task

        Task.current_task().upload_artifact("big", data, wait_on_upload=True)
        return len(data)
    return data


def after(value) -> int:
    return 1


pipe = PipelineController(name="disk", project="recovery")
pipe.add_function_step("writer", write_big, function_kwargs={"size": 8 << 20, "how": sys.argv[2],
                       "limit_file": sys.argv[1]}, function_return=["big_value"])
pipe.add_function_step("after", after, function_kwargs={"value": "${writer.big_value}"},
                       function_return=["one"], parents=["writer"])
sys.exit(0 if pipe.start_locally(run_pipeline_steps_locally=True) else 3)
"""


@pytest.mark.parametrize("how", ["upload", "return"])
def test_a_write_failure_during_an_artifact_upload_leaves_no_partial_artifact(
    home: Path, backend: SqlBackend, tmp_path: Path, how: str
) -> None:
    import subprocess
    import sys

    from tests.conftest import run_env

    script = tmp_path / "disk.py"
    script.write_text(FULL_DISK)
    limit = 4 << 20  # beyond the store's own files, short of the 8 MiB artifact
    limit_file = tmp_path / "limit"
    limit_file.write_text(str(limit))
    done = subprocess.run(
        [sys.executable, str(script), str(limit_file), how],
        cwd=tmp_path, env=run_env(home, **FAST), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    run_id = the_run(backend)
    writer = backend.get_task(step_tasks(backend, run_id)["writer"])
    assert writer.status == TaskStatus.failed
    assert "File too large" in writer.status_reason, writer.status_reason
    names = {a.name for a in backend.get_artifacts(writer.id)}
    assert not names & {"big", "big_value"}, names
    # nothing half-written under the storage root: no leftover part, no file of 4 MiB
    stored = [p for p in (home / "artifacts").rglob("*") if p.is_file()]
    assert not [p for p in stored if p.name.endswith(".part") or p.stat().st_size >= limit]
    assert backend.get_task(run_id).status == TaskStatus.failed

    # the same step without the limit: resumed, it stores the whole artifact
    limit_file.unlink()
    out = stepline(home, "pipelines", "resume", run_id, cwd=tmp_path, **FAST)
    assert "completed" in out, out
    new_id = run_ids(backend)[-1]
    again = backend.get_task(step_tasks(backend, new_id)["writer"])
    assert again.status == TaskStatus.completed
    big = next(a for a in backend.get_artifacts(again.id) if a.name in ("big", "big_value"))
    path = backend.artifact_local_path(big)
    assert Path(path).stat().st_size >= 8 << 20 and big.size >= 8 << 20


def test_a_pipeline_waits_out_a_store_locked_by_another_process(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    chain = Chain(tmp_path, home, n=3, hold=-1, mode="local")
    db = home / "stepline.db"
    assert db.exists()
    locker = sqlite3.connect(db, timeout=5, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    released = threading.Event()
    at: list[float] = []

    def release_later() -> None:
        released.wait(1.5)  # the fault lasts 1.5 s
        at.append(time.time())
        locker.execute("COMMIT")
        locker.close()

    holder = threading.Thread(target=release_later)
    holder.start()
    try:
        chain.start(**FAST)
        code, out = chain.wait()
    finally:
        holder.join()
    assert code == 0, out
    run_id = the_run(backend)
    assert backend.get_task(run_id).status == TaskStatus.completed
    first = backend.get_task(step_tasks(backend, run_id)["s0"])
    assert first.started is not None and first.started >= at[0]  # it did wait for the lock
    assert chain.executions() == {0: 1, 1: 1, 2: 1}


# -- finding dead controllers ---------------------------------------------------------------------
def _running_run(backend: SqlBackend, **runtime: str) -> str:
    rec = backend.create_task(
        NewTask(name="run", project="recovery", type=str(TaskTypes.controller),
                status=TaskStatus.in_progress, runtime=dict(runtime),
                configs=[ConfigObject("Pipeline", json.dumps({"nodes": {}}), "json")])
    )  # fmt: skip
    return rec.id


def test_heartbeats_tell_dead_controllers_from_live_ones(
    home: Path, backend: SqlBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    monkeypatch.setenv("STEPLINE_RUN_HEARTBEAT", "1")
    now = time.time()
    space = os.readlink("/proc/self/ns/pid")

    def on(host: str, pid: int, pidns: str = space) -> str:
        return json.dumps({"host": host, "pid": pid, "pidns": pidns})

    ended = subprocess.Popen(["true"])
    ended.wait()
    here = socket.gethostname()
    live = _running_run(backend, _heartbeat=str(now - 1), _controller=on(here, os.getpid()))
    silent = _running_run(backend, _heartbeat=str(now - 60), _controller=on("other-host", 1))
    recent = _running_run(backend, _heartbeat=str(now - 3), _controller=on("other-host", 1))
    dead_here = _running_run(backend, _heartbeat=str(now - 3), _controller=on(here, ended.pid))
    # the same host name but another pid namespace (a container): its pids are not ours
    contained = _running_run(
        backend, _heartbeat=str(now - 3), _controller=on(here, ended.pid, "pid:[1]")
    )
    never = _running_run(backend, _pipeline_name="recovery/run")  # no heartbeat yet
    on_agent = _running_run(backend, _pipeline_name="recovery/run", _agent="a1")
    not_a_pipeline = _running_run(backend)  # a task of type controller, no pipeline
    step = backend.create_task(
        NewTask(name="step", project="recovery", parent=silent, status=TaskStatus.in_progress)
    )

    reaped = dict(reap_runs(backend, now=now))
    assert set(reaped) == {silent, dead_here}
    assert "sent no heartbeat for 60 s" in reaped[silent] and "other-host" in reaped[silent]
    assert "no longer running" in reaped[dead_here]
    assert backend.get_task(silent).status_message == "interrupted"
    assert backend.get_task(step.id).status == TaskStatus.stopped  # died with its controller
    assert reap_runs(backend, now=now) == []  # once

    # much later: the silent ones, and the run that never sent a heartbeat
    later = dict(reap_runs(backend, now=now + 400))
    assert set(later) == {live, recent, contained, never}
    assert "never sent a heartbeat" in later[never]
    for run_id in (on_agent, not_a_pipeline):
        assert backend.get_task(run_id).status == TaskStatus.in_progress


def test_a_resume_records_what_it_reuses(home: Path, backend: SqlBackend, tmp_path: Path) -> None:
    chain = Chain(tmp_path, home, n=3, hold=1, mode="local")
    chain.start(**FAST)
    chain.held_pid()
    chain.kill()
    run_id = the_run(backend)
    first = step_tasks(backend, run_id)
    wait_until(lambda: interrupted(backend, run_id), "the run to be marked interrupted")
    attempt = resume_run(backend, run_id)
    assert attempt.status == TaskStatus.created and attempt.parent == run_id
    assert json.loads(backend.get_runtime(attempt.id)[RT_REUSE]) == {"s0": first["s0"]}
    # aborting the ended run leaves its resume (a run of its own) alone
    assert abort_run(backend, run_id) == []
    assert backend.get_task(attempt.id).status == TaskStatus.created
    chain.release()


# -- time limits that hold ------------------------------------------------------------------------
def test_a_hung_step_is_killed_at_its_time_limit_with_a_child_that_left_its_group(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    ok, pids, task_id = hung_pipeline(tmp_path)
    assert ok is False
    rec = backend.get_task(task_id)
    assert rec.status == TaskStatus.failed and "time limit of 2 s" in rec.status_reason
    for pid in pids:  # SIGTERM is ignored: both end by SIGKILL after the grace period
        wait_until(lambda pid=pid: gone(pid), f"process {pid} to be killed")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB filesystem (tmpfs), where the system lets this process mount one."""
    import subprocess

    folder = tmp_path / "small"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_during_an_upload_fails_the_step_and_leaves_the_disk_as_it_was(
    home: Path, tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from stepline.backend import get_backend, reset_backend
    from tests.conftest import run_env

    storage = small_disk / "artifacts"
    monkeypatch.setenv("STEPLINE_STORAGE", str(storage))
    reset_backend()
    backend = get_backend()
    script = tmp_path / "disk.py"
    script.write_text(FULL_DISK)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "no-limit"), "upload"],
        cwd=tmp_path, env=run_env(home, **FAST), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    run_id = the_run(backend)
    writer = backend.get_task(step_tasks(backend, run_id)["writer"])
    assert writer.status == TaskStatus.failed
    assert "No space left on device" in writer.status_reason, writer.status_reason
    assert "big" not in {a.name for a in backend.get_artifacts(writer.id)}
    left = [p for p in storage.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in left) < 1 << 20, left  # no partial upload kept
    assert os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize > 5 << 20


# -- a bug fixed, then resumed --------------------------------------------------------------------
BUGGY = """
import sys
from stepline import PipelineController

LOG = sys.argv[1]


def load(log: str) -> int:
    with open(log, "a") as fh:
        fh.write("load\\n")
    return 20


def transform(value: int, log: str) -> int:
    with open(log, "a") as fh:
        fh.write("transform\\n")
    raise ValueError("a bug")  # BUG
    return value + 1


def report(value: int, log: str) -> int:
    with open(log, "a") as fh:
        fh.write("report\\n")
    return value * 2


pipe = PipelineController(name="fixed", project="recovery")
pipe.add_function_step("load", load, function_kwargs={"log": LOG}, function_return=["v"])
pipe.add_function_step("transform", transform, function_kwargs={"value": "${load.v}", "log": LOG},
                       function_return=["v"], parents=["load"])
pipe.add_function_step("report", report, function_kwargs={"value": "${transform.v}", "log": LOG},
                       function_return=["v"], parents=["transform"])
sys.exit(0 if pipe.start_locally(run_pipeline_steps_locally=True) else 3)
"""


def test_a_step_fixed_after_its_run_failed_runs_the_fix_when_the_run_is_resumed(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.conftest import run_env

    script, log = tmp_path / "fixed.py", tmp_path / "log"
    script.write_text(BUGGY)
    done = subprocess.run(
        [sys.executable, str(script), str(log)],
        cwd=tmp_path, env=run_env(home, **FAST), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    run_id = the_run(backend)
    assert "a bug" in backend.get_task(run_id).status_reason

    script.write_text(BUGGY.replace('raise ValueError("a bug")  # BUG', "pass"))
    out = stepline(home, "pipelines", "resume", run_id, cwd=tmp_path, **FAST)
    assert "completed" in out, out
    assert log.read_text().split() == ["load", "transform", "transform", "report"]
    new_id = run_ids(backend)[-1]
    report = step_tasks(backend, new_id)["report"]
    assert next(p.value for p in backend.get_params(report) if p.key == "return/v") == "42"


# -- a script step in debug mode (a process of its own) when the controller dies ----------------
HELD_SCRIPT = """
import os
import sys
import time
from stepline import Task

task = Task.init(project_name="recovery", task_name="held")
folder = task.connect({"folder": ""})["folder"]
with open(os.path.join(folder, "held.tmp"), "w") as fh:
    fh.write(str(os.getpid()))
os.replace(os.path.join(folder, "held.tmp"), os.path.join(folder, "held"))
while True:
    time.sleep(0.05)
"""

CONTROLLER_OF_SCRIPT = """
import sys
from stepline import PipelineController

pipe = PipelineController(name="scripted", project="recovery")
pipe.add_step("held", base_task_id=sys.argv[1], parameter_override={"General/folder": sys.argv[2]})
pipe.start_locally(in_process=True)
"""


def test_a_script_step_does_not_outlive_its_killed_debug_mode_controller(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from stepline import Task
    from tests.conftest import run_env

    (tmp_path / "held.py").write_text(HELD_SCRIPT)
    (tmp_path / "controller.py").write_text(CONTROLLER_OF_SCRIPT)
    base = Task.create(project_name="recovery", task_name="held", script=str(tmp_path / "held.py"))
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "controller.py"), base.id, str(tmp_path)],
        cwd=tmp_path, env=run_env(home, **FAST),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    held = tmp_path / "held"
    wait_until(held.exists, "the script step to start")
    pid = int(held.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    wait_until(lambda: gone(pid), "the script step to end with its controller")
    run_id = the_run(backend)
    step = backend.get_task(step_tasks(backend, run_id)["held"])
    wait_until(lambda: backend.get_task(step.id).status != TaskStatus.in_progress, "its end")
    assert backend.get_task(step.id).status == TaskStatus.stopped
    wait_until(lambda: interrupted(backend, run_id), "the run to be marked interrupted")
