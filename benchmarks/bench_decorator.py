"""Per-step overhead of PipelineDecorator pipelines, next to floors measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_decorator.py             # 100 steps, best of 3
    .venv/bin/python benchmarks/bench_decorator.py --quick     # a few seconds (smoke run)
    .venv/bin/python benchmarks/bench_decorator.py --steps 10,100 --repeat 5 --mode debug
    .venv/bin/python benchmarks/bench_decorator.py --profile   # also where the time goes

Two pipelines of N steps of the component ``add_one(x) = x + 1`` (``decorator_steps.py``):

* chain: ``x = add_one(x)`` N times from 0, each step taking the previous result by
  reference; the pipeline returns N;
* fan-out: N independent calls ``add_one(i)``, then the logic sums the results (waiting for
  each); the pipeline returns N(N+1)/2.

Every run is checked: the value the pipeline function returned, and in the store the pipeline's
task completed, N completed step tasks under it and at least N lines in its log. A broken run
exits non-zero instead of reporting a fast number. Each run gets a fresh STEPLINE_HOME, opened
(its schema created) before the clock starts, so a row's time is the call of the pipeline
function (creating the pipeline's task, every step's task, running the steps, loading the
results the logic uses, recording status and results) plus writing what loggers still buffer.
A component builds its stored code on its first call and keeps it, so that cost is paid in the
warm-up, as in a script that calls a component many times. As in bench_pipeline.py, every run
starts with a new engine and, in local mode, a new fork server.

Rows, each the best (min) of ``--repeat`` runs, interleaved with the floor's runs:

* decorator debug (``PipelineDecorator.debug_pipeline()``): steps run in threads of this
  process. Floor: one plain call of the step function (bench_pipeline's chain of calls).
  Target: at most 2 ms of overhead per step; ratio = (per-step - floor) / 2 ms.
* decorator local (``PipelineDecorator.run_locally()``): each step in a child process, forked
  from the fork server. Floor: one ``python -c pass`` spawn (N of them one after another).
  Target: per-step at most 1.5x the floor; ratio = per-step / floor. The fan-out runs up to
  ``max_workers`` steps at once (default: the CPU count), the floor spawns one at a time.
* controller: bench_pipeline's chain of N steps in the matching mode (``in_process=True`` /
  local processes), same floor and target, for a side-by-side comparison.

Machines are shared and noisy, so nothing here asserts a time: the exit status is 0 whether
targets are met or not ("ok?" says which), non-zero only when a run fails or is wrong.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_pipeline as bp  # the floors, Homes, Row and the table

STEPS = (100,)
QUICK_STEPS = (5,)
#: decorator mode -> bench_pipeline's row mode (which floor, target and ratio apply)
MODES = {"debug": "in-process", "local": "process"}
SHAPES = ("chain", "fan-out")
CONTROLLER = {"debug": "controller in-process", "local": "controller local processes"}


def expected(shape: str, steps: int) -> int:
    return steps if shape == "chain" else steps * (steps + 1) // 2


@dataclass
class Case:
    """A row and what it runs: ``kind`` is a shape of SHAPES or "controller"."""

    row: bp.Row
    mode: str  #: "debug" or "local"
    kind: str


@dataclass
class DecoratorRun:
    seconds: float
    pipe_id: str
    home: Path


def _steps_module() -> Any:
    import decorator_steps

    return decorator_steps


def _set_mode(mode: str) -> None:
    from stepline.pipeline.decorator import PipelineDecorator

    if mode == "debug":
        PipelineDecorator.debug_pipeline()
    else:
        PipelineDecorator.run_locally()


def run_decorator(
    homes: bp.Homes,
    steps: int,
    mode: str,
    shape: str,
    *,
    keep: bool = False,
    around: Callable[[], Any] = nullcontext,
) -> DecoratorRun:
    """Run the ``shape`` pipeline of ``steps`` in ``mode`` in a fresh home and check it. With
    ``keep`` the home (and the open backend) stay for the caller to read and drop; ``around``
    makes a context manager that is active while the clock runs (a profiler)."""
    ds = _steps_module()
    pipeline = ds.chain if shape == "chain" else ds.fan_out
    what = f"the decorator's {mode} {shape} of {steps} steps"
    home = homes.fresh()
    try:
        _set_mode(mode)
        gc.collect()
        t0 = time.perf_counter()
        with around():
            try:
                value = pipeline(steps)
            except Exception as exc:
                raise RuntimeError(f"{what} raised {type(exc).__name__}: {exc}") from exc
            bp.flush_logs()
        seconds = time.perf_counter() - t0
        pipe_id = check_run(what, steps, value, expected(shape, steps))
    except BaseException:
        homes.drop(home)
        raise
    if not keep:
        homes.drop(home)
    return DecoratorRun(seconds, pipe_id, home)


def check_run(what: str, steps: int, value: Any, want: int) -> str:
    """The run's pipeline task id, after checking its result and what the store holds."""
    from stepline.backend import get_backend
    from stepline.core.records import TaskFilter
    from stepline.core.status import TaskStatus, TaskTypes

    if type(value) is not int or value != want:
        raise RuntimeError(f"{what} returned {value!r}, not {want}")
    backend = get_backend()
    pipes = backend.find_tasks(TaskFilter(type=[str(TaskTypes.controller)]))
    if len(pipes) != 1 or pipes[0].status != TaskStatus.completed:
        found = [(p.name, p.status.value) for p in pipes]
        raise RuntimeError(f"{what}: expected one completed pipeline task, found {found}")
    pipe = pipes[0]
    tasks = backend.find_tasks(TaskFilter(parent=pipe.id))
    done = [t for t in tasks if t.status == TaskStatus.completed]
    if len(tasks) != steps or len(done) != steps:
        raise RuntimeError(
            f"{what}: {len(tasks)} step tasks, {len(done)} completed; expected {steps}"
        )
    logged = backend.count_log(pipe.id)
    if logged < steps:
        raise RuntimeError(f"{what} logged {logged} lines, fewer than its steps")
    return pipe.id


