"""Dispatch latency and per-step overhead of agents, next to a floor measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_agents.py              # 50 dispatches, 100 steps, 200 drained
    .venv/bin/python benchmarks/bench_agents.py --quick      # a few seconds (smoke run)
    .venv/bin/python benchmarks/bench_agents.py --tasks 200 --steps 50 --drain 0 --verbose

Everything runs in one fresh STEPLINE_HOME in a temporary folder, against real agents: each is
``sys.executable -m stepline.cli.main agent --queue Q --poll 0.02``, started as a process of its
own and waited for until it is registered (``backend.get_agents()``). Every task is a trivial
function step (``def f(): return None``) created with ``backend.create_task``. Agents are
stopped with SIGTERM at the end, whatever happened.

Rows:

1. dispatch to an idle agent (queue ``bench``): ``--tasks`` tasks, one at a time: create the
   task, ``t0 = time.time()``, ``backend.enqueue(task, "bench")``; the task's ``started``
   (UNIX time, set by ``claim`` when the agent takes it) minus ``t0``. The next task is queued
   only after the agent said the previous one ended (its console line ``task ID ended``), so
   it is idle, looking at its queues every 0.02 s, and after a pause drawn from 0-0.04 s
   (seeded), so that tasks arrive at any point of that cycle: queued right after the agent
   ended a task, every task would come at the same point of it, near its end. p50 and p95;
   target: p50 <= 100 ms. A few warm-up tasks go first (the agent starts its fork server on
   its first task).
   enqueue -> completed: the same tasks' ``completed`` minus ``t0``.
2. a chain of ``--steps`` trivial function steps (``bench_pipeline``'s ``inc`` chain, each step
   taking the previous one's result) run by ``PipelineController.start_locally``: with
   ``run_pipeline_steps_locally=False`` (the controller here, the steps on queue ``default``,
   served by one agent) and with ``run_pipeline_steps_locally=True`` (a local child process
   per step, forked from the run's own fork server). Each is the best of ``--repeat`` runs,
   interleaved with the floor's; time per step = total / steps. Target for local processes as
   in bench_pipeline: per-step <= 1.5x the floor; none is set for the agent.
3. throughput (``--drain`` tasks, 0 skips it): that many tasks created, then queued one after
   another on ``bench`` as fast as the store takes them, drained by one agent and by two;
   time per task = (last ``completed`` - ``t0`` before the first enqueue) / tasks. The second
   agent also serves a private queue, ``bench-warm``, used only to start its fork server
   before the clock runs (it claims from ``bench`` first).

The floor of every row is one ``sys.executable -c pass`` spawn, measured in the same run: the
mean of 20 spawns one after another (3 with ``--quick``), before and after the rows 1 and
again before and after the rows 3 (the better of the two is used), and of ``--steps`` spawns
before each repeat of the rows 2 (the best is used). That is what starting any fresh Python
process costs on this machine; ratio = the row's ms / the floor's ms.

The rows 3 run right after the rows 1, on the same (warm) agent; their agents are stopped
before the rows 2 start their own, so only a row's own agents poll the store while it runs
(and, during the local chain, the idle agent of the chain through an agent).

Every task is checked: it completed, on the agent expected (runtime ``_agent``), and the
chains returned N. A failed or wrong run exits non-zero instead of reporting a fast number.
Machines are shared and noisy, so nothing here asserts a time: the exit status is 0 whether
targets are met or not ("ok?" says which; "-" where no target is set).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_pipeline as bp  # the chain, the spawn floor, flush_logs

TASKS = 50
STEPS = 100
DRAIN = 200
QUICK = {"tasks": 5, "steps": 5, "drain": 10}
WARMUP = 3  #: tasks each agent runs before its clock starts
FLOOR_SPAWNS = 20  #: `python -c pass` spawns per floor of rows 1 and 3 (3 with --quick)
DISPATCH_TARGET_MS = 100.0
POLL = 0.02  #: the agents' --poll
QUEUE = "bench"
WARM_QUEUE = "bench-warm"
PROJECT = "bench-agents"
STEP_SCRIPT = {
    "kind": "function",
    "function": "f",
    "source": "def f():\n    return None\n",
    "returns": [],
}
TIMEOUT = 120.0  #: seconds any one wait may take before the run is declared broken

#: The environment the run sets (STEPLINE_HOME) or clears (the rest).
_ENV = bp._ENV


# -- results ---------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    n: int  #: tasks, or steps of the chain
    ms: float  #: a latency (p50, p95) or the time per step / task
    floor_ms: float
    rate: bool = False  #: ms is a time per step / task: show its rate per second
    target_ms: float | None = None  #: ms must be at most this
    target_ratio: float | None = None  #: ratio must be at most this

    @property
    def ratio(self) -> float:
        return self.ms / self.floor_ms

    @property
    def per_second(self) -> str:
        return f"{1000 / self.ms:,.1f}" if self.rate else "-"

    @property
    def target(self) -> str:
        if self.target_ms is not None:
            return f"<= {self.target_ms:g} ms"
        if self.target_ratio is not None:
            return f"<= {self.target_ratio:g}x floor"
        return "-"

    @property
    def ok(self) -> str:
        if self.target_ms is not None:
            return "ok" if self.ms <= self.target_ms else "MISS"
        if self.target_ratio is not None:
            return "ok" if self.ratio <= self.target_ratio else "MISS"
        return "-"


def render(rows: Sequence[Row]) -> str:
    header = ("row", "n", "ms", "per s", "floor ms", "ratio", "target", "ok?")
    table = [header]
    for r in rows:
        table.append(
            (
                r.name,
                str(r.n),
                f"{r.ms:,.2f}",
                r.per_second,
                f"{r.floor_ms:,.2f}",
                f"{r.ratio:.2f}x",
                r.target,
                r.ok,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    out = []
    for n, line in enumerate(table):
        cells = [line[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(line[1:-2], widths[1:-2], strict=True)]
        cells += [line[-2].ljust(widths[-2]), line[-1]]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (p50 of an even count: the mean of the middle two)."""
    if pct == 50:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


