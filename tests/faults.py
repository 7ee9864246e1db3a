"""Fault injection for the recovery tests: pipeline scripts run as real processes whose steps
log each execution and can be held at a gate, so a test can kill a controller, a step or an
agent at a known point and then count what ran again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import run_env

DEADLINE = 60.0
#: fast controller heartbeats for the tests (a killed controller is found in a second)
FAST = {"STEPLINE_RUN_HEARTBEAT": "0.2"}

#: One function step: logs "i pid" per execution, and step ``hold`` waits for the gate file
#: (writing its pid to GATE.held first). Returns x + i.
STEP = """
def work(x: int, i: int, log: str, hold: int, gate: str) -> int:
    import os
    import time

    with open(log, "a") as fh:
        fh.write(f"{i} {os.getpid()}\\n")
    if i == hold:
        with open(gate + ".held", "w") as fh:
            fh.write(str(os.getpid()))
        while not os.path.exists(gate):
            time.sleep(0.02)
    return x + i
"""

#: A chain s0 -> s1 -> ... built by a PipelineController from ``work``. argv: N HOLD MODE LOG
#: GATE, MODE one of local (a process per step), debug (threads) or queue (steps on agents),
#: or services (the controller itself goes to an agent of ``services``).
CHAIN = (
    "import sys\n"
    "from stepline import PipelineController\n"
    + STEP
    + """
n, hold, mode, log, gate = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
pipe = PipelineController(name="chain", project="recovery")
pipe.add_parameter("start", 0)
prev = None
for i in range(n):
    pipe.add_function_step(
        f"s{i}", work,
        function_kwargs={
            "x": "${pipeline.start}" if prev is None else "${%s.return}" % prev,
            "i": i, "log": log, "hold": hold, "gate": gate,
        },
        function_return=["return"], parents=[prev] if prev else None,
    )
    prev = f"s{i}"
pipe.set_default_execution_queue("default")
if mode == "services":
    ok = pipe.start(queue="services")
else:
    ok = pipe.start_locally(run_pipeline_steps_locally=mode == "local", in_process=mode == "debug")
sys.exit(0 if ok else 3)
"""
)


class Chain:
    """A chain pipeline script in ``folder`` and what its steps did."""

    def __init__(self, folder: Path, home: Path, n: int, hold: int, mode: str) -> None:
        self.folder = folder
        self.home = home
        self.n, self.hold, self.mode = n, hold, mode
        self.script = folder / "chain.py"
        self.script.write_text(CHAIN)
        self.log = folder / "executions.log"
        self.gate = folder / "gate"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, **env: str) -> subprocess.Popen[str]:
        argv = [str(self.n), str(self.hold), self.mode, str(self.log), str(self.gate)]
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), *argv],
            cwd=self.folder,
            env=run_env(self.home, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self.proc

    def held_pid(self) -> int:
        """Wait for the held step to start; its pid."""
        held = Path(str(self.gate) + ".held")
        wait_until(lambda: held.exists() and held.read_text().strip(), "the held step to start")
        return int(held.read_text())

    def release(self) -> None:
        self.gate.touch()

    def executions(self) -> Counter[int]:
        """How many times each step ran (by its index)."""
        if not self.log.exists():
            return Counter()
        return Counter(int(line.split()[0]) for line in self.log.read_text().splitlines())

    def kill(self) -> str:
        """SIGKILL the script's process; its output."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        out, _ = self.proc.communicate(timeout=DEADLINE)
        return out

    def wait(self) -> tuple[int, str]:
        assert self.proc is not None
        out, _ = self.proc.communicate(timeout=DEADLINE * 2)
        return self.proc.returncode, out


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    return False


def stepline(
    home: Path, *args: str, cwd: Path | None = None, check: bool = True, **env: str
) -> str:
    """Run the ``stepline`` command line; its output (stdout and stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "stepline.cli.main", *args],
        cwd=cwd,
        env=run_env(home, **env),
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
    )
    out = done.stdout + done.stderr
    if check:
        assert done.returncode == 0, out
    return out


def step_tasks(backend: Any, run_id: str) -> dict[str, str]:
    """{step name: task id} of the run: as its view shows them, and the run's own step tasks
    (a killed controller may not have recorded the last ones it started)."""
    from stepline.pipeline.views import RunView

    view = RunView.load(backend, backend.get_task(run_id))
    found = {s.name: s.task for s in view.steps if s.task}
    for task_id in new_step_tasks(backend, run_id):
        name = backend.get_runtime(task_id).get("_pipeline_step")
        if name and name not in found:
            found[name] = task_id
    return found


def new_step_tasks(backend: Any, run_id: str) -> list[str]:
    """The step tasks the run created itself (not reused ones)."""
    from stepline.core.records import TaskFilter
    from stepline.core.status import TaskTypes

    children = backend.find_tasks(TaskFilter(parent=run_id, archived=None))
    return [c.id for c in children if c.type != str(TaskTypes.controller)]


def run_ids(backend: Any) -> Sequence[str]:
    """Every pipeline run, oldest first."""
    from stepline.core.records import TaskFilter
    from stepline.core.status import TaskTypes

    found = backend.find_tasks(
        TaskFilter(type=[str(TaskTypes.controller)], archived=None, order_by="created")
    )
    return [r.id for r in found]


# -- a step that hangs ---------------------------------------------------------------------------
def hang(folder: str) -> None:
    """Ignores SIGTERM, starts a child in a session of its own (out of the step's process
    group) that ignores it too, and never returns."""
    import os
    import signal
    import subprocess
    import sys
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    tmp = os.path.join(folder, "pids.tmp")
    with open(tmp, "w") as fh:
        fh.write(f"{os.getpid()} {child.pid}")
    os.replace(tmp, os.path.join(folder, "pids"))
    while True:
        time.sleep(1)


def hung_pipeline(folder: Path, local: bool = True) -> tuple[bool, list[int], str]:
    """Run (in this process) a pipeline whose step hangs, with a 2 s time limit, its step a
    local process or (``local=False``) on queue ``default`` for an agent; (whether it
    succeeded, [the step's pid, its child's pid], the step's task)."""
    from stepline import PipelineController

    pipe = PipelineController(name="hung", project="recovery")
    pipe.add_function_step("hang", hang, function_kwargs={"folder": str(folder)}, time_limit=2)
    ok = pipe.start_locally(run_pipeline_steps_locally=local)
    pids = [int(p) for p in (folder / "pids").read_text().split()]
    task_id = pipe.get_pipeline_dag()["hang"].executed
    assert isinstance(task_id, str)
    return ok, pids, task_id
