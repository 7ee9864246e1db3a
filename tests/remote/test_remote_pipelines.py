"""Pipelines in remote mode, end to end: real ``stepline agent`` processes run the steps (and,
for ``pipe.start()`` and decorator pipelines in the default mode, the controller itself).

Each test has its own home and its own agents, each in an empty folder of its own, so the
agents can only run the code stored on the tasks. Which agent ran a task, and from which queue,
is read from the runtime properties ``_agent`` and ``_queue`` that claiming a task sets. Every
wait polls the store with a deadline; held steps wait for a marker file the test writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepline import Task
from stepline.backend import get_backend
from stepline.core.status import TaskTypes
from stepline.pipeline.controller import PipelineController
from stepline.pipeline.dag import NodeStatus
from stepline.pipeline.decorator import PipelineDecorator
from stepline.pipeline.executors import QueueExecutor
from tests.agentproc import AgentProc, start_agent
from tests.conftest import run_env
from tests.remote import remote_steps as steps

pytestmark = pytest.mark.slow

PROJECT = steps.PROJECT
SCRIPTS = Path(__file__).parent / "scripts"
DEADLINE = 60.0  # seconds any awaited event may take before a test gives up
FINAL = {"completed", "failed", "stopped", "closed", "published"}
TASK_ID = re.compile(r"\b([0-9a-f]{32})\b")


# -- helpers ---------------------------------------------------------------------------------
class Fleet:
    """The agents of one test; their consoles are shown when a wait times out."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.agents: dict[str, AgentProc] = {}

    def start(self, name: str, *queues: str, services: bool = False) -> AgentProc:
        """Start an agent and wait until it registered (and so created its queues)."""
        extra = ["--poll", "0.02", *(["--services-mode"] if services else [])]
        agent = start_agent(self.home, queues, name=name, extra=extra)
        self.agents[name] = agent
        wait_until(
            lambda: any(a.name == name for a in get_backend().get_agents()),
            f"agent {name} to register", self,
        )  # fmt: skip
        return agent

    def consoles(self) -> str:
        return "\n".join(f"--- agent {n}:\n{a.output()}" for n, a in self.agents.items())

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()


@pytest.fixture
def fleet(home: Path) -> Iterator[Fleet]:
    agents = Fleet(home)
    try:
        yield agents
    finally:
        agents.stop()


@pytest.fixture(autouse=True)
def remote_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decorator pipelines start in the default (remote) mode, whatever ran before."""
    monkeypatch.setattr(PipelineDecorator, "_mode_default", None)
    monkeypatch.setattr(PipelineDecorator, "_default_queue_all", None)


def wait_until(
    predicate: Callable[[], Any], what: str, fleet: Fleet | None = None, timeout: float = DEADLINE
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            extra = f"\n{fleet.consoles()}" if fleet is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(0.02)


def status_of(task_id: Any) -> str:
    assert isinstance(task_id, str), f"not a task id: {task_id!r}"
    return Task.get_task(task_id).status


def runtime_of(task_id: str) -> dict[str, str]:
    return Task.get_task(task_id).get_runtime_properties()


def params_of(task_id: Any) -> dict[str, Any]:
    assert isinstance(task_id, str), f"not a task id: {task_id!r}"
    return Task.get_task(task_id).get_parameters(cast=True)


def log_of(task_id: str) -> str:
    return "\n".join(Task.get_task(task_id).get_reported_console_output(number_of_reports=100))


def wait_final(task_id: str, fleet: Fleet) -> str:
    """The task's status once it ended."""
    wait_until(lambda: status_of(task_id) in FINAL, f"task {task_id} to end", fleet)
    return status_of(task_id)


def nodes_of(run_id: str) -> dict[str, dict[str, Any]]:
    """The step states stored on the run's task (runtime ``_node/STEP``)."""
    return {
        key.split("/", 1)[1]: json.loads(value)
        for key, value in runtime_of(run_id).items()
        if key.startswith("_node/")
    }