# -- waiting and agents ----------------------------------------------------------------------
def wait_until(
    check: Callable[[], Any], what: str, *, interval: float = 0.005, timeout: float = TIMEOUT
) -> Any:
    """Poll ``check`` until it returns something true; RuntimeError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Agent:
    """A running ``stepline agent`` process; its console goes to ``log``."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, name: str) -> None:
        self.proc = proc
        self.log = log
        self.name = name
        self.id = ""  #: set once it registered
        self.startup = 0.0  #: seconds from the spawn until it was registered
        self._read = 0
        self._ended: set[str] = set()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ended(self, task_id: str) -> bool:
        """Whether the agent said it is done with ``task_id`` (its job is gone, it is idle)."""
        if task_id not in self._ended:
            with open(self.log, "rb") as fh:
                fh.seek(self._read)
                data = fh.read()
            cut = data.rfind(b"\n") + 1  # only whole lines
            self._read += cut
            for line in data[:cut].decode(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 5 and parts[2:5:2] == ["task", "ended"]:  # [stepline agent]
                    self._ended.add(parts[3])
        return task_id in self._ended

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Agents:
    """Starts agents on ``home``; ``stop_all`` sends each that still runs SIGTERM."""

    def __init__(self, home: Path, work: Path, pythonpath: str | None) -> None:
        self.home = home
        self.work = work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
        self.env["STEPLINE_HOME"] = str(home)
        if pythonpath:  # stepline is not installed: the agents import it from the checkout
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (pythonpath, self.env.get("PYTHONPATH")) if p
            )
        self.running: list[Agent] = []

    def start(self, queues: Sequence[str], name: str) -> Agent:
        from stepline.backend import get_backend

        folder = self.work / f"agent-{name}"
        folder.mkdir()
        log = self.work / f"agent-{name}.log"
        argv = [sys.executable, "-m", "stepline.cli.main", "agent", "--name", name]
        for q in queues:
            argv += ["--queue", q]
        argv += ["--poll", str(POLL)]
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=folder, env=self.env, stdout=out, stderr=out, stdin=subprocess.DEVNULL
            )
        agent = Agent(proc, log, name)
        self.running.append(agent)
        backend = get_backend()

        def registered() -> str | None:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"agent {name} exited with {proc.returncode} before registering:\n"
                    + agent.output()[-2000:]
                )
            return next((a.id for a in backend.get_agents() if a.pid == proc.pid), None)

        agent.id = wait_until(registered, f"agent {name} to register", interval=0.01)
        agent.startup = time.perf_counter() - t0
        return agent

    def stop(self, agent: Agent) -> None:
        agent.stop()
        if agent in self.running:
            self.running.remove(agent)

    def stop_all(self) -> None:
        for agent in list(self.running):  # all signalled first, then waited for
            if agent.proc.poll() is None:
                agent.proc.send_signal(signal.SIGTERM)
        for agent in list(self.running):
            self.stop(agent)


