"""Per-step overhead of a pipeline, next to a floor measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_pipeline.py             # 10 and 100 steps, best of 3
    .venv/bin/python benchmarks/bench_pipeline.py --quick     # a few seconds (smoke run)
    .venv/bin/python benchmarks/bench_pipeline.py --steps 10,50 --repeat 5
    .venv/bin/python benchmarks/bench_pipeline.py --profile   # also where the time goes

The pipeline is a chain of trivial function steps: step ``s0`` runs ``inc(x=0)``, step ``sK``
runs ``inc(x="${sK-1.out}")``, so a chain of N steps returns N (checked: a broken run cannot
report a fast number). Each run gets a fresh STEPLINE_HOME in a temporary folder; the store is
opened (its schema created) and the pipeline defined before the clock starts, so a row's time
is ``start_locally`` plus writing what loggers still buffer: creating the controller's task and
every step's task, resolving the references, running the steps, recording their status,
results and log. As in a script that runs one pipeline, every run starts with a new engine
(SQLAlchemy compiles its statements again) and, in process mode, a new fork server.

Rows, each the best (min) of ``--repeat`` runs, interleaved with the floor's runs:

1. in-process (``start_locally(run_pipeline_steps_locally=True, in_process=True)``): steps are
   called in a thread of this process. Floor: the same chain of plain Python calls, per call.
   Target: at most 2 ms of overhead per step (per-step time minus the floor); ratio =
   overhead / 2 ms.
2. local processes (``start_locally(run_pipeline_steps_locally=True)``): each step runs in a
   child process (forked from the fork server where ``os.fork`` exists). Floor: spawning
   ``sys.executable -c pass`` N times one after another, per spawn. Target: per-step time at
   most 1.5x the floor; ratio = per-step time / floor.

Machines are shared and noisy, so nothing here asserts a time: the exit status is 0 whether
targets are met or not ("ok?" says which), and non-zero only when a run fails or returns a
wrong result.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keep the module-level imports above to the standard library: a function step stores (and
# runs) the imports of the module that defines it.

STEPS = (10, 100)
QUICK_STEPS = (5,)
IN_PROCESS_TARGET_MS = 2.0
PROCESS_TARGET = 1.5

#: The environment a run sets (STEPLINE_HOME) or clears (the rest).
_ENV = ("STEPLINE_HOME", "STEPLINE_DB", "STEPLINE_STORAGE", "STEPLINE_API", "STEPLINE_TASK_ID")


def inc(x: int):  # the step: its source is stored, and run from there
    return x + 1


# -- results ---------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    mode: str  #: "in-process" or "process"
    steps: int
    totals: list[float] = field(default_factory=list)  #: seconds per pipeline run
    floors: list[float] = field(default_factory=list)  #: seconds per call / per spawn

    @property
    def total(self) -> float:
        return min(self.totals)

    @property
    def per_step(self) -> float:
        return self.total / self.steps

    @property
    def floor(self) -> float:
        return min(self.floors)

    @property
    def ratio(self) -> float:
        if self.mode == "in-process":
            return (self.per_step - self.floor) * 1000 / IN_PROCESS_TARGET_MS
        return self.per_step / self.floor

    @property
    def target(self) -> str:
        if self.mode == "in-process":
            return f"overhead <= {IN_PROCESS_TARGET_MS:g} ms"
        return f"<= {PROCESS_TARGET:g}x floor"

    @property
    def ok(self) -> bool:
        return self.ratio <= (1.0 if self.mode == "in-process" else PROCESS_TARGET)


def _fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms >= 1:
        return f"{ms:,.2f}"
    if ms >= 0.01:
        return f"{ms:.4f}"
    return f"{ms:.2g}"


def render(rows: Sequence[Row]) -> str:
    header = ("row", "steps", "total s", "per-step ms", "floor ms", "ratio", "target", "ok?")
    table = [header]
    for r in rows:
        table.append(
            (
                r.name,
                str(r.steps),
                f"{r.total:.3f}",
                _fmt_ms(r.per_step),
                _fmt_ms(r.floor),
                f"{r.ratio:.2f}x",
                r.target,
                "ok" if r.ok else "MISS",
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


def render_repeats(rows: Sequence[Row]) -> str:
    out = []
    for r in rows:
        runs = ", ".join(f"{t:.3f}" for t in r.totals)
        floors = ", ".join(_fmt_ms(f) for f in r.floors)
        out.append(f"{r.name} x{r.steps}: runs {runs} s; floor {floors} ms")
    return "\n".join(out)


# -- the pipeline ----------------------------------------------------------------------------
def build_chain(steps: int) -> Any:
    from stepline.pipeline.controller import PipelineController

    pipe = PipelineController(name=f"chain-{steps}", project="bench")
    pipe.add_function_step("s0", inc, function_kwargs={"x": 0}, function_return=["out"])
    for i in range(1, steps):
        pipe.add_function_step(
            f"s{i}", inc, function_kwargs={"x": f"${{s{i - 1}.out}}"}, function_return=["out"]
        )
    return pipe


class Homes:
    """Fresh STEPLINE_HOMEs under ``work``, one per pipeline run."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.count = 0

    def fresh(self) -> Path:
        from stepline.backend import get_backend, reset_backend

        self.count += 1
        home = self.work / f"home-{self.count}"
        os.environ["STEPLINE_HOME"] = str(home)
        for var in _ENV[1:]:
            os.environ.pop(var, None)
        reset_backend()
        get_backend()  # opens the store and creates its schema, before any clock starts
        return home

    def drop(self, home: Path) -> None:
        from stepline.backend import reset_backend

        flush_logs()  # nothing left for the background flusher to write into a removed folder
        reset_backend()
        shutil.rmtree(home, ignore_errors=True)


