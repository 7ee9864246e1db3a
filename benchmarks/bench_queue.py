"""Queue throughput: tasks claimed and completed per second by 1, 2 and 4 agents, on SQLite and
on PostgreSQL, next to a floor measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_queue.py              # 400 tasks drained, 2,000 claimed
    .venv/bin/python benchmarks/bench_queue.py --quick      # 20 and 100 (smoke run)
    .venv/bin/python benchmarks/bench_queue.py --drain 200 --claims 1000 --verbose

Each store gets a fresh STEPLINE_HOME in a temporary folder: SQLite (the home's own file), then
PostgreSQL (a fresh database of a server this script starts with ``tests/pgserver.py``: Debian's
``initdb``/``pg_ctl``, on loopback, ``fsync`` and ``synchronous_commit`` off as in the tests;
without PostgreSQL binaries only the SQLite rows are printed, with a note saying why).

Rows, for 1, 2 and 4 workers on each store:

1. drain (real agents): four ``stepline agent`` processes (``bench_agents.Agents``: started,
   waited for until registered, stopped with SIGTERM at the end), agent i serving its own queue
   ``own-i`` and the shared queue ``bench``. Each first runs ``WARMUP`` trivial tasks on its own
   queue (the first starts its fork server). For a row with k agents, every agent is first
   given a gate task on its own queue (``gate(path)``: waits until ``path`` exists), so that
   none can claim anything else (one job at a time); then ``--drain`` trivial function tasks
   (``def f(): return None``) are created and queued on ``bench``; then the k agents' gate is
   opened, while the others stay held by theirs until the row ends. Time = the last task's
   ``completed`` - the first one's ``started`` (set by ``claim``); per s = tasks / time. Each
   task is claimed, run in a child process forked from the agent's fork server, and recorded.
2. claim+complete (the store alone): k processes (``WORKER``, started once per store), each
   looping ``backend.claim(["raw"], its_id)`` then ``backend.set_status(task, completed)``
   until the queue is empty, with a heartbeat every second as an agent sends; ``--claims``
   tasks are queued before they are told to go. Time as in 1. This is the store's own limit
   for a queue, with no task process at all.

Every task is checked: it completed, claimed by one of the row's workers (runtime ``_agent``),
and the claim+complete workers together claimed exactly the tasks queued. A wrong or failed run
exits non-zero instead of reporting a fast number.

The floor of each measure is its 1-worker SQLite row, measured in the same run; ratio = the
row's tasks per second / the floor's (so more is better, and the floor rows read 1.00x).
Machines are shared and noisy, so nothing here asserts a rate: no targets are set.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_agents as ba  # real agents: start, wait until registered, stop

ROOT = Path(__file__).resolve().parent.parent
WORKERS = (1, 2, 4)
AGENTS = max(WORKERS)
DRAIN = 400
CLAIMS = 2000
QUICK = {"drain": 20, "claims": 100}
WARMUP = 3  #: trivial tasks each agent runs before any row (1 with --quick)
BENCH = "bench"
RAW = "raw"
PROJECT = "bench-queue"
TRIVIAL = {"kind": "function", "function": "f", "source": "def f():\n    return None\n"}
GATE = {
    "kind": "function",
    "function": "gate",
    "source": (
        "def gate(path, every):\n"
        "    import os, time\n"
        "    while not os.path.exists(path):\n"
        "        time.sleep(every)\n"
    ),
}
TIMEOUT = 300.0  #: seconds any one wait may take before the run is declared broken

#: A claim+complete worker: prints ``ready``, then, for each line ``go QUEUE`` on stdin, claims
#: and completes tasks of QUEUE until it is empty and prints ``done N``; leaves at EOF.
WORKER = """\
import sys, time
from stepline.backend import get_backend
from stepline.core.records import AgentRecord
from stepline.core.status import TaskStatus

name = sys.argv[1]
backend = get_backend()
backend.get_queues()  # connected
print("ready", flush=True)
for line in sys.stdin:
    queue = line.split()[1]
    # registered (again) only now: while it waited, it sent no heartbeat
    backend.register_agent(AgentRecord(id=name, name=name, queues=[queue]))
    n = 0
    beat = time.monotonic() + 1.0
    while True:
        task = backend.claim([queue], name)
        if task is None:
            break
        backend.set_status(task.id, TaskStatus.completed)
        n += 1
        if time.monotonic() >= beat:  # as an agent does: it also empties `running`
            backend.heartbeat(name, [])
            beat = time.monotonic() + 1.0
    backend.heartbeat(name, [])
    print("done", n, flush=True)
