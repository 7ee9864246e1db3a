"""Queues and real ``stepline agent`` processes: who runs what, aborts, dead agents, code
delivery to a machine without the user's files, live console, concurrency, the agent and queue
listings, task environments and resource reports.

Every agent here is a real ``python -m stepline.cli.main agent`` process on the test's
``STEPLINE_HOME``, started by the ``spawn`` fixture (which always stops it). Tests wait for
conditions by polling the store; a step that must be "running" at some point waits for a gate
file the test creates.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from stepline.backend.sql.store import SqlBackend
from stepline.core import params as pv
from stepline.core.records import NewTask, Param, TaskFilter
from stepline.core.status import TaskStatus
from tests.agentproc import AgentProc, start_agent
from tests.conftest import TIMEOUT, run_env

pytestmark = pytest.mark.slow

FINAL = (TaskStatus.completed, TaskStatus.failed, TaskStatus.stopped)


# -- helpers ----------------------------------------------------------------------------------


def wait_until(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something true (and return that); fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what or check}")
        time.sleep(0.02)


Spawn = Callable[..., AgentProc]


@pytest.fixture
def spawn(home: Path) -> Iterator[Spawn]:
    """Start agents on the test's home (``--poll 0.02``); all are stopped at the end, and their
    consoles printed (pytest shows them when the test fails)."""
    started: list[AgentProc] = []

    def start(
        queues: tuple[str, ...] = ("default",),
        *,
        extra: tuple[str, ...] = (),
        name: str | None = None,
        cwd: Path | None = None,
    ) -> AgentProc:
        agent = start_agent(home, queues, cwd=cwd, extra=["--poll", "0.02", *extra], name=name)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
    for agent in started:
        print(f"--- agent {agent.pid} ---\n{agent.output()}")


def function_task(
    backend: SqlBackend,
    fn: Callable[..., Any],
    *,
    kwargs: dict[str, Any] | None = None,
    returns: tuple[str, ...] = (),
    requirements: tuple[str, ...] = (),
    runtime: dict[str, str] | None = None,
    queue: str | None = "default",
    name: str | None = None,
) -> str:
    """Store a function step running ``fn`` (its source) with ``kwargs``; queue it."""
    params = []
    for key, value in (kwargs or {}).items():
        text, kind = pv.encode(value)
        params.append(Param("kwargs", key, text, kind))
    script: dict[str, Any] = {
        "kind": "function",
        "function": fn.__name__,
        "source": textwrap.dedent(inspect.getsource(fn)),
        "returns": list(returns),
    }
    if requirements:
        script["requirements"] = list(requirements)
    rec = backend.create_task(
        NewTask(
            name=name or fn.__name__,
            project="agents",
            script=script,
            params=params,
            runtime=runtime or {},
        )
    )
    if queue:
        backend.enqueue(rec.id, queue)
    return rec.id


def status(backend: SqlBackend, task_id: str) -> TaskStatus:
    return backend.get_task(task_id).status


def ended(backend: SqlBackend, task_id: str, timeout: float = 60.0) -> TaskStatus:
    """Wait for the task to end; its final status."""
    return wait_until(
        lambda: (s := status(backend, task_id)) in FINAL and s,
        timeout,
        f"task {task_id} to end",
    )


def returned(backend: SqlBackend, task_id: str) -> dict[str, str]:
    return {p.name: p.value for p in backend.get_params(task_id) if p.section == "return"}


def log_text(backend: SqlBackend, task_id: str) -> str:
    return "\n".join(ln.text for ln in backend.get_log(task_id))


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for its parent counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def read_pids(path: Path) -> list[int]:
    wait_until(path.exists, 60, f"the step to write {path.name}")
    return [int(x) for x in path.read_text().split()]


def cli(home: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "stepline.cli.main", *args],
        env=run_env(home),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def the_agent(backend: SqlBackend, name: str) -> str:
    """The id of the live agent called ``name`` (once it has registered)."""
    return wait_until(
        lambda: next((a.id for a in backend.get_agents() if a.name == name), None),
        60,
        f"agent {name} to register",
    )


# -- step functions (their source is stored on the tasks) -----------------------------------


def append_number(out: str, n: int) -> None:
    import os

    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{n}\n".encode())
    finally:
        os.close(fd)


def sleep_with_child(pids: str) -> None:
    """Start a child process, record both pids (atomically), then sleep."""
    import os
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "60"])
    with open(pids + ".tmp", "w") as fh:
        fh.write(f"{os.getpid()} {child.pid}")
    os.rename(pids + ".tmp", pids)
    time.sleep(60)


def sleep_once(pids: str) -> str:
    """The first run records its pids and sleeps; a later run returns at once."""
    import os
    import subprocess
    import time

    if not os.path.exists(pids):
        child = subprocess.Popen(["sleep", "60"])
        with open(pids + ".tmp", "w") as fh:
            fh.write(f"{os.getpid()} {child.pid}")
        os.rename(pids + ".tmp", pids)
        time.sleep(60)
    return "second run"


def say_hello() -> str:
    print("hello from the next task")
    return "hello"


def talk_then_wait(gate: str) -> None:
    import os
    import subprocess
    import sys
    import time

    print("first line from the step")
    subprocess.run(["echo", "a line from a subprocess"], check=True)
    sys.stderr.write("a line on stderr\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    print("past the gate")


def mark_and_wait(folder: str, n: int) -> int:
    import os
    import time

    open(os.path.join(folder, f"started-{n}"), "w").close()
    while not os.path.exists(os.path.join(folder, "gate")):
        time.sleep(0.02)
    return n


def use_tinypkg() -> tuple[str, str, str]:
    import sys

    import tinypkg

    print("tinypkg says", tinypkg.VALUE)
    return tinypkg.VALUE, sys.prefix, tinypkg.__file__


def busy_until(gate: str) -> int:
    import os

    n = 0
    while True:
        for _ in range(20000):
            n += 1
        if os.path.exists(gate):
            return n


# -- 1. two agents share a queue -------------------------------------------------------------


def test_two_agents_run_each_of_200_tasks_exactly_once(
    home: Path, backend: SqlBackend, spawn: Spawn
) -> None:
    first, second = spawn(name="first"), spawn(name="second")
    out = home.parent / "ran.txt"
    tasks = [
        function_task(backend, append_number, kwargs={"out": str(out), "n": n}, queue=None)
        for n in range(200)
    ]
    ids = {the_agent(backend, "first"), the_agent(backend, "second")}
    for task_id in tasks:  # both agents are waiting for work
        backend.enqueue(task_id, "default")

    def all_ended() -> bool:
        # the cheap check first: the store is polled only once every task has run
        if not out.exists() or out.read_text().count("\n") < len(tasks):
            return False
        return all(r.status in FINAL for r in backend.find_tasks(TaskFilter(ids=tasks)))

    wait_until(all_ended, 120, "the 200 tasks to end")
    assert Counter(status(backend, t) for t in tasks) == {TaskStatus.completed: 200}
    runs = Counter(int(x) for x in out.read_text().split())
    assert runs == Counter(range(200))  # each ran exactly once
    by_agent = Counter(backend.get_runtime(t)["_agent"] for t in tasks)
    assert set(by_agent) == ids, by_agent  # both got work, nobody else did
    assert backend.queue_tasks("default") == []
    assert {q.name: q.pending for q in backend.get_queues()}["default"] == 0
    assert backend.find_tasks(TaskFilter(status=[TaskStatus.queued, TaskStatus.in_progress])) == []
    assert first.proc.poll() is None and second.proc.poll() is None
    assert not (home / "cache" / "envs").exists()  # no environment for steps without packages


# -- 2. aborting a running step --------------------------------------------------------------


@pytest.mark.parametrize("how", ["sdk", "cli"])
def test_stopping_a_running_step_ends_its_process_tree(
    home: Path, backend: SqlBackend, spawn: Spawn, how: str
) -> None:
    from stepline import Task

    agent = spawn(name="worker")
    pidfile = home.parent / "pids"
    task_id = function_task(backend, sleep_with_child, kwargs={"pids": str(pidfile)})
    step, child = read_pids(pidfile)
    assert not gone(step) and not gone(child)
    assert status(backend, task_id) == TaskStatus.in_progress
    if how == "sdk":
        Task.get_task(task_id=task_id).mark_stopped()
    else:
        assert task_id in cli(home, "tasks", "stop", task_id)
    wait_until(lambda: gone(step) and gone(child), 30, "the step and its child to end")
    assert status(backend, task_id) == TaskStatus.stopped
    # the agent keeps serving: the next task runs on it
    agent_id = the_agent(backend, "worker")
    next_id = function_task(backend, say_hello, returns=("greeting",))
    assert ended(backend, next_id) == TaskStatus.completed
    assert backend.get_runtime(next_id)["_agent"] == agent_id
    assert returned(backend, next_id) == {"greeting": "hello"}
    assert status(backend, task_id) == TaskStatus.stopped  # still: nothing overwrote it
    assert agent.proc.poll() is None


# -- 3. an agent killed mid-step --------------------------------------------------------------

FAST_BEAT = ("--heartbeat", "0.2", "--timeout", "2")


def test_a_killed_agents_task_is_failed_naming_the_agent(
    home: Path, backend: SqlBackend, spawn: Spawn
) -> None:
    agent = spawn(name="doomed", extra=FAST_BEAT)
    pidfile = home.parent / "pids"
    task_id = function_task(backend, sleep_with_child, kwargs={"pids": str(pidfile)})
    pids = read_pids(pidfile)
    agent.kill()
    wait_until(lambda: all(gone(p) for p in pids), 30, "the step's processes to die")

    def reaped() -> bool:
        backend.reap_agents()
        return status(backend, task_id) != TaskStatus.in_progress

    wait_until(reaped, 30, "the dead agent's task to be reaped")
    rec = backend.get_task(task_id)
    assert rec.status == TaskStatus.failed
    assert "agent doomed" in rec.status_reason and "heartbeat" in rec.status_reason
    assert "stepline: agent doomed" in log_text(backend, task_id)
    assert backend.get_agents() == []
    assert backend.queue_tasks("default") == []


def test_a_killed_agents_task_asking_for_it_is_requeued_and_completed(
    home: Path, backend: SqlBackend, spawn: Spawn
) -> None:
    doomed = spawn(name="doomed", extra=FAST_BEAT)
    pidfile = home.parent / "pids"
    task_id = function_task(
        backend,
        sleep_once,
        kwargs={"pids": str(pidfile)},
        returns=("result",),
        runtime={"_requeue_on_agent_loss": "1"},
    )
    pids = read_pids(pidfile)
    doomed_id = backend.get_runtime(task_id)["_agent"]
    doomed.kill()
    # the next agent notices the silent one (its heartbeat reaps), re-queues and runs the task
    spawn(name="rescuer", extra=FAST_BEAT)
    assert ended(backend, task_id) == TaskStatus.completed
    runtime = backend.get_runtime(task_id)
    assert runtime["_agent_losses"] == "1"
    assert runtime["_agent"] not in ("", doomed_id)
    assert runtime["_agent"] == the_agent(backend, "rescuer")
    assert returned(backend, task_id) == {"result": "second run"}
    assert "put back on queue 'default'" in log_text(backend, task_id)
    assert all(gone(p) for p in pids)
    assert [a.name for a in backend.get_agents()] == ["rescuer"]


# -- 4. code delivery: the agent never sees the user's files ----------------------------------

MAIN = """\
from stepline import Task