def flush_logs() -> None:
    """Write what loggers of this process still buffer (part of a run: its log lines)."""
    from stepline.sdk import logger

    logger._flusher.flush_all()


@dataclass
class Run:
    seconds: float
    define_seconds: float
    pipe: Any
    home: Path


def run_chain(homes: Homes, steps: int, mode: str, *, keep: bool = False) -> Run:
    """Define and run a chain of ``steps`` in a fresh home; check that it returned ``steps``.
    With ``keep`` the home (and the open backend) stay for the caller to read and drop."""
    from stepline.backend import get_backend

    home = homes.fresh()
    t0 = time.perf_counter()
    pipe = build_chain(steps)
    define = time.perf_counter() - t0
    gc.collect()
    t0 = time.perf_counter()
    ok = pipe.start_locally(run_pipeline_steps_locally=True, in_process=(mode == "in-process"))
    flush_logs()
    seconds = time.perf_counter() - t0
    try:
        if not ok:
            bad = [
                f"{n.name}: {n.status.value} {n.status_message}".strip()
                for n in pipe.get_pipeline_dag().values()
                if n.status.value != "completed"
            ]
            raise RuntimeError(f"the {mode} pipeline of {steps} steps failed: {bad[:3]}")
        backend = get_backend()
        last = pipe.get_pipeline_dag()[f"s{steps - 1}"]
        params = {p.key: p.value for p in backend.get_params(last.executed)}
        if params.get("return/out") != str(steps):
            raise RuntimeError(
                f"the {mode} pipeline of {steps} steps returned {params.get('return/out')!r}, "
                f"not {steps}"
            )
        logged = backend.count_log(pipe.id)
        if logged < steps:
            raise RuntimeError(
                f"the {mode} pipeline of {steps} steps logged {logged} lines, fewer than its steps"
            )
    finally:
        if not keep:
            homes.drop(home)
    return Run(seconds, define, pipe, home)


# -- floors ----------------------------------------------------------------------------------
def floor_calls(steps: int, min_seconds: float = 0.05) -> float:
    """Seconds per call of a chain of ``steps`` plain calls of ``inc``."""
    loops = 0
    t0 = time.perf_counter()
    while True:
        x = 0
        for _ in range(steps):
            x = inc(x)
        if x != steps:
            raise RuntimeError("the plain call chain is broken")
        loops += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return elapsed / (loops * steps)


def floor_spawns(n: int) -> float:
    """Seconds per spawn of ``sys.executable -c pass``, ``n`` of them one after another."""
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - t0) / n


# -- the benchmark ---------------------------------------------------------------------------
MODES = {"in-process": "in-process", "process": "local processes"}


