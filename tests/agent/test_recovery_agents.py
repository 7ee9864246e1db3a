"""Recovery when agents are involved, with real agent processes: an agent killed under a step
fails the step (and the run) with the cause, and a resume finishes the run; a controller killed
on its agent marks its run interrupted while its steps on other agents go on, and the resume
takes those steps over instead of starting them twice."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from stepline.backend.sql.store import SqlBackend
from stepline.core.status import TaskStatus
from stepline.pipeline.views import RunView
from tests.agentproc import start_agent
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

FAST_BEAT = ("--heartbeat", "0.2", "--timeout", "2")


@pytest.fixture(autouse=True)
def _fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)


def test_an_agent_killed_under_a_step_fails_the_run_and_a_resume_finishes_it(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    doomed = start_agent(home, ["default"], name="doomed", extra=FAST_BEAT, env=FAST)
    rescuer = None
    try:
        chain = Chain(tmp_path, home, n=4, hold=1, mode="queue")
        chain.start(**FAST)
        step_pid = chain.held_pid()
        doomed.kill()
        wait_until(lambda: gone(step_pid), "the step's process to die with its agent")
        code, out = chain.wait()  # the pipeline notices the dead agent and fails
        assert code == 3, out
        run_id = run_ids(backend)[0]
        run = backend.get_task(run_id)
        assert run.status == TaskStatus.failed
        assert "s1" in run.status_reason and "agent doomed" in run.status_reason
        first = step_tasks(backend, run_id)
        lost = backend.get_task(first["s1"])
        assert lost.status == TaskStatus.failed and "heartbeat" in lost.status_reason

        chain.release()
        rescuer = start_agent(home, ["default"], name="rescuer", extra=FAST_BEAT, env=FAST)
        out = stepline(home, "pipelines", "resume", run_id, cwd=tmp_path, **FAST)
        assert "1 step(s) reused" in out and "completed" in out, out
        assert chain.executions() == {0: 1, 1: 2, 2: 1, 3: 1}
        new_id = run_ids(backend)[-1]
        assert step_tasks(backend, new_id)["s0"] == first["s0"]
        assert len(new_step_tasks(backend, new_id)) == 3
    finally:
        doomed.kill()
        if rescuer is not None:
            rescuer.stop()


def test_a_controller_killed_on_its_agent_is_interrupted_and_its_resume_takes_over_its_steps(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    services = start_agent(home, ["services"], name="services", extra=FAST_BEAT, env=FAST)
    workers = start_agent(home, ["default"], name="worker", extra=FAST_BEAT, env=FAST)
    try:
        chain = Chain(tmp_path, home, n=4, hold=1, mode="services")
        chain.start(**FAST)
        assert chain.wait()[0] == 0  # queued the controller and left
        step_pid = chain.held_pid()
        run_id = run_ids(backend)[0]
        runtime = backend.get_runtime(run_id)
        assert runtime["_queue"] == "services"
        controller_pid = int(json.loads(runtime["_controller"])["pid"])
        first = step_tasks(backend, run_id)
        os.kill(controller_pid, signal.SIGKILL)

        def interrupted() -> bool:
            rec = backend.get_task(run_id)
            return rec.status == TaskStatus.stopped and rec.status_message == "interrupted"

        wait_until(interrupted, "the controller's agent to mark its run interrupted")
        assert "on agent services" in backend.get_task(run_id).status_reason
        assert "SIGKILL" in backend.get_task(run_id).status_reason
        # its step on the other agent goes on
        held = backend.get_task(first["s1"])
        assert held.status == TaskStatus.in_progress and not gone(step_pid)

        # resumed where it ran (services); the running step is taken over, not started again
        out = stepline(home, "pipelines", "resume", run_id, cwd=tmp_path, **FAST)
        assert "queued on services" in out, out
        new_id = run_ids(backend)[-1]

        def following() -> bool:
            try:
                steps = {s.name: s for s in RunView.load(backend, backend.get_task(new_id)).steps}
            except Exception:
                return False
            return "s1" in steps and steps["s1"].status == "running"

        wait_until(following, "the resumed run to follow the running step")
        assert step_tasks(backend, new_id)["s1"] == first["s1"]
        chain.release()
        wait_until(
            lambda: backend.get_task(new_id).status == TaskStatus.completed,
            "the resumed run to complete",
        )
        assert chain.executions() == {0: 1, 1: 1, 2: 1, 3: 1}  # nothing ran twice
        again = step_tasks(backend, new_id)
        assert again["s0"] == first["s0"] and again["s1"] == first["s1"]
        assert len(new_step_tasks(backend, new_id)) == 2  # s2 and s3
        assert services.proc.poll() is None and workers.proc.poll() is None
    finally:
        services.stop()
        workers.stop()


def test_a_hung_step_on_an_agent_is_killed_at_its_time_limit_with_its_children(
    home: Path, backend: SqlBackend, tmp_path: Path
) -> None:
    agent = start_agent(home, ["default"], name="worker", extra=FAST_BEAT, env=FAST)
    try:
        ok, pids, task_id = hung_pipeline(tmp_path, local=False)
        assert ok is False
        rec = backend.get_task(task_id)
        assert rec.status == TaskStatus.failed and "time limit of 2 s" in rec.status_reason
        for pid in pids:  # SIGTERM is ignored: both end by SIGKILL after the grace period
            wait_until(lambda pid=pid: gone(pid), f"process {pid} to be killed")
        assert agent.proc.poll() is None
    finally:
        agent.stop()