# -- tasks -----------------------------------------------------------------------------------
def new_step(name: str) -> str:
    """A created (not queued) trivial function step; its id."""
    from stepline.backend import get_backend
    from stepline.core.records import NewTask

    task = NewTask(name=name, project=PROJECT, script=dict(STEP_SCRIPT))
    return get_backend().create_task(task).id


def check_done(task_id: str, agent: Agent | Sequence[Agent]) -> Any:
    """The task's record, after checking that it completed on ``agent`` (one of them)."""
    from stepline.backend import get_backend
    from stepline.core.status import TaskStatus

    backend = get_backend()
    rec = backend.get_task(task_id)
    agents = [agent] if isinstance(agent, Agent) else list(agent)
    ran_on = backend.get_runtime(task_id).get("_agent")
    if rec.status != TaskStatus.completed or rec.started is None or rec.completed is None:
        log = "\n".join(ln.text for ln in backend.get_log(task_id))[-2000:]
        raise RuntimeError(
            f"task {rec.name} ({task_id}) is {rec.status.value}, not completed "
            f"{rec.status_reason}\n{log}"
        )
    if ran_on not in {a.id for a in agents}:
        raise RuntimeError(f"task {rec.name} ran on {ran_on!r}, not on {[a.id for a in agents]}")
    return rec


def one_task(agent: Agent, queue: str, name: str, pause: float = 0.0) -> tuple[float, float, float]:
    """Queue one task for an idle ``agent`` after ``pause`` seconds, wait until it is done
    with it; returns seconds from the enqueue to ``started`` and to ``completed``, and those
    of the enqueue call."""
    from stepline.backend import get_backend

    backend = get_backend()
    task_id = new_step(name)
    time.sleep(pause)
    t0 = time.time()
    backend.enqueue(task_id, queue)
    call = time.time() - t0
    wait_until(lambda: agent.ended(task_id), f"agent {agent.name} to end task {name}")
    rec = check_done(task_id, agent)
    return rec.started - t0, rec.completed - t0, call


def dispatch(
    agent: Agent, n: int, log: Callable[[str], None]
) -> tuple[list[float], list[float], list[float], tuple[float, float, float]]:
    """``n`` tasks one at a time for an idle agent, after the warm-up; returns the seconds
    enqueue -> started, enqueue -> completed and of the enqueue call of each, and those of
    the (cold) first warm-up task."""
    cold = one_task(agent, QUEUE, "warm-0")
    for i in range(1, WARMUP):
        one_task(agent, QUEUE, f"warm-{i}")
    starts, dones, calls = [], [], []
    pauses = random.Random(0)
    for i in range(n):
        pause = pauses.uniform(0, 2 * POLL)
        start, done, call = one_task(agent, QUEUE, f"dispatch-{i}", pause)
        starts.append(start)
        dones.append(done)
        calls.append(call)
    lo, hi = min(starts) * 1000, max(starts) * 1000
    log(f"dispatch: {n} tasks, enqueue -> started {lo:.1f}..{hi:.1f} ms")
    return starts, dones, calls, cold


def drain(agents: Sequence[Agent], n: int) -> tuple[float, dict[str, int]]:
    """``n`` tasks created, then queued on QUEUE one after another; seconds from before the
    first enqueue until the last completed, and how many each agent ran."""
    from stepline.backend import get_backend
    from stepline.core.records import TaskFilter
    from stepline.core.status import FINAL

    backend = get_backend()
    ids = [new_step(f"drain-{i}") for i in range(n)]
    t0 = time.time()
    for task_id in ids:
        backend.enqueue(task_id, QUEUE)

    def all_final() -> bool:
        records = backend.find_tasks(TaskFilter(ids=ids, archived=None))
        return len(records) == n and all(r.status in FINAL for r in records)

    wait_until(all_final, f"{n} tasks to be drained", interval=0.05)
    last = 0.0
    by_agent = {a.name: 0 for a in agents}
    names = {a.id: a.name for a in agents}
    for task_id in ids:
        rec = check_done(task_id, agents)
        last = max(last, rec.completed)
        by_agent[names[backend.get_runtime(task_id)["_agent"]]] += 1
    return last - t0, by_agent


def warm(agent: Agent, queue: str) -> None:
    for i in range(WARMUP):
        one_task(agent, queue, f"warm-{agent.name}-{i}")