def run(
    steps_list: Sequence[int],
    modes: Sequence[str],
    repeats: int,
    homes: Homes,
    log: Callable[[str], None],
) -> tuple[list[Row], list[str]]:
    rows = [Row(MODES[m], m, n) for m in modes for n in steps_list]
    # Warm up: imports, the OS's caches of the interpreter and the libraries. Statement caches
    # stay cold: each run opens a new store (a new engine), as a script running one pipeline.
    for mode in modes:
        run_chain(homes, 3, mode)
    floor_spawns(3)
    define: dict[int, list[float]] = {}
    for rep in range(repeats):
        for row in rows:
            if row.mode == "in-process":
                row.floors.append(floor_calls(row.steps))
            else:
                row.floors.append(floor_spawns(row.steps))
            result = run_chain(homes, row.steps, row.mode)
            row.totals.append(result.seconds)
            define.setdefault(row.steps, []).append(result.define_seconds / row.steps)
            log(f"{row.name} x{row.steps}: {result.seconds:.3f} s ({rep + 1}/{repeats})")
    notes = [
        "defining the chain (add_function_step, not in the table): "
        + ", ".join(f"{_fmt_ms(min(v))} ms/step for {n}" for n, v in sorted(define.items()))
    ]
    return rows, notes


# -- profile ---------------------------------------------------------------------------------
class _ThreadProfiles:
    """cProfile of every thread started while it is on (and of the calling thread)."""

    def __init__(self) -> None:
        import cProfile
        import threading

        self._cprofile = cProfile
        self._threading = threading
        self._lock = threading.Lock()
        self.profiles: list[Any] = []

    def _start_here(self, *_: Any) -> None:
        sys.setprofile(None)  # the hook only starts this thread's own profiler
        prof = self._cprofile.Profile()
        with self._lock:
            self.profiles.append(prof)
        prof.enable()

    def __enter__(self) -> _ThreadProfiles:
        main = self._cprofile.Profile()
        self.profiles.append(main)
        main.enable()
        if sys.version_info < (3, 12):  # from 3.12 one profiler sees every thread
            self._threading.setprofile(self._start_here)
        return self

    def __exit__(self, *_: Any) -> None:
        if sys.version_info < (3, 12):
            self._threading.setprofile(None)  # type: ignore[arg-type]
        for prof in self.profiles:
            prof.disable()