# -- the benchmark ---------------------------------------------------------------------------
def cases(steps_list: Sequence[int], modes: Sequence[str]) -> list[Case]:
    out = []
    for mode in modes:
        for n in steps_list:
            for shape in SHAPES:
                row = bp.Row(f"decorator {mode}, {shape}", MODES[mode], n)
                out.append(Case(row, mode, shape))
            row = bp.Row(f"{CONTROLLER[mode]}, chain", MODES[mode], n)
            out.append(Case(row, mode, "controller"))
    return out


def run(
    steps_list: Sequence[int],
    modes: Sequence[str],
    repeats: int,
    homes: bp.Homes,
    log: Callable[[str], None],
) -> tuple[list[bp.Row], list[str]]:
    todo = cases(steps_list, modes)
    # Warm up: imports, each component's stored code, the OS's caches. Statement caches stay
    # cold: each run opens a new store, as a script running one pipeline.
    for mode in modes:
        for shape in SHAPES:
            run_decorator(homes, 3, mode, shape)
        bp.run_chain(homes, 3, MODES[mode])
    if "local" in modes:
        bp.floor_spawns(3)
    for rep in range(repeats):
        floors: dict[tuple[str, int], float] = {}  # one floor per mode and size per repeat
        for case in todo:
            row = case.row
            key = (row.mode, row.steps)
            if key not in floors:
                if row.mode == "in-process":
                    floors[key] = bp.floor_calls(row.steps)
                else:
                    floors[key] = bp.floor_spawns(row.steps)
            row.floors.append(floors[key])
            if case.kind == "controller":
                seconds = bp.run_chain(homes, row.steps, row.mode).seconds
            else:
                seconds = run_decorator(homes, row.steps, case.mode, case.kind).seconds
            row.totals.append(seconds)
            log(f"{row.name} x{row.steps}: {seconds:.3f} s ({rep + 1}/{repeats})")
    rows = [c.row for c in todo]
    notes = []
    for mode in modes:
        for n in steps_list:
            group = {c.kind: c.row for c in todo if c.mode == mode and c.row.steps == n}
            ctrl = group["controller"].per_step
            notes.append(
                f"{mode}, {n} steps, per step vs the controller's chain: "
                + ", ".join(f"{s} {group[s].per_step / ctrl:.2f}x" for s in SHAPES)
            )
    workers = os.cpu_count() or 1
    notes.append(
        f"fan-out rows run up to {workers} steps at once (max_workers default: the CPU "
        "count); the local floor spawns one process at a time"
    )
    return rows, notes