import helper
from pkg import mod

task = Task.init(project_name="delivery", task_name="script")
task.execute_remotely(queue_name="default")
print("helper says", helper.VALUE, mod.double(21))
task.connect({"value": helper.VALUE, "doubled": mod.double(21)})
"""


@pytest.mark.parametrize("afterwards", ["removed", "edited"])
def test_a_script_task_runs_the_code_stored_on_it(
    home: Path, backend: SqlBackend, spawn: Spawn, tmp_path: Path, afterwards: str
) -> None:
    """The source tree is deleted (or edited) once the task is queued: the agent, in an empty
    folder, runs the entry script and local modules stored on the task."""
    src = tmp_path / "project"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text(MAIN)
    (src / "helper.py").write_text("VALUE = 'helper-value-41'\n")
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "mod.py").write_text("def double(x):\n    return 2 * x\n")
    out = subprocess.run(
        [sys.executable, "main.py"],
        cwd=src,
        env=run_env(home),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "helper says" not in out.stdout  # it stopped at execute_remotely
    match = re.search(r"task ([0-9a-f]{32}) queued on default", out.stdout)
    assert match, out.stdout
    task_id = match.group(1)
    assert status(backend, task_id) == TaskStatus.queued
    modules = backend.get_task(task_id).script.get("modules") or {}
    assert {"helper.py", "pkg/__init__.py", "pkg/mod.py"} <= set(modules)
    if afterwards == "removed":
        shutil.rmtree(src)
    else:
        (src / "helper.py").write_text("VALUE = 'edited'\n")
        (src / "pkg" / "mod.py").write_text("def double(x):\n    return 0\n")
    spawn(cwd=tmp_path / "empty")
    assert ended(backend, task_id) == TaskStatus.completed, log_text(backend, task_id)
    assert "helper says helper-value-41 42" in log_text(backend, task_id)
    params = {p.key: p.value for p in backend.get_params(task_id)}
    assert params["General/value"] == "helper-value-41"
    assert params["General/doubled"] == "42"
    assert backend.get_runtime(task_id)["_agent"]


PIPE = """\
from stepline import PipelineController