# -- chains ----------------------------------------------------------------------------------
def run_chain(steps: int, mode: str, agent: Agent | None = None) -> float:
    """``bench_pipeline``'s chain of ``steps`` in this home: ``mode`` "agent" (steps on the
    default queue, run by ``agent``) or "local" (local processes). Seconds of
    ``start_locally`` plus writing what loggers still buffer; the run is checked."""
    from stepline.backend import get_backend

    pipe = bp.build_chain(steps)
    gc.collect()
    t0 = time.perf_counter()
    ok = pipe.start_locally(run_pipeline_steps_locally=(mode == "local"))
    bp.flush_logs()
    seconds = time.perf_counter() - t0
    what = f"the {mode} chain of {steps} steps"
    dag = pipe.get_pipeline_dag()
    if not ok:
        bad = [
            f"{n.name}: {n.status.value} {n.status_message}".strip()
            for n in dag.values()
            if n.status.value != "completed"
        ]
        raise RuntimeError(f"{what} failed: {bad[:3]}")
    backend = get_backend()
    params = {p.key: p.value for p in backend.get_params(dag[f"s{steps - 1}"].executed)}
    if params.get("return/out") != str(steps):
        raise RuntimeError(f"{what} returned {params.get('return/out')!r}, not {steps}")
    for node in dag.values():
        rec = backend.get_task(node.executed)
        if rec.parent != pipe.id or rec.status.value != "completed":
            raise RuntimeError(f"{what}: step {node.name} is not a completed task of this run")
        if agent is not None:
            check_done(rec.id, agent)
    if backend.count_log(pipe.id) < steps:
        raise RuntimeError(f"{what} logged fewer lines than its steps")
    return seconds


# -- the benchmark ---------------------------------------------------------------------------
@dataclass
class Settings:
    tasks: int
    steps: int
    drain: int
    repeats: int
    floor_spawns: int