backend.remove_agent(name)
"""


# -- results ---------------------------------------------------------------------------------
@dataclass
class Row:
    measure: str  #: "drain" or "claim+complete"
    store: str  #: "SQLite" or "PostgreSQL"
    workers: int
    n: int  #: tasks
    seconds: float  #: first claim to last completed
    floor_per_second: float = 0.0

    @property
    def name(self) -> str:
        one, many = ("agent", "agents") if self.measure == "drain" else ("process", "processes")
        return f"{self.measure}, {self.workers} {one if self.workers == 1 else many}, {self.store}"

    @property
    def per_second(self) -> float:
        return self.n / self.seconds

    @property
    def ratio(self) -> float:
        return self.per_second / self.floor_per_second


def render(rows: Sequence[Row]) -> str:
    header = ("row", "n", "ms/task", "per s", "floor per s", "ratio")
    table = [header]
    for r in rows:
        table.append(
            (
                r.name,
                str(r.n),
                f"{r.seconds * 1000 / r.n:,.2f}",
                f"{r.per_second:,.1f}",
                f"{r.floor_per_second:,.1f}",
                f"{r.ratio:.2f}x",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    out = []
    for n, line in enumerate(table):
        cells = [line[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# -- tasks -----------------------------------------------------------------------------------
def new_task(name: str, script: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """A created (not queued) task: a function step running ``script`` with ``kwargs``, or a
    plain record (``script`` None: what the claim+complete rows claim)."""
    from stepline.backend import get_backend
    from stepline.core import params as pv
    from stepline.core.records import NewTask, Param

    params = [Param("kwargs", key, *pv.encode(value)) for key, value in kwargs.items()]
    full = {**script, "returns": []} if script else {}
    task = NewTask(name=name, project=PROJECT, script=full, params=params)
    return get_backend().create_task(task).id


def wait_for(ids: Sequence[str], statuses: Any, what: str) -> list[Any]:
    """The tasks' records, once every one of them is in one of ``statuses``."""
    from stepline.backend import get_backend
    from stepline.core.records import TaskFilter

    backend = get_backend()

    def check() -> list[Any] | None:
        recs = backend.find_tasks(TaskFilter(ids=list(ids), archived=None))
        ok = len(recs) == len(ids) and all(r.status in statuses for r in recs)
        return recs if ok else None

    return ba.wait_until(check, what, interval=0.05, timeout=TIMEOUT)


def finished(ids: Sequence[str], workers: dict[str, str], what: str) -> tuple[float, Counter[str]]:
    """Wait until the tasks ended; check that each completed, claimed by one of ``workers``
    (id -> name). Seconds from the first ``started`` to the last ``completed``, and how many
    each worker claimed."""
    from stepline.backend import get_backend
    from stepline.backend.sql.store import SqlBackend
    from stepline.core.status import FINAL, TaskStatus

    recs = wait_for(ids, FINAL, what)
    bad = [r for r in recs if r.status != TaskStatus.completed]
    if bad:
        raise RuntimeError(
            f"{what}: {len(bad)} task(s) did not complete; {bad[0].name} ({bad[0].id}) is "
            f"{bad[0].status.value}: {bad[0].status_reason[-1000:]}"
        )
    backend = get_backend()
    assert isinstance(backend, SqlBackend)  # the embedded store: many runtimes in one read
    ran_on = backend.get_runtimes(ids, ["_agent"])
    by = Counter(ran_on[i].get("_agent", "nobody") for i in ids)
    strangers = set(by) - set(workers)
    if strangers:
        raise RuntimeError(f"{what}: claimed by {sorted(strangers)}, not by {sorted(workers)}")
    first = min(r.started for r in recs)
    last = max(r.completed for r in recs)
    return last - first, Counter({workers[w]: c for w, c in by.items()})


# -- 1. drain: real agents -------------------------------------------------------------------
def start_agents(agents: ba.Agents, key: str, warmup: int) -> list[ba.Agent]:
    """AGENTS agents, agent i serving ``own-i`` then BENCH, each warm (``warmup`` tasks)."""
    from stepline.backend import get_backend

    backend = get_backend()
    backend.create_queue(BENCH)
    with ThreadPoolExecutor(AGENTS) as pool:  # side by side: each waits until registered
        started = list(
            pool.map(lambda i: agents.start([f"own-{i}", BENCH], f"{key}-{i}"), range(AGENTS))
        )
    warm = []
    for i in range(AGENTS):
        for j in range(warmup):
            warm.append(new_task(f"warm-{i}-{j}", TRIVIAL))
            backend.enqueue(warm[-1], f"own-{i}")
    finished(warm, {a.id: a.name for a in started}, "the warm-up tasks")
    return started