def ran_on(task_id: Any, agent: str, queue: str) -> None:
    """The task was claimed by the agent named ``agent`` from ``queue``."""
    assert isinstance(task_id, str), f"not a task id: {task_id!r}"
    rt = runtime_of(task_id)
    assert rt.get("_queue") == queue, (task_id, rt)
    assert rt.get("_agent", "").startswith(agent + "-"), (task_id, rt)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:  # gone, or going while /proc is read
        return False


def launch_script(home: Path, tmp_path: Path, script: str) -> str:
    """Run a pipeline script that sends itself to ``services``: it exits 0 at once, naming its
    task. The script file is removed then: the agent must run the code stored on the task."""
    path = tmp_path / script
    shutil.copy(SCRIPTS / script, path)
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=run_env(home), capture_output=True,
        text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = TASK_ID.search(proc.stdout)
    assert found, proc.stdout
    path.unlink()
    return found.group(1)


def cli(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepline.cli.main", *args], cwd=cwd, env=run_env(home),
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip


def controllers() -> list[str]:
    return [t.id for t in Task.get_tasks(project_name=PROJECT) if t.task_type == "controller"]


def new_pipe(name: str) -> PipelineController:
    return PipelineController(name=name, project=PROJECT, version="1.0.0")


# -- the whole pipeline on agents ------------------------------------------------------------
def test_controller_script_runs_on_services_agent_and_steps_on_their_queues(
    home: Path, tmp_path: Path, fleet: Fleet
) -> None:
    fleet.start("svc", "services", services=True)
    fleet.start("work", "default", "cpu")
    run_id = launch_script(home, tmp_path, "controller_pipeline.py")

    assert wait_final(run_id, fleet) == "completed", log_of(run_id)
    controller = Task.get_task(run_id)
    assert controller.task_type == str(TaskTypes.controller)
    ran_on(run_id, "svc", "services")
    assert controller.get_parameters(cast=True)["Args/n"] == 4
    nodes = nodes_of(run_id)
    assert {n: s["status"] for n, s in nodes.items()} == {
        "make": "completed", "total": "completed", "describe": "completed"
    }  # fmt: skip
    queues = {"make": "default", "total": "cpu", "describe": "default"}
    for name, queue in queues.items():
        task_id = nodes[name]["task"]
        assert status_of(task_id) == "completed"
        ran_on(task_id, "work", queue)
        assert runtime_of(task_id)["_pipeline_id"] == run_id
    make, total, describe = (nodes[n]["task"] for n in queues)
    assert params_of(make)["kwargs/n"] == 4
    assert Task.get_task(make).artifacts["data"].get() == {"values": [0, 1, 2, 3], "n": 4}
    assert params_of(total)["return/value"] == 60
    assert params_of(describe)["return/text"] == "4:60"


def test_decorator_script_runs_on_services_agent_and_components_on_their_queues(
    home: Path, tmp_path: Path, fleet: Fleet
) -> None:
    fleet.start("svc", "services", services=True)
    fleet.start("work", "default", "cpu")
    run_id = launch_script(home, tmp_path, "decorator_pipeline.py")

    assert wait_final(run_id, fleet) == "completed", log_of(run_id)
    ran_on(run_id, "svc", "services")
    params = params_of(run_id)
    assert params["Args/n"] == 5
    assert params["return/result"] == "5:100|101"
    nodes = nodes_of(run_id)
    assert {n: s["status"] for n, s in nodes.items()} == {
        "make_data": "completed", "total": "completed", "describe": "completed"
    }  # fmt: skip
    for name, queue in {"make_data": "default", "total": "cpu", "describe": "default"}.items():
        ran_on(nodes[name]["task"], "work", queue)
    assert params_of(nodes["total"]["task"])["return/value"] == 100
    assert params_of(nodes["describe"]["task"])["return/text"] == "5:100"


# -- the controller here, the steps on agents -------------------------------------------------
def test_start_locally_without_local_steps_sends_them_to_agents(home: Path, fleet: Fleet) -> None:
    fleet.start("work", "default", "cpu")
    pipe = new_pipe("here")
    pipe.add_parameter("n", 3)
    pipe.add_function_step(
        "make", steps.make_data, function_kwargs={"n": "${pipeline.n}"}, function_return=["data"]
    )
    pipe.add_function_step(
        "total", steps.total, function_kwargs={"data": "${make.data}", "scale": 2},
        function_return=["value"], execution_queue="cpu",
    )  # fmt: skip
    pipe.add_function_step(
        "who", steps.where, function_kwargs={"tag": "${total.value}"}, function_return=["who"]
    )
    assert pipe.start_locally(run_pipeline_steps_locally=False) is True, fleet.consoles()

    assert pipe.id is not None
    assert status_of(pipe.id) == "completed"
    assert "_agent" not in runtime_of(pipe.id)  # the controller ran here
    dag = pipe.get_pipeline_dag()
    assert {n: node.status for n, node in dag.items()} == {
        "make": NodeStatus.completed, "total": NodeStatus.completed, "who": NodeStatus.completed
    }  # fmt: skip
    ran_on(dag["make"].executed, "work", "default")
    ran_on(dag["total"].executed, "work", "cpu")
    ran_on(dag["who"].executed, "work", "default")
    assert params_of(dag["total"].executed)["return/value"] == 6
    tag, pid = params_of(dag["who"].executed)["return/who"].split(":")
    assert tag == "6"
    assert int(pid) not in (os.getpid(), fleet.agents["work"].pid)  # a process of its own


def test_decorator_without_execution_queue_runs_logic_here_and_steps_on_agents(
    home: Path, fleet: Fleet
) -> None:
    fleet.start("work", "default", "cpu")
    result = steps.logic_here(n=4)

    assert result == {"value": 600, "size": 4}
    pipe = PipelineController.get(pipeline_project=PROJECT, pipeline_name="deco-here")
    assert pipe.id is not None
    assert status_of(pipe.id) == "completed"
    assert "_agent" not in runtime_of(pipe.id)
    nodes = nodes_of(pipe.id)
    assert {n: s["status"] for n, s in nodes.items()} == {
        "deco_make": "completed", "deco_total": "completed"
    }  # fmt: skip
    ran_on(nodes["deco_make"]["task"], "work", "default")
    ran_on(nodes["deco_total"]["task"], "work", "cpu")


# -- running a stored pipeline again ---------------------------------------------------------
def test_rerun_with_new_arguments_by_clone_and_by_cli(
    home: Path, tmp_path: Path, fleet: Fleet
) -> None:
    fleet.start("svc", "services", services=True)
    fleet.start("work", "default", "cpu")
    first = launch_script(home, tmp_path, "controller_pipeline.py")
    assert wait_final(first, fleet) == "completed", log_of(first)

    # a clone with n=7, queued from the SDK
    clone = PipelineController.clone(first)
    assert clone.task is not None and clone.id != first
    assert clone.task.status == "created"
    clone.task.set_parameters({"Args/n": 7})
    PipelineController.enqueue(clone, queue_name="services")
    second = clone.id
    assert second is not None
    assert wait_final(second, fleet) == "completed", log_of(second)
    ran_on(second, "svc", "services")
    assert params_of(second)["Args/n"] == 7
    nodes = nodes_of(second)
    assert params_of(nodes["make"]["task"])["kwargs/n"] == 7
    assert params_of(nodes["total"]["task"])["return/value"] == 210
    ran_on(nodes["total"]["task"], "work", "cpu")
    assert params_of(nodes_of(first)["make"]["task"])["kwargs/n"] == 4  # the first run kept 4

    # the CLI: the newest run of the pipeline, with n=9
    done = cli(home, tmp_path, "pipelines", "run", "remote-three", "--param", "n=9",
               "--queue", "services", "--wait")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    found = TASK_ID.search(done.stdout)
    assert found, done.stdout
    third = found.group(1)
    assert third not in (first, second)
    assert status_of(third) == "completed"
    ran_on(third, "svc", "services")
    assert params_of(third)["Args/n"] == 9
    nodes = nodes_of(third)
    assert params_of(nodes["make"]["task"])["kwargs/n"] == 9
    assert params_of(nodes["total"]["task"])["return/value"] == 360
    assert params_of(nodes["describe"]["task"])["return/text"] == "9:360"

    # get(): the newest run of the highest version, even when a lower version ran later
    latest = PipelineController.get(pipeline_project=PROJECT, pipeline_name="remote-three")
    assert latest.id == third
    assert latest.get_parameters() == {"n": 9}
    older = PipelineController(name="remote-three", project=PROJECT, version="0.9.0")
    older.add_function_step("only", steps.where, function_kwargs={"tag": "old"})
    assert older.start_locally(in_process=True) is True
    latest = PipelineController.get(pipeline_project=PROJECT, pipeline_name="remote-three")
    assert latest.id == third
    assert latest.version == "1.0.0"
    got = PipelineController.get(
        pipeline_project=PROJECT, pipeline_name="remote-three", pipeline_version="0.9.0"
    )
    assert got.id == older.id


def test_a_cloned_draft_with_a_new_version_is_found_by_get(home: Path) -> None:
    pipe = new_pipe("versions")
    pipe.add_function_step("only", steps.where, function_kwargs={"tag": "v1"})
    assert pipe.start_locally(in_process=True) is True
    draft = PipelineController.clone(pipe.id, version="2.0.0")
    got = PipelineController.get(
        pipeline_project=PROJECT, pipeline_name="versions", pipeline_version="2.0.0"
    )
    assert got.id == draft.id


def stored_run(name: str) -> str:
    """A finished run of a pipeline with an int argument ``n`` (run in this process)."""
    pipe = new_pipe(name)
    pipe.add_parameter("n", 2, param_type="int")
    pipe.add_function_step("echo", steps.where, function_kwargs={"tag": "${pipeline.n}"})
    assert pipe.start_locally(in_process=True) is True
    assert pipe.id is not None
    return pipe.id


@pytest.mark.parametrize(
    "param, complaint",
    [
        pytest.param("bogus=1", "bogus", id="unknown-name"),
        pytest.param("n", "NAME=VALUE", id="no-value"),
        pytest.param("n=many", "int", id="wrong-type"),
    ],
)  # fmt: skip
def test_cli_rerun_with_a_bad_param_fails_clearly_and_queues_nothing(
    home: Path, tmp_path: Path, param: str, complaint: str
) -> None:
    stored_run("stored")

    done = cli(home, tmp_path, "pipelines", "run", "stored", "--param", param,
               "--queue", "services")  # fmt: skip

    text = done.stdout + done.stderr
    assert done.returncode != 0, text
    assert complaint in text, text
    assert "Traceback" not in text, text
    assert get_backend().queue_tasks("services") == []
    assert {q.name: q.pending for q in get_backend().get_queues()}["services"] == 0


def test_cli_rerun_with_a_bad_param_leaves_no_run_behind(home: Path, tmp_path: Path) -> None:
    first = stored_run("stored")

    done = cli(home, tmp_path, "pipelines", "run", "stored", "--param", "bogus=1")

    assert done.returncode != 0, done.stdout + done.stderr
    assert controllers() == [first]


# -- queues no agent serves --------------------------------------------------------------------
def test_a_step_on_a_queue_nobody_serves_is_named_in_the_run_log(
    home: Path, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert QueueExecutor.NO_AGENT_WARNING <= 5.0  # so users hear of it within ~10 s
    monkeypatch.setattr(QueueExecutor, "NO_AGENT_WARNING", 0.5)  # the same, sooner
    get_backend().create_queue("gpu")
    fleet.start("work", "default")  # an agent, but not for gpu
    pipe = new_pipe("no-agent")
    pipe.add_function_step("first", steps.where, function_kwargs={"tag": "a"})
    pipe.add_function_step(
        "stuck", steps.where, function_kwargs={"tag": "b"}, execution_queue="gpu",
        parents=["first"],
    )  # fmt: skip
    assert pipe.start_locally(run_pipeline_steps_locally=False, wait=False) is True
    try:
        assert pipe.id is not None
        run_id = pipe.id
        hint = "stepline agent --queue gpu"
        wait_until(lambda: hint in log_of(run_id), "the run's log to name the queue", fleet, 5)
        lines = [ln for ln in log_of(run_id).splitlines() if hint in ln]
        assert len(lines) == 1 and "gpu" in lines[0].replace(hint, ""), lines
        assert "--queue default" not in log_of(run_id)  # that queue has an agent
    finally:
        pipe.stop()


def test_stopping_a_run_takes_its_waiting_step_off_the_queue(home: Path, fleet: Fleet) -> None:
    get_backend().create_queue("gpu")
    fleet.start("work", "default")  # an agent, but not for gpu
    pipe = new_pipe("no-agent")
    pipe.add_function_step("first", steps.where, function_kwargs={"tag": "a"})
    pipe.add_function_step(
        "stuck", steps.where, function_kwargs={"tag": "b"}, execution_queue="gpu",
        parents=["first"],
    )  # fmt: skip
    assert pipe.start_locally(run_pipeline_steps_locally=False, wait=False) is True
    try:
        assert pipe.id is not None
        run_id = pipe.id
        dag = pipe.get_pipeline_dag()
        wait_until(lambda: dag["stuck"].status == NodeStatus.queued, "step stuck to queue", fleet)
        assert dag["first"].status == NodeStatus.completed
        ran_on(dag["first"].executed, "work", "default")
        stuck = dag["stuck"].executed
        assert isinstance(stuck, str)
        assert status_of(stuck) == "queued"
        assert get_backend().queue_tasks("gpu") == [stuck]
        pipe.stop()
    finally:
        if pipe.is_running():
            pipe.stop()
    assert pipe.wait() is True
    assert status_of(stuck) == "stopped"
    assert get_backend().queue_tasks("gpu") == []
    assert {q.name: q.pending for q in get_backend().get_queues()}["gpu"] == 0
    assert "_agent" not in runtime_of(stuck)  # nobody ever ran it
    assert pipe.get_pipeline_dag()["stuck"].status == NodeStatus.aborted
    assert status_of(run_id) != "completed"
    assert not pipe.is_successful()


def test_node_is_queued_until_an_agent_takes_it(home: Path, tmp_path: Path, fleet: Fleet) -> None:
    pipe = new_pipe("queued")
    pipe.add_function_step(
        "held", steps.hold, function_kwargs={"folder": str(tmp_path), "name": "held"},
        function_return=["name"],
    )  # fmt: skip
    assert pipe.start_locally(run_pipeline_steps_locally=False, wait=False) is True
    try:
        assert pipe.id is not None
        run_id = pipe.id

        def state() -> tuple[NodeStatus, str]:
            return pipe.get_pipeline_dag()["held"].status, nodes_of(run_id)["held"]["status"]

        wait_until(lambda: state() == (NodeStatus.queued, "queued"), "the step to be queued")
        held = pipe.get_pipeline_dag()["held"].executed
        assert isinstance(held, str)
        assert status_of(held) == "queued"
        assert get_backend().queue_tasks("default") == [held]
        assert [n.name for n in pipe.get_running_nodes()] == ["held"]

        fleet.start("work", "default")
        wait_until(lambda: state() == (NodeStatus.running, "running"), "the step to run", fleet)
        assert status_of(held) == "in_progress"
        ran_on(held, "work", "default")
        (tmp_path / "release").touch()
        assert pipe.wait(timeout=DEADLINE / 60) is True
    finally:
        (tmp_path / "release").touch()
        if pipe.is_running():
            pipe.stop()
    assert state() == (NodeStatus.completed, "completed")
    assert status_of(held) == "completed"
    assert status_of(run_id) == "completed"
    assert params_of(held)["return/name"] == "held"


# -- time limits, aborts and retries through queues -------------------------------------------
def test_step_time_limit_on_an_agent_kills_its_process_and_fails_the_run(
    home: Path, tmp_path: Path, fleet: Fleet
) -> None:
    agent = fleet.start("work", "default")
    pipe = new_pipe("limit")
    pipe.add_function_step(
        "sleeper", steps.sleep_long, function_kwargs={"folder": str(tmp_path)}, time_limit=3
    )
    pipe.add_function_step("after", steps.where, function_kwargs={"tag": "x"}, parents=["sleeper"])
    assert pipe.start_locally(run_pipeline_steps_locally=False) is False

    dag = pipe.get_pipeline_dag()
    assert dag["sleeper"].status == NodeStatus.failed
    assert "time limit" in dag["sleeper"].status_message
    assert dag["after"].status == NodeStatus.skipped
    sleeper = dag["sleeper"].executed
    assert isinstance(sleeper, str)
    ran_on(sleeper, "work", "default")
    assert status_of(sleeper) == "failed"
    assert "time limit" in Task.get_task(sleeper).data.status_reason
    marker = tmp_path / "started-sleeper"
    assert marker.exists(), "the step was ended before it started (time limit too short?)"
    pid = int(marker.read_text())
    wait_until(lambda: not alive(pid), f"the step's process {pid} to end", fleet, timeout=15)
    assert status_of(pipe.id) == "failed"
    assert "time limit" in Task.get_task(pipe.id).data.status_reason
    assert agent.proc.poll() is None  # the agent lives on


def test_a_step_stopped_while_it_runs_on_an_agent_ends_its_process(
    home: Path, tmp_path: Path, fleet: Fleet
) -> None:
    fleet.start("work", "default")
    pipe = new_pipe("abort")
    pipe.add_function_step(
        "held", steps.hold, function_kwargs={"folder": str(tmp_path), "name": "held"}
    )
    pipe.add_function_step("after", steps.where, function_kwargs={"tag": "x"}, parents=["held"])
    assert pipe.start_locally(run_pipeline_steps_locally=False, wait=False) is True
    try:
        marker = tmp_path / "started-held"
        wait_until(marker.exists, "the step to start", fleet)
        held = pipe.get_pipeline_dag()["held"].executed
        assert isinstance(held, str)
        Task.get_task(held).mark_stopped()
        assert pipe.wait(timeout=DEADLINE / 60) is True
    finally:
        (tmp_path / "release").touch()
        if pipe.is_running():
            pipe.stop()
    pid = int(marker.read_text())
    wait_until(lambda: not alive(pid), f"the step's process {pid} to end", fleet, timeout=15)
    assert status_of(held) == "stopped"
    dag = pipe.get_pipeline_dag()
    assert dag["held"].status == NodeStatus.aborted
    assert dag["after"].status == NodeStatus.skipped
    assert status_of(pipe.id) in ("stopped", "failed")


def test_retry_on_failure_reruns_the_step_through_its_queue(
    home: Path, tmp_path: Path, fleet: Fleet
) -> None:
    fleet.start("work", "default", "cpu")
    pipe = new_pipe("retry")
    pipe.add_function_step(
        "flaky", steps.fail_once, function_kwargs={"folder": str(tmp_path)},
        function_return=["result"], retry_on_failure=1, execution_queue="cpu",
    )  # fmt: skip
    pipe.add_function_step(
        "child", steps.where, function_kwargs={"tag": "${flaky.result}"}, function_return=["who"]
    )
    assert pipe.start_locally(run_pipeline_steps_locally=False) is True, fleet.consoles()

    dag = pipe.get_pipeline_dag()
    flaky = dag["flaky"]
    assert flaky.status == NodeStatus.completed
    assert flaky.retries == 1
    assert status_of(flaky.executed) == "completed"
    ran_on(flaky.executed, "work", "cpu")
    first_pid = int((tmp_path / "failed-once").read_text())  # the first attempt ran
    result = params_of(flaky.executed)["return/result"]
    assert result.startswith("second attempt:")
    assert int(result.split(":")[1]) not in (first_pid, fleet.agents["work"].pid)
    assert json.loads(runtime_of(pipe.id)["_node/flaky"])["retries"] == 1
    assert params_of(dag["child"].executed)["return/who"].startswith(result + ":")
    assert status_of(pipe.id) == "completed"


def test_step_on_a_queue_that_does_not_exist_fails_naming_it(home: Path) -> None:
    pipe = new_pipe("missing-queue")
    pipe.add_function_step(
        "lost", steps.where, function_kwargs={"tag": "x"}, execution_queue="no-such-queue"
    )
    assert pipe.start_locally(run_pipeline_steps_locally=False) is False
    node = pipe.get_pipeline_dag()["lost"]
    assert node.status == NodeStatus.failed
    assert "no-such-queue" in node.status_message
    assert status_of(pipe.id) == "failed"