def run(s: Settings, agents: Agents, log: Callable[[str], None]) -> tuple[list[Row], list[str]]:
    from stepline.backend import get_backend

    backend = get_backend()
    for q in (QUEUE, WARM_QUEUE):
        backend.create_queue(q)
    bp.floor_spawns(3)  # warm-up: the OS's caches of the interpreter
    notes: list[str] = []

    # 1. dispatch to an idle agent
    first = agents.start([QUEUE], "bench-1")
    notes.append(
        f"agent start-up (spawn until registered): {first.startup * 1000:.0f} ms; the agent "
        f"polls its queues every {POLL:g} s"
    )
    before = bp.floor_spawns(s.floor_spawns)
    starts, dones, calls, cold = dispatch(first, s.tasks, log)
    done_minus_start = [d - st for st, d in zip(starts, dones, strict=True)]
    floor = min(before, bp.floor_spawns(s.floor_spawns)) * 1000
    rows = [
        Row("dispatch to an idle agent, p50", s.tasks, percentile(starts, 50) * 1000, floor,
            target_ms=DISPATCH_TARGET_MS),
        Row("dispatch to an idle agent, p95", s.tasks, percentile(starts, 95) * 1000, floor),
        Row("enqueue -> completed, p50", s.tasks, percentile(dones, 50) * 1000, floor),
        Row("enqueue -> completed, p95", s.tasks, percentile(dones, 95) * 1000, floor),
    ]  # fmt: skip
    notes.append(
        "dispatch includes the enqueue call (a write transaction), median "
        f"{percentile(calls, 50) * 1000:.2f} ms; started -> completed (the forked child runs "
        f"the step and records it) median {percentile(done_minus_start, 50) * 1000:.1f} ms"
    )
    notes.append(
        f"first task of a fresh agent (it starts its fork server): {cold[0] * 1000:.1f} ms to "
        f"started, {cold[1] * 1000:.1f} ms to completed (not in the table)"
    )

    # 3. throughput, while the first agent is warm (printed last)
    drained: list[Row] = []
    if s.drain:
        before = bp.floor_spawns(s.floor_spawns)
        one, _ = drain([first], s.drain)
        log(f"drain, 1 agent: {one:.3f} s")
        second = agents.start([QUEUE, WARM_QUEUE], "bench-2")
        warm(second, WARM_QUEUE)
        two, by_agent = drain([first, second], s.drain)
        log(f"drain, 2 agents: {two:.3f} s")
        floor = min(before, bp.floor_spawns(s.floor_spawns)) * 1000
        drained += [
            Row("drain, 1 agent", s.drain, one * 1000 / s.drain, floor, rate=True),
            Row("drain, 2 agents", s.drain, two * 1000 / s.drain, floor, rate=True),
        ]
        notes.append(
            f"drain: the {s.drain} tasks are queued one by one as the agents run them; with 2 "
            "agents, " + " and ".join(f"{k} ran {v}" for k, v in by_agent.items())
        )
        agents.stop(second)
    agents.stop(first)

    # 2. chains: through an agent, in local processes
    served = agents.start(["default"], "default-1")
    run_chain(3, "agent", served)  # warm-up: the agent's fork server, imports, OS caches
    run_chain(3, "local")
    totals: dict[str, list[float]] = {"agent": [], "local": []}
    floors = []
    for rep in range(s.repeats):
        floors.append(bp.floor_spawns(s.steps) * 1000)
        totals["agent"].append(run_chain(s.steps, "agent", served))
        totals["local"].append(run_chain(s.steps, "local"))
        log(
            f"chains of {s.steps}: agent {totals['agent'][-1]:.3f} s, local "
            f"{totals['local'][-1]:.3f} s ({rep + 1}/{s.repeats})"
        )
    agents.stop(served)
    floor = min(floors)
    rows += [
        Row("chain through an agent", s.steps, min(totals["agent"]) * 1000 / s.steps, floor,
            rate=True),
        Row("chain in local processes", s.steps, min(totals["local"]) * 1000 / s.steps, floor,
            rate=True, target_ratio=bp.PROCESS_TARGET),
    ]  # fmt: skip
    notes.append(
        "chains: per step = (start_locally + flushing the logs) / steps, best of "
        f"{s.repeats}; through an agent {rows[-2].ms / rows[-1].ms:.2f}x the local processes' "
        "time per step; the idle agent keeps polling while the local chain runs"
    )
    return rows + drained, notes


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true",
        help=f"{QUICK['tasks']} dispatches, {QUICK['steps']} steps, {QUICK['drain']} drained, "
        "1 repeat",
    )  # fmt: skip
    parser.add_argument("--tasks", type=_count, default=None, help=f"dispatches (default {TASKS})")
    parser.add_argument("--steps", type=_count, default=None, help=f"chain length ({STEPS})")
    parser.add_argument(
        "--drain", type=_count, default=None, help=f"tasks drained at once, 0 skips ({DRAIN})"
    )
    parser.add_argument(
        "--repeat", "--repeats", dest="repeat", type=int, default=None,
        help="runs of each chain, the best is shown (default 3, 1 with --quick)",
    )  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="also print progress")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {"tasks": TASKS, "steps": STEPS, "drain": DRAIN}
    s = Settings(
        tasks=args.tasks if args.tasks is not None else quick["tasks"],
        steps=args.steps if args.steps is not None else quick["steps"],
        drain=args.drain if args.drain is not None else quick["drain"],
        repeats=args.repeat if args.repeat is not None else (1 if args.quick else 3),
        floor_spawns=3 if args.quick else FLOOR_SPAWNS,
    )
    if s.tasks < 1 or s.steps < 1 or s.repeats < 1:
        parser.error("--tasks, --steps and --repeat must be at least 1")

    pythonpath = None
    try:
        import stepline  # noqa: F401  (only checks that it can be imported)
    except ImportError:  # run from a checkout without an installed stepline
        pythonpath = str(Path(__file__).resolve().parent.parent)
        sys.path.insert(0, pythonpath)
    from stepline.backend import get_backend, reset_backend

    work = Path(tempfile.mkdtemp(prefix="stepline-bench-agents-"))
    home = work / "home"
    saved_env = {v: os.environ.get(v) for v in _ENV}
    os.environ["STEPLINE_HOME"] = str(home)
    for var in _ENV[1:]:
        os.environ.pop(var, None)
    reset_backend()
    get_backend()  # opens the store and creates its schema

    def log(msg: str) -> None:
        if args.verbose:
            print(f"  .. {msg}", file=sys.stderr, flush=True)

    agents = Agents(home, work, pythonpath)
    try:
        rows, notes = run(s, agents, log)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for agent in agents.running:
            print(f"-- agent {agent.name}:\n{agent.output()[-2000:]}", file=sys.stderr)
        return 1
    finally:
        agents.stop_all()
        bp.flush_logs()
        reset_backend()
        shutil.rmtree(work, ignore_errors=True)
        for var, value in saved_env.items():  # as it was, for callers running main() in-process
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value

    import platform
    import sqlite3

    print(
        f"stepline agents benchmark{' (--quick)' if args.quick else ''}: trivial function "
        "steps on real `stepline agent` processes, one fresh STEPLINE_HOME"
    )
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cpus; temp dir {tempfile.gettempdir()}"
    )
    print()
    print(render(rows))
    print()
    print(
        "ratio: ms / floor ms, floor = one `python -c pass` spawn measured in the same run; "
        "per s: steps or tasks per second"
    )
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