def drain(started: Sequence[ba.Agent], k: int, n: int, work: Path) -> tuple[float, Counter[str]]:
    """``n`` trivial tasks queued on BENCH while every agent holds a gate task, then drained by
    the first ``k`` agents (the others hold theirs until the end)."""
    from stepline.backend import get_backend
    from stepline.core.status import TaskStatus

    backend = get_backend()
    go, release = work / f"go-{k}", work / f"release-{k}"
    gates = []
    for i in range(len(started)):
        path, every = (go, 0.002) if i < k else (release, 0.05)
        gates.append(new_task(f"gate-{k}-{i}", GATE, path=str(path), every=every))
        backend.enqueue(gates[-1], f"own-{i}")
    wait_for(gates, {TaskStatus.in_progress}, "every agent to hold its gate task")
    ids = [new_task(f"drain-{k}-{j}", TRIVIAL) for j in range(n)]
    for task_id in ids:
        backend.enqueue(task_id, BENCH)
    go.touch()
    drained = finished(ids, {a.id: a.name for a in started[:k]}, f"{n} tasks, {k} agent(s)")
    release.touch()
    finished(gates, {a.id: a.name for a in started}, "the gate tasks")
    return drained


# -- 2. claim+complete: the store alone ------------------------------------------------------
class Worker:
    """A ``WORKER`` process; its stderr goes to ``log``."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", WORKER, name], env=env, cwd=log.parent,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip

    def line(self, what: str) -> list[str]:
        """The next line it prints, split; RuntimeError if it ends or stays silent."""
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        text = self.proc.stdout.readline() if ready else ""
        if not text:
            raise RuntimeError(
                f"worker {self.name} said nothing while {what}:\n"
                + self.log.read_text(errors="replace")[-2000:]
            )
        return text.split()

    def go(self, queue: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"go {queue}\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def workers(env: dict[str, str], key: str, work: Path) -> Iterator[list[Worker]]:
    crew = [Worker(f"{key}-raw-{i}", env, work / f"{key}-raw-{i}.log") for i in range(AGENTS)]
    try:
        yield crew
    finally:
        for w in crew:
            w.stop()


def claim_complete(crew: Sequence[Worker], k: int, n: int) -> tuple[float, Counter[str]]:
    """``n`` tasks queued on RAW, then claimed and completed by the first ``k`` workers."""
    from stepline.backend import get_backend

    backend = get_backend()
    backend.create_queue(RAW)
    ids = [new_task(f"claim-{k}-{j}") for j in range(n)]
    for task_id in ids:
        backend.enqueue(task_id, RAW)
    for w in crew[:k]:
        w.go(RAW)
    said = {w.name: w.line(f"claiming {n} tasks") for w in crew[:k]}
    counts = {name: int(words[1]) for name, words in said.items() if words[0] == "done"}
    if sum(counts.values()) != n or len(counts) != k:
        raise RuntimeError(f"{k} workers claimed {counts} of {n} tasks")
    took, by = finished(ids, {w.name: w.name for w in crew[:k]}, f"{n} claims, {k} worker(s)")
    if by != Counter(counts):
        raise RuntimeError(f"the store says {dict(by)} claimed, the workers {counts}")
    return took, by


# -- the benchmark ---------------------------------------------------------------------------
@dataclass
class Settings:
    drain: int
    claims: int
    warmup: int


@contextlib.contextmanager
def store_env(home: Path, db: str | None) -> Iterator[None]:
    """The process-wide backend on ``home`` (and on ``db`` when given)."""
    from stepline.backend import get_backend, reset_backend

    os.environ["STEPLINE_HOME"] = str(home)
    if db:
        os.environ["STEPLINE_DB"] = db
    else:
        os.environ.pop("STEPLINE_DB", None)
    reset_backend()
    get_backend()  # opens the store (and creates its schema)
    try:
        yield
    finally:
        reset_backend()


def run_store(
    store: str, db: str | None, s: Settings, work: Path, pythonpath: str | None,
    log: Callable[[str], None],
) -> tuple[list[Row], list[Row], list[str]]:  # fmt: skip
    key = store.lower()
    folder = work / key
    folder.mkdir()
    drained: list[Row] = []
    claimed: list[Row] = []
    notes: list[str] = []
    with store_env(folder / "home", db):
        agents = ba.Agents(folder / "home", folder, pythonpath)
        if db:
            agents.env["STEPLINE_DB"] = db
        # the workers start with the agents, and wait (on their stdin) until their rows
        with workers(agents.env, key, folder) as crew:
            try:
                started = start_agents(agents, key, s.warmup)
                log(f"{store}: {len(started)} agents started and warm")
                for k in WORKERS:
                    took, by = drain(started, k, s.drain, folder)
                    drained.append(Row("drain", store, k, s.drain, took))
                    log(f"{store}: drain, {k} agent(s): {took:.3f} s, {dict(by)}")
                notes.append(
                    f"drain on {store}, {AGENTS} agents: "
                    + ", ".join(f"{name} ran {n}" for name, n in sorted(by.items()))
                )
            except RuntimeError as exc:
                tails = "".join(
                    f"\n-- agent {a.name}:\n{a.output()[-2000:]}" for a in agents.running
                )
                raise RuntimeError(f"{exc}{tails}") from exc
            finally:
                agents.stop_all()
            for w in crew:
                if w.line("starting") != ["ready"]:
                    raise RuntimeError(f"worker {w.name} did not start")
            for k in WORKERS:
                took, by = claim_complete(crew, k, s.claims)
                claimed.append(Row("claim+complete", store, k, s.claims, took))
                log(f"{store}: claim+complete, {k} worker(s): {took:.3f} s, {dict(by)}")
    return drained, claimed, notes


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true",
        help=f"{QUICK['drain']} tasks drained and {QUICK['claims']} claimed per row",
    )  # fmt: skip
    parser.add_argument(
        "--drain", type=_count, default=None, help=f"tasks drained per row (default {DRAIN})"
    )
    parser.add_argument(
        "--claims", type=_count, default=None,
        help=f"tasks claimed+completed per row (default {CLAIMS})",
    )  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="also print progress")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else {"drain": DRAIN, "claims": CLAIMS}
    s = Settings(
        drain=args.drain or sizes["drain"],
        claims=args.claims or sizes["claims"],
        warmup=1 if args.quick else WARMUP,
    )

    pythonpath = None
    try:
        import stepline  # noqa: F401  (only checks that it can be imported)
    except ImportError:  # run from a checkout without an installed stepline
        pythonpath = str(ROOT)
        sys.path.insert(0, pythonpath)
    sys.path.insert(0, str(ROOT))  # tests.pgserver
    from tests.pgserver import PgCluster, start_cluster

    t0 = time.monotonic()

    def log(msg: str) -> None:
        if args.verbose:
            print(f"  .. {time.monotonic() - t0:5.1f} s  {msg}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="stepline-bench-queue-"))
    saved_env = {v: os.environ.get(v) for v in ba._ENV}
    for var in ba._ENV:
        os.environ.pop(var, None)
    cluster = None
    notes: list[str] = []
    server = "no PostgreSQL"
    try:
        stores: list[tuple[str, str | None]] = [("SQLite", None)]
        try:
            cluster = start_cluster()
        except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
            said = str(getattr(exc, "stderr", "") or "").strip()[-1000:]
            notes.append(f"no PostgreSQL rows: the server could not be started: {exc} {said}")
        if cluster is None:
            if not notes:
                notes.append(f"no PostgreSQL rows: {PgCluster.missing}")
        else:
            stores.append(("PostgreSQL", cluster.new_database()))
            out = subprocess.run([str(cluster.bin / "postgres"), "--version"],
                                 capture_output=True, text=True, check=False)  # fmt: skip
            server = out.stdout.strip() or "PostgreSQL"
            log(f"{server} started on port {cluster.port}")
        drained: list[Row] = []
        claimed: list[Row] = []
        for store, db in stores:
            d, c, n = run_store(store, db, s, work, pythonpath, log)
            drained += d
            claimed += c
            notes += n
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        for var, value in saved_env.items():  # as it was, for callers running main() in-process
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    rows = drained + claimed
    for measure in (drained, claimed):
        floor = measure[0].per_second  # 1 worker on SQLite
        for row in measure:
            row.floor_per_second = floor

    import platform
    import sqlite3

    print(
        f"stepline queue benchmark{' (--quick)' if args.quick else ''}: tasks claimed and "
        "completed per second, by real agents (drain) and by the store alone (claim+complete)"
    )
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"{server}, {os.cpu_count()} cpus; "
        f"temp dir {tempfile.gettempdir()}"
    )
    print()
    print(render(rows))
    print()
    print(
        "ratio: per s / floor per s, floor = the measure's 1-worker SQLite row, measured in "
        "the same run; time: the first task's started (its claim) to the last one's completed"
    )
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