# -- profile ---------------------------------------------------------------------------------
class StoreCounter:
    """Counts (and times) SqlBackend method calls, transactions and SQL statements of this
    process while ``on``."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.spent: dict[str, float] = {}  #: seconds in the outermost store call of a thread
        self.tx = {"write": 0, "read": 0, "statements": 0}

    @contextmanager
    def on(self) -> Iterator[StoreCounter]:
        import threading

        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        from stepline.backend.sql.store import SqlBackend

        depth = threading.local()
        originals: dict[str, Any] = {}
        calls, spent, tx = self.calls, self.spent, self.tx
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

        def on_begin(conn: Any) -> None:
            tx["write" if conn.get_execution_options().get("stepline_write") else "read"] += 1

        def on_execute(*_: Any) -> None:
            tx["statements"] += 1

        event.listen(Engine, "begin", on_begin)
        event.listen(Engine, "before_cursor_execute", on_execute)
        try:
            yield self
        finally:
            event.remove(Engine, "begin", on_begin)
            event.remove(Engine, "before_cursor_execute", on_execute)
            for name, fn in originals.items():
                setattr(SqlBackend, name, fn)


def _controller_counted(homes: bp.Homes, steps: int) -> tuple[float, StoreCounter]:
    """bench_pipeline's in-process chain, its store calls counted while the clock runs."""
    counter = StoreCounter()
    home = homes.fresh()
    try:
        pipe = bp.build_chain(steps)
        gc.collect()
        t0 = time.perf_counter()
        with counter.on():
            ok = pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
            bp.flush_logs()
        seconds = time.perf_counter() - t0
        if not ok:
            raise RuntimeError("the profiled controller chain failed")
    finally:
        homes.drop(home)
    return seconds, counter


def profile_debug(homes: bp.Homes, steps: int, top: int) -> str:
    """Store calls per step of debug-mode runs next to the controller's in-process chain, and
    a cProfile of every thread of a debug-mode chain and fan-out."""
    import io
    import pstats

    counted: dict[str, tuple[float, StoreCounter]] = {}
    for shape in SHAPES:
        counter = StoreCounter()
        result = run_decorator(homes, steps, "debug", shape, around=counter.on)
        counted[shape] = (result.seconds, counter)
    counted["controller"] = _controller_counted(homes, steps)
    kinds = [*SHAPES, "controller"]
    out = [
        f"debug mode, {steps} steps, store calls counted and timed, ms/step in the store "
        "(summed over threads, so it can exceed the run) / in all: "
        + ", ".join(
            f"{k} {sum(c.spent.values()) * 1000 / steps:.2f} / {s * 1000 / steps:.2f}"
            for k, (s, c) in counted.items()
        ),
        "per step: write transactions (BEGIN IMMEDIATE), read transactions, SQL statements: "
        + ", ".join(
            f"{k} {c.tx['write'] / steps:.2f}, {c.tx['read'] / steps:.2f}, "
            f"{c.tx['statements'] / steps:.1f}"
            for k, (_, c) in counted.items()
        ),
        "store calls per step (SqlBackend methods; ms/step counts the outermost call only):",
        "  " + "  ".join(f"{k:>19}" for k in kinds) + "  method",
        "  " + "  ".join(f"{'calls':>9} {'ms':>9}" for _ in kinds),
    ]
    names = {n for _, c in counted.values() for n in c.calls}
    decorator_ms = {
        n: sum(counted[k][1].spent.get(n, 0.0) for k in SHAPES) for n in names
    }  # sorted by the decorator's time
    for name in sorted(names, key=lambda n: (-decorator_ms[n], n)):
        cells = []
        for k in kinds:
            c = counted[k][1]
            n_calls = c.calls.get(name, 0) / steps
            ms = f"{c.spent[name] * 1000 / steps:9.3f}" if name in c.spent else f"{'-':>9}"
            cells.append(f"{n_calls:9.2f} {ms}")
        out.append("  " + "  ".join(cells) + f"  {name}")
    for shape in SHAPES:
        profiles = bp._ThreadProfiles()
        result = run_decorator(homes, steps, "debug", shape, around=lambda p=profiles: p)
        text = io.StringIO()
        stats = pstats.Stats(*profiles.profiles, stream=text)
        stats.sort_stats("cumulative").print_stats("stepline", top)
        out.append("")
        out.append(
            f"cProfile of a debug-mode {shape} ({result.seconds * 1000 / steps:.2f} ms/step "
            f"under the profiler), {len(profiles.profiles)} thread(s), stepline's functions by "
            "cumulative time, summed over threads (waits included):"
        )
        out.append(text.getvalue().strip())
    return "\n".join(out)