def profile_in_process(homes: Homes, steps: int, top: int) -> str:
    """One in-process run: the store's calls and transactions per step, and cProfile of every
    thread (the caller, the scheduler, the steps, the state writer)."""
    import io
    import pstats
    import threading

    from sqlalchemy import event

    from stepline.backend import get_backend
    from stepline.backend.sql.store import SqlBackend

    calls: dict[str, int] = {}
    spent: dict[str, float] = {}  #: seconds in the outermost store call of a thread
    depth = threading.local()
    originals: dict[str, Any] = {}
    for name, fn in vars(SqlBackend).items():
        if name.startswith("__") or not callable(fn) or isinstance(fn, (staticmethod, type)):
            continue

        def counted(*args: Any, _fn: Any = fn, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            outer = not getattr(depth, "n", 0)
            depth.n = getattr(depth, "n", 0) + 1
            t0 = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                depth.n -= 1
                if outer:
                    spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t0

        originals[name] = fn
        setattr(SqlBackend, name, counted)
    tx = {"write": 0, "read": 0, "statements": 0}

    def on_begin(conn: Any) -> None:
        tx["write" if conn.get_execution_options().get("stepline_write") else "read"] += 1

    def on_execute(*_: Any) -> None:
        tx["statements"] += 1

    home = homes.fresh()
    try:
        engine = get_backend().engine  # type: ignore[attr-defined]
        event.listen(engine, "begin", on_begin)
        event.listen(engine, "before_cursor_execute", on_execute)
        pipe = build_chain(steps)
        calls.clear()
        t0 = time.perf_counter()
        ok = pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
        flush_logs()
        timed = time.perf_counter() - t0
        if not ok:
            raise RuntimeError("the profiled in-process pipeline failed")
        counts, times = dict(calls), dict(spent)
        homes.drop(home)
        home = homes.fresh()
        pipe = build_chain(steps)
        t0 = time.perf_counter()
        with _ThreadProfiles() as profiles:
            ok = pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
            flush_logs()
        seconds = time.perf_counter() - t0
        if not ok:
            raise RuntimeError("the profiled in-process pipeline failed")
    finally:
        for name, fn in originals.items():
            setattr(SqlBackend, name, fn)
        homes.drop(home)
    store_ms = sum(times.values()) * 1000 / steps
    out = [
        f"in-process, {steps} steps, store calls counted and timed: {timed * 1000 / steps:.2f} "
        f"ms/step, of which {store_ms:.2f} ms in the store",
        f"store transactions per step: {tx['write'] / steps:.2f} write (BEGIN IMMEDIATE), "
        f"{tx['read'] / steps:.2f} read; SQL statements per step: "
        f"{tx['statements'] / steps:.1f}",
        "store calls per step (SqlBackend methods; ms/step counts the outermost call only):",
        "  calls/step  ms/step  method",
    ]
    for name, n in sorted(counts.items(), key=lambda kv: (-times.get(kv[0], 0.0), kv[0])):
        ms = f"{times[name] * 1000 / steps:7.3f}" if name in times else "      -"
        out.append(f"  {n / steps:10.2f}  {ms}  {name}")
    text = io.StringIO()
    stats = pstats.Stats(*profiles.profiles, stream=text)
    stats.sort_stats("cumulative").print_stats("stepline", top)
    out.append(
        f"cProfile of another run ({seconds * 1000 / steps:.2f} ms/step under the profiler), "
        f"{len(profiles.profiles)} thread(s), stepline's functions by cumulative time, summed "
        "over threads (waits included):"
    )
    out.append(text.getvalue().strip())
    return "\n".join(out)


def profile_process(homes: Homes, steps: int) -> str:
    """Where a step's time goes in process mode, from the timestamps the store recorded."""
    import json
    import statistics

    from stepline.backend import get_backend

    result = run_chain(homes, steps, "process", keep=True)
    backend = get_backend()
    pipe = result.pipe
    pipe_rec = backend.get_task(pipe.id)
    runtime = backend.get_runtime(pipe.id)
    rows = []
    for i in range(steps):
        node = pipe.get_pipeline_dag()[f"s{i}"]
        rec = backend.get_task(node.executed)
        state = json.loads(runtime[f"_node/s{i}"])
        rows.append((rec.created, rec.started, rec.completed, state["ended"]))
    homes.drop(result.home)

    def med(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:7.2f} ms"

    launch_to_start = [s - c for c, s, _, _ in rows]
    start_to_done = [d - s for _, s, d, _ in rows]
    done_to_seen = [e - d for _, _, d, e in rows]
    seen_to_next = [rows[i + 1][0] - rows[i][3] for i in range(steps - 1)]
    first = rows[0][0] - pipe_rec.created
    fork_server = rows[0][1] - rows[0][0] - statistics.median(launch_to_start[1:] or [0.0])
    tail = (pipe_rec.completed or rows[-1][3]) - rows[-1][3]
    return "\n".join(
        [
            f"process mode, {steps} steps: {result.seconds:.3f} s "
            f"({result.seconds * 1000 / steps:.2f} ms/step); medians per step:",
            f"  {med(launch_to_start)}  step task created -> child marked it in_progress "
            "(fork + child start-up)",
            f"  {med(start_to_done)}  in_progress -> completed, in the child (load code and "
            "arguments, call, store results)",
            f"  {med(done_to_seen)}  completed -> the controller saw the end (child exit, atexit, "
            "reap, event pipe, status read)",
            f"  {med(seen_to_next)}  end seen -> next step task created (recording, resolving "
            "${prev.out}, creating the task)",
            f"once: {first * 1000:.1f} ms controller task -> first step task; the first step "
            f"waited {fork_server * 1000:.1f} ms longer than the median (the fork server "
            f"starting); {tail * 1000:.1f} ms last step -> pipeline completed",
        ]
    )


_STARTUP = """
import json, time
t0 = time.perf_counter()
import stepline.pipeline.runner, stepline.pipeline.forkserver as fs
t1 = time.perf_counter()
import sqlalchemy, stepline.backend.sql.store
t2 = time.perf_counter()
from stepline.backend import get_backend
backend = get_backend()
t3 = time.perf_counter()
warm = getattr(fs, "_warm", None)
if warm is not None:
    warm(backend)
t4 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2, t4 - t3, warm is not None]))
"""


def profile_startup(homes: Homes, repeats: int = 5) -> str:
    """What the fork server pays once per run, in a store that exists (as in a run): the
    interpreter, stepline's imports, opening the store, warming its statements."""
    import json

    home = homes.fresh()
    try:
        bare, whole, parts = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", _STARTUP], check=True, capture_output=True, text=True
            )
            whole.append(time.perf_counter() - t0)
            parts.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        homes.drop(home)
    imp, sqla, opened, warmed = (min(p[i] for p in parts) * 1000 for i in range(4))
    warm_text = f"warm the statements {warmed:.1f} ms" if parts[0][4] else "no _warm step"
    return (
        f"fork server start-up, best of {repeats}: {min(whole) * 1000:.1f} ms in all "
        f"(python -c pass: {min(bare) * 1000:.1f} ms); inside it: import stepline.pipeline."
        f"runner {imp:.1f} ms, import SQLAlchemy and the store {sqla:.1f} ms, open the store "
        f"{opened:.1f} ms, {warm_text}"
    )