def read_helper():
    import steplib

    return steplib.VALUE


pipe = PipelineController(name="delivery", project="delivery")
pipe.add_function_step("read", read_helper, function_return=["value"])
pipe.start_locally(run_pipeline_steps_locally=False)
print("pipeline done")
"""


def test_a_function_step_runs_without_its_module_folder(
    home: Path, backend: SqlBackend, spawn: Spawn, tmp_path: Path
) -> None:
    src = tmp_path / "project"
    src.mkdir()
    (src / "pipe.py").write_text(PIPE)
    (src / "steplib.py").write_text("VALUE = 'steplib-value-7'\n")
    controller = subprocess.Popen(
        [sys.executable, "pipe.py"],
        cwd=src,
        env=run_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(
            lambda: backend.queue_tasks("default") or controller.poll() is not None,
            60,
            "the step to be queued",
        )
        assert controller.poll() is None, controller.communicate()[0]
        (step_id,) = backend.queue_tasks("default")
        shutil.rmtree(src)
        spawn(cwd=tmp_path / "empty")
        final = ended(backend, step_id)
        output, _ = controller.communicate(timeout=TIMEOUT)
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait()
    assert final == TaskStatus.completed, log_text(backend, step_id)
    assert "steplib.py" in (backend.get_task(step_id).script.get("modules") or {})
    assert returned(backend, step_id) == {"value": "steplib-value-7"}
    assert controller.returncode == 0 and "pipeline done" in output, output


# -- 5. live console --------------------------------------------------------------------------


def test_a_running_steps_output_reaches_its_log_live(
    home: Path, backend: SqlBackend, spawn: Spawn
) -> None:
    spawn()
    gate = home.parent / "gate"
    task_id = function_task(backend, talk_then_wait, kwargs={"gate": str(gate)})
    wanted = {"first line from the step", "a line from a subprocess", "a line on stderr"}

    def streamed() -> bool:
        return wanted <= {ln.text for ln in backend.get_log(task_id)}

    wait_until(streamed, 30, "the step's first lines in its log")
    assert status(backend, task_id) == TaskStatus.in_progress  # still waiting for the gate
    levels = {ln.text: ln.level for ln in backend.get_log(task_id)}
    assert levels["first line from the step"] == "info"
    assert levels["a line from a subprocess"] == "info"
    assert levels["a line on stderr"] == "error"
    assert "past the gate" not in levels
    gate.touch()
    assert ended(backend, task_id) == TaskStatus.completed
    wait_until(lambda: "past the gate" in log_text(backend, task_id), 10, "the last line")
    texts = [ln.text for ln in backend.get_log(task_id)]
    assert texts.count("first line from the step") == 1  # streamed once, not again at the end


# -- 6. several tasks at once on one agent ---------------------------------------------------


def test_max_jobs_runs_tasks_side_by_side(home: Path, backend: SqlBackend, spawn: Spawn) -> None:
    spawn(name="wide", extra=("--max-jobs", "2"))
    folder = home.parent / "marks"
    folder.mkdir()
    tasks = [
        function_task(
            backend, mark_and_wait, kwargs={"folder": str(folder), "n": n}, returns=("n",)
        )
        for n in (1, 2)
    ]
    wait_until(
        lambda: (folder / "started-1").exists() and (folder / "started-2").exists(),
        30,
        "both tasks to start",
    )
    # neither can end before the gate exists: both run at once
    recs = backend.find_tasks(TaskFilter(ids=tasks))
    assert {r.status for r in recs} == {TaskStatus.in_progress}
    (wide,) = backend.get_agents()
    wait_until(lambda: sorted(backend.get_agents()[0].running) == sorted(tasks), 10, "heartbeat")
    assert {backend.get_runtime(t)["_agent"] for t in tasks} == {wide.id}
    (folder / "gate").touch()
    assert [ended(backend, t) for t in tasks] == [TaskStatus.completed] * 2
    assert [returned(backend, t) for t in tasks] == [{"n": "1"}, {"n": "2"}]


# -- 7. agent and queue listings, SIGTERM -----------------------------------------------------


def test_listings_show_the_live_agent_and_sigterm_stops_its_task(
    home: Path, backend: SqlBackend, spawn: Spawn
) -> None:
    pidfile = home.parent / "pids"
    long_task = function_task(backend, sleep_with_child, kwargs={"pids": str(pidfile)})
    agent = spawn(("default", "cpu"), name="listed")
    pids = read_pids(pidfile)
    waiting = [function_task(backend, say_hello, queue="cpu") for _ in range(2)]

    listed = json.loads(cli(home, "agent", "list", "--json"))
    assert len(listed) == 1
    (entry,) = listed
    assert entry["name"] == "listed" and entry["queues"] == ["default", "cpu"]
    assert entry["running"] == [long_task] and entry["pid"] == agent.pid
    queues = {q["name"]: q for q in json.loads(cli(home, "queues", "list", "--json"))}
    assert queues["cpu"]["pending"] == 2 and queues["default"]["pending"] == 0
    assert queues["services"]["pending"] == 0
    assert queues["cpu"]["agents"] == ["listed"] and queues["services"]["agents"] == []

    assert agent.stop() == 0
    assert json.loads(cli(home, "agent", "list", "--json")) == []
    rec = backend.get_task(long_task)
    assert rec.status == TaskStatus.stopped and "listed" in rec.status_reason
    wait_until(lambda: all(gone(p) for p in pids), 30, "the task's processes to end")
    assert [status(backend, t) for t in waiting] == [TaskStatus.queued] * 2
    queues = {q["name"]: q for q in json.loads(cli(home, "queues", "list", "--json"))}
    assert queues["cpu"]["pending"] == 2 and queues["cpu"]["agents"] == []


# -- 8. a task's own environment --------------------------------------------------------------


def build_wheel(folder: Path) -> Path:
    """A wheel of package ``tinypkg`` 0.1, made by hand."""
    files = {
        "tinypkg/__init__.py": 'VALUE = "tiny-0.1"\n',
        "tinypkg-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{name},sha256={b64},{len(text.encode())}")
    record.append("tinypkg-0.1.dist-info/RECORD,,")
    files["tinypkg-0.1.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = folder / "tinypkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_a_step_with_requirements_runs_in_a_reused_env(
    home: Path, backend: SqlBackend, spawn: Spawn, tmp_path: Path
) -> None:
    import importlib.util

    assert importlib.util.find_spec("tinypkg") is None  # not in the agent's environment
    wheel = build_wheel(tmp_path)
    spawn()
    envs = home / "cache" / "envs"
    prefixes: list[Path] = []
    built: list[int] = []
    for _ in range(2):
        task_id = function_task(
            backend,
            use_tinypkg,
            requirements=(str(wheel),),
            returns=("value", "prefix", "file"),
        )
        assert ended(backend, task_id, 120) == TaskStatus.completed, log_text(backend, task_id)
        values = returned(backend, task_id)
        assert values["value"] == "tiny-0.1"
        assert "tinypkg says tiny-0.1" in log_text(backend, task_id)
        prefix = Path(values["prefix"])
        assert prefix.parent == envs and prefix != Path(sys.prefix)
        assert Path(values["file"]).is_relative_to(prefix)
        prefixes.append(prefix)
        assert [p.name for p in envs.iterdir() if p.is_dir()] == [prefix.name]
        built.append((prefix / ".ready").stat().st_mtime_ns)
    assert prefixes[0] == prefixes[1]
    assert built[0] == built[1]  # the second task found it ready, nothing was rebuilt


# -- 9. resource reports ----------------------------------------------------------------------


def test_a_busy_task_gets_machine_usage_scalars(
    home: Path, backend: SqlBackend, spawn: Spawn
) -> None:
    spawn()
    gate = home.parent / "gate"
    task_id = function_task(backend, busy_until, kwargs={"gate": str(gate)})

    def busy_reported() -> bool:
        cpu = backend.get_scalars(task_id, ":monitor:machine", "cpu_usage")
        return any(p.value > 5 for p in cpu)

    wait_until(busy_reported, 60, "a cpu_usage report of the busy task")
    gate.touch()
    assert ended(backend, task_id) == TaskStatus.completed
    memory = backend.get_scalars(task_id, ":monitor:machine", "memory_used_gb")
    assert memory and all(0 < p.value < 64 for p in memory)
    last = backend.get_last_scalars(task_id)[":monitor:machine"]
    assert set(last) == {"cpu_usage", "memory_used_gb"}


def test_the_first_cpu_report_of_a_busy_task_is_a_real_figure(
    home: Path, backend: SqlBackend, spawn: Spawn
) -> None:
    spawn()
    gate = home.parent / "gate"
    task_id = function_task(backend, busy_until, kwargs={"gate": str(gate)})
    try:
        first = wait_until(
            lambda: backend.get_scalars(task_id, ":monitor:machine", "cpu_usage"),
            60,
            "the first cpu_usage report",
        )[0]
    finally:
        gate.touch()
    assert first.value > 5