def profile_local(homes: bp.Homes, steps: int) -> str:
    """Where a step's time goes in local mode, from the timestamps the store recorded."""
    import json
    import statistics

    from stepline.backend import get_backend
    from stepline.core.records import TaskFilter
    from stepline.pipeline.run import RT_NODE

    def med(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:7.2f} ms" if values else "      - ms"

    out = []
    for shape in SHAPES:
        result = run_decorator(homes, steps, "local", shape, keep=True)
        try:
            backend = get_backend()
            pipe = backend.get_task(result.pipe_id)
            runtime = backend.get_runtime(pipe.id)
            tasks = sorted(backend.find_tasks(TaskFilter(parent=pipe.id)), key=lambda t: t.created)
            rows = []
            for t in tasks:
                state = json.loads(runtime[RT_NODE + t.name])
                rows.append((t.created, t.started or t.created, t.completed, state["ended"]))
        finally:
            homes.drop(result.home)
        created = [r[0] for r in rows]
        span = [(r[1], r[2]) for r in rows]
        peak = max(sum(1 for s, e in span if s <= t < e) for t, _ in span)
        out += [
            f"local mode, {shape} of {steps}: {result.seconds:.3f} s "
            f"({result.seconds * 1000 / steps:.2f} ms/step); medians per step:",
            f"  {med([s - c for c, s, _, _ in rows])}  step task created -> child marked it "
            "in_progress (waiting for a worker, fork, child start-up)",
            f"  {med([d - s for _, s, d, _ in rows])}  in_progress -> completed, in the child",
            f"  {med([e - d for _, _, d, e in rows])}  completed -> the pipeline saw the end",
        ]
        if shape == "chain":
            out.append(
                f"  {med([rows[i + 1][0] - rows[i][3] for i in range(steps - 1)])}  end seen -> "
                "next step task created (the logic's call was queued long before)"
            )
        else:
            out.append(
                f"  {med([b - a for a, b in itertools.pairwise(created)])}  between two step "
                f"tasks created; at most {peak} steps in progress at once"
            )
        starts = sorted(s - c for c, s, _, _ in rows[1:]) or [0.0]
        first_wait = rows[0][1] - rows[0][0] - statistics.median(starts)
        last_seen = max(r[3] for r in rows)
        out.append(
            f"once: {(created[0] - pipe.created) * 1000:.1f} ms pipeline task -> first step "
            f"task; the first step waited {first_wait * 1000:.1f} ms longer than the median "
            f"(the fork server starting); {((pipe.completed or last_seen) - last_seen) * 1000:.1f}"
            " ms last step seen -> pipeline completed"
        )
    return "\n".join(out)


# -- main ------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"steps {QUICK_STEPS}, 1 repeat")
    parser.add_argument(
        "--repeat", "--repeats", dest="repeat", type=int, default=None,
        help="runs of each row, the best is shown (default 3, 1 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=bp._steps, action="extend", default=None,
        help=f"pipeline sizes, e.g. '10,100' or '10 100' (default {','.join(map(str, STEPS))})",
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
    from stepline.pipeline.decorator import PipelineDecorator

    work = Path(tempfile.mkdtemp(prefix="stepline-bench-decorator-"))
    saved_env = {v: os.environ.get(v) for v in bp._ENV}
    saved_mode = PipelineDecorator._mode_default

    def log(msg: str) -> None:
        if args.verbose:
            print(f"  .. {msg}", file=sys.stderr, flush=True)

    homes = bp.Homes(work)
    profiles: list[str] = []
    try:
        rows, notes = run(steps_list, modes, repeats, homes, log)
        if args.profile:
            n = max(steps_list)
            if "debug" in modes:
                profiles.append(profile_debug(homes, n, args.top))
            if "local" in modes:
                profiles.append(profile_local(homes, n))
                profiles.append(bp.profile_startup(homes))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        from stepline.backend import reset_backend

        PipelineDecorator._mode_default = saved_mode
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
        f"stepline decorator benchmark{' (--quick)' if args.quick else ''}: a chain and a "
        f"fan-out of trivial components, best of {repeats}, each run in a fresh STEPLINE_HOME"
    )
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"sqlalchemy {sqlalchemy.__version__}, {os.cpu_count()} cpus, fork server: "
        f"{'yes' if hasattr(os, 'fork') and sys.platform != 'win32' else 'no'}; "
        f"temp dir {tempfile.gettempdir()}"
    )
    print()
    print(bp.render(rows))
    print()
    print(
        "ratio: debug and in-process rows (per-step - floor) / 2 ms, floor = one plain call of "
        "the step function; local rows per-step / floor, floor = one `python -c pass` spawn"
    )
    for note in notes:
        print(f"note: {note}")
    if args.verbose:
        print()
        print(bp.render_repeats(rows))
    for text in profiles:
        print()
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