# -- main ------------------------------------------------------------------------------------
def _steps(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of step counts") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("step counts must be at least 1")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"steps {QUICK_STEPS}, 1 repeat")
    parser.add_argument(
        "--repeat", "--repeats", dest="repeat", type=int, default=None,
        help="runs of each row, the best is shown (default 3, 1 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=_steps, action="extend", default=None,
        help=f"chain lengths, e.g. '10,100' or '10 100' (default {','.join(map(str, STEPS))})",
    )  # fmt: skip
    parser.add_argument(
        "--mode", choices=["both", *MODES], default="both", help="which rows to run"
    )
    parser.add_argument("--profile", action="store_true", help="also show where the time goes")
    parser.add_argument("--top", type=int, default=25, help="cProfile lines with --profile")
    parser.add_argument("--verbose", action="store_true", help="also print every repeat")
    args = parser.parse_args(argv)
    repeats = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeat must be at least 1")
    steps_list = list(dict.fromkeys(args.steps or (QUICK_STEPS if args.quick else STEPS)))
    modes = list(MODES) if args.mode == "both" else [args.mode]

    try:
        import stepline  # noqa: F401  (only checks that it can be imported)
    except ImportError:  # run from a checkout without an installed stepline
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

    work = Path(tempfile.mkdtemp(prefix="stepline-bench-pipeline-"))
    saved_env = {v: os.environ.get(v) for v in _ENV}

    def log(msg: str) -> None:
        if args.verbose:
            print(f"  .. {msg}", file=sys.stderr, flush=True)

    homes = Homes(work)
    profiles: list[str] = []
    try:
        rows, notes = run(steps_list, modes, repeats, homes, log)
        if args.profile:
            n = max(steps_list)
            if "in-process" in modes:
                profiles.append(profile_in_process(homes, n, args.top))
            if "process" in modes:
                profiles.append(profile_process(homes, n))
                profiles.append(profile_startup(homes))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        from stepline.backend import reset_backend

        reset_backend()
        shutil.rmtree(work, ignore_errors=True)
        for var, value in saved_env.items():  # as it was, for callers running main() in-process
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value

    import platform
    import sqlite3

    import sqlalchemy

    print(
        f"stepline pipeline benchmark{' (--quick)' if args.quick else ''}: a chain of trivial "
        f"function steps, best of {repeats}, each run in a fresh STEPLINE_HOME"
    )
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"sqlalchemy {sqlalchemy.__version__}, {os.cpu_count()} cpus, fork server: "
        f"{'yes' if hasattr(os, 'fork') and sys.platform != 'win32' else 'no'}; "
        f"temp dir {tempfile.gettempdir()}"
    )
    print()
    print(render(rows))
    print()
    print(
        "ratio: in-process rows (per-step - floor) / 2 ms, floor = one plain call of the step "
        "function; local processes rows per-step / floor, floor = one `python -c pass` spawn"
    )
    for note in notes:
        print(f"note: {note}")
    if args.verbose:
        print()
        print(render_repeats(rows))
    for text in profiles:
        print()
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
