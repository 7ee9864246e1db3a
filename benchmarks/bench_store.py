"""Throughput of the embedded store, next to a floor measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_store.py            # full sizes (about a minute)
    .venv/bin/python benchmarks/bench_store.py --quick    # small sizes, a smoke run

Every row compares stepline with the least a Python program must do to get the same data onto
the same disk ("the floor"), measured in the same process, in the same temporary folder,
interleaved with the stepline runs, best of ``--repeats``:

1. task create + start + complete, through the SDK and through the backend; floor: raw
   ``sqlite3`` (WAL, synchronous=NORMAL) inserting a row into a copy of stepline's ``tasks``
   table and updating it twice, each in its own transaction;
2. ``Logger.report_scalar`` + ``flush``; floor: ``executemany`` of the same rows into a copy of
   stepline's ``scalars`` table (same columns and index), committed every ``Logger.BATCH``;
3. a float64 numpy array artifact, ``upload_artifact`` + ``artifacts[name].get()``; floor:
   ``np.save`` + ``np.load`` of the same array.

Machines are shared and noisy, so nothing here asserts a time: the exit status is 0 whether
targets are met or not ("ok?" says which). The run uses a fresh STEPLINE_HOME in a temporary
folder, removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Sizes: (full, --quick).
TASKS = (2000, 200)
POINTS = (200_000, 20_000)
ARRAY_MB = (100, 10)

#: No target was set for task create/complete; this one is ours (see benchmarks/README.md).
TASK_TARGET = 0.20
SCALAR_TARGET = 0.50
ARTIFACT_TARGET = 1.5

#: The environment a run sets (STEPLINE_HOME) or clears (the rest).
_ENV = ("STEPLINE_HOME", "STEPLINE_DB", "STEPLINE_STORAGE", "STEPLINE_API", "STEPLINE_TASK_ID")

#: Scalar curves: every point goes to one of TITLES x SERIES curves, iterations rising.
TITLES = ("loss", "accuracy", "lr", "grad_norm")
SERIES = ("train", "validation")


# -- results ---------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    unit: str  #: "/s" rows are rates (higher is better); "s" rows are times (lower is better)
    stepline: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    target: float | None = None

    @property
    def is_rate(self) -> bool:
        return self.unit != "s"

    def best(self, values: list[float]) -> float:
        return max(values) if self.is_rate else min(values)

    @property
    def ratio(self) -> float:
        """stepline / floor: a fraction of the floor's rate, or a multiple of its time."""
        return self.best(self.stepline) / self.best(self.floor)

    @property
    def ok(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.is_rate else self.ratio <= self.target


def _fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:,.1f} ms" if value < 1 else f"{value:,.2f} s"
    return f"{value:,.0f} {unit}"


def _fmt_ratio(row: Row) -> str:
    return f"{row.ratio:.0%}" if row.is_rate else f"{row.ratio:.2f}x"


def _fmt_target(row: Row) -> str:
    if row.target is None:
        return "-"
    return f">= {row.target:.0%}" if row.is_rate else f"<= {row.target:g}x"


def render(rows: Sequence[Row]) -> str:
    header = ("benchmark", "stepline", "floor", "ratio", "target", "ok?")
    table = [header]
    for r in rows:
        ok = "-" if r.ok is None else ("yes" if r.ok else "no")
        table.append(
            (
                r.name,
                _fmt_value(r.best(r.stepline), r.unit),
                _fmt_value(r.best(r.floor), r.unit),
                _fmt_ratio(r),
                _fmt_target(r),
                ok,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    out = []
    for n, line in enumerate(table):
        rest = zip(line[1:], widths[1:], strict=True)
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in rest]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_repeats(rows: Sequence[Row]) -> str:
    out = []
    for r in rows:

        def show(values: list[float], unit: str = r.unit) -> str:
            return ", ".join(_fmt_value(v, unit) for v in values)

        med = statistics.median(r.stepline) / statistics.median(r.floor)
        med_text = f"{med:.0%}" if r.is_rate else f"{med:.2f}x"
        out.append(f"{r.name}: median ratio {med_text}")
        out.append(f"    stepline: {show(r.stepline)}")
        out.append(f"    floor:    {show(r.floor)}")
    return "\n".join(out)


def _timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- raw sqlite3 floors ----------------------------------------------------------------------
def _copy_ddl(src_db: Path, tables: Sequence[str]) -> list[str]:
    """CREATE statements of ``tables`` and their indexes, as stepline's migrations made them."""
    con = sqlite3.connect(f"file:{src_db}?mode=ro", uri=True)
    try:
        found = {
            name: (kind, sql)
            for kind, name, sql in con.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name IN "
                f"({','.join('?' * len(tables))})",
                list(tables),
            )
        }
    finally:
        con.close()
    ddl = []
    for table in tables:  # tables in the given order, then their indexes
        if table not in found:
            raise RuntimeError(f"stepline's database {src_db} has no table {table!r}")
        ddl.append(found[table][1])
    ddl += [sql for kind, sql in found.values() if kind == "index"]
    return ddl


def _floor_db(path: Path, ddl: Sequence[str]) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)  # transactions are explicit below
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA foreign_keys=ON")
    for sql in ddl:
        con.execute(sql)
    return con


_TASK_COLUMNS = (
    "id", "project_id", "name", "type", "status", "status_message", "status_reason", "comment",
    "parent_id", "user", "script", "created", "started", "completed", "last_update", "archived",
    "published",
)  # fmt: skip
_QUOTED = ", ".join('"' + c + '"' for c in _TASK_COLUMNS)  # "user" is an SQL keyword
_TASK_INSERT = f"INSERT INTO tasks ({_QUOTED}) VALUES ({', '.join('?' * len(_TASK_COLUMNS))})"

_TASK_START = (
    "UPDATE tasks SET status = ?, status_message = '', status_reason = '', started = ?, "
    "completed = NULL, last_update = ? WHERE id = ? AND status IN (?, ?)"
)
_TASK_COMPLETE = (
    "UPDATE tasks SET status = ?, status_message = '', status_reason = '', completed = ?, "
    "last_update = ? WHERE id = ? AND status IN (?, ?)"
)
_SCALAR_INSERT = (
    "INSERT INTO scalars (task_id, title, series, iteration, value, timestamp) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def floor_tasks(con: sqlite3.Connection, project_id: str, n: int) -> None:
    for i in range(n):
        task_id = uuid.uuid4().hex
        now = time.time()
        row = (task_id, project_id, f"floor {i}", "training", "created", "", "", "", None, "",
               "{}", now, None, None, now, 0, 0)  # fmt: skip
        con.execute("BEGIN IMMEDIATE")
        con.execute(_TASK_INSERT, row)
        con.execute("COMMIT")
        now = time.time()
        con.execute("BEGIN IMMEDIATE")
        con.execute(_TASK_START, ("in_progress", now, now, task_id, "created", "queued"))
        con.execute("COMMIT")
        now = time.time()
        con.execute("BEGIN IMMEDIATE")
        con.execute(_TASK_COMPLETE, ("completed", now, now, task_id, "created", "in_progress"))
        con.execute("COMMIT")


def floor_scalars(con: sqlite3.Connection, n: int, batch: int) -> None:
    task_id = uuid.uuid4().hex
    curves = [(t, s) for t in TITLES for s in SERIES]
    k = len(curves)
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        title, series = curves[i % k]
        rows.append((task_id, title, series, i // k, i * 0.001, time.time()))
        if len(rows) >= batch:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(_SCALAR_INSERT, rows)
            con.execute("COMMIT")
            rows = []
    if rows:
        con.execute("BEGIN IMMEDIATE")
        con.executemany(_SCALAR_INSERT, rows)
        con.execute("COMMIT")


# -- the benchmark ---------------------------------------------------------------------------
def run(
    quick: bool, repeats: int, work: Path, log: Callable[[str], None]
) -> tuple[list[Row], list[str]]:
    """Run every benchmark in ``work`` (a fresh folder); return the rows and notes on them."""
    size = 1 if quick else 0
    n_tasks, n_points, array_mb = TASKS[size], POINTS[size], ARRAY_MB[size]

    home = work / "home"
    os.environ["STEPLINE_HOME"] = str(home)
    for var in _ENV[1:]:
        os.environ.pop(var, None)

    import numpy as np

    from stepline.backend import get_backend, reset_backend
    from stepline.core.records import NewTask
    from stepline.core.status import TaskStatus
    from stepline.sdk import logger as logger_mod
    from stepline.sdk.task import Task

    reset_backend()  # in case stepline was imported (and opened) before STEPLINE_HOME was set
    backend = get_backend()
    batch = logger_mod.BATCH

    # Warm up: schema creation, SQLAlchemy statement caches, the flusher thread.
    warm = Task.create(project_name="bench", task_name="warm-up")
    warm.mark_started()
    warm.get_logger().report_scalar("warm", "up", 1.0, 0)
    warm.get_logger().flush()
    warm.mark_completed()
    for i in range(20):
        rec = backend.create_task(NewTask(name=f"warm {i}", project="bench", type="training"))
        backend.set_status(rec.id, TaskStatus.in_progress)
        backend.set_status(rec.id, TaskStatus.completed)

    db_file = home / "stepline.db"
    task_con = _floor_db(work / "floor-tasks.db", _copy_ddl(db_file, ["projects", "tasks"]))
    project_id = uuid.uuid4().hex
    task_con.execute(
        "INSERT INTO projects (id, name, parent_id, created) VALUES (?, ?, NULL, ?)",
        (project_id, "bench", time.time()),
    )
    floor_tasks(task_con, project_id, 20)
    scalar_con = _floor_db(work / "floor-scalars.db", _copy_ddl(db_file, ["scalars"]))
    floor_scalars(scalar_con, 10, batch)

    # 1. tasks
    sdk_row = Row(f"task create+start+complete, SDK ({n_tasks:,})", "tasks/s", target=TASK_TARGET)
    be_row = Row(
        f"task create+start+complete, backend ({n_tasks:,})", "tasks/s", target=TASK_TARGET
    )

    def sdk_tasks() -> None:
        for i in range(n_tasks):
            task = Task.create(project_name="bench", task_name=f"sdk {i}")
            task.mark_started()
            task.mark_completed()

    def backend_tasks() -> None:
        for i in range(n_tasks):
            rec = backend.create_task(NewTask(name=f"be {i}", project="bench", type="training"))
            backend.set_status(rec.id, TaskStatus.in_progress)
            backend.set_status(rec.id, TaskStatus.completed)

    for rep in range(repeats):
        floor = n_tasks / _timed(lambda: floor_tasks(task_con, project_id, n_tasks))
        sdk_row.floor.append(floor)
        be_row.floor.append(floor)
        sdk_row.stepline.append(n_tasks / _timed(sdk_tasks))
        be_row.stepline.append(n_tasks / _timed(backend_tasks))
        log(f"tasks {rep + 1}/{repeats}")
    task_con.close()

    # 2. scalars
    sc_row = Row(
        f"report_scalar + flush ({n_points:,} points, batch {batch:,})",
        "points/s",
        target=SCALAR_TARGET,
    )
    curves = [(t, s) for t in TITLES for s in SERIES]
    k = len(curves)

    for rep in range(repeats):
        sc_row.floor.append(n_points / _timed(lambda: floor_scalars(scalar_con, n_points, batch)))
        task = Task.create(project_name="bench", task_name=f"scalars {rep}")
        task.mark_started()
        logger = task.get_logger()

        def report(logger: Any = logger) -> None:
            for i in range(n_points):
                title, series = curves[i % k]
                logger.report_scalar(title, series, i * 0.001, i // k)
            logger.flush()

        sc_row.stepline.append(n_points / _timed(report))
        task.mark_completed()
        stored = len(backend.get_scalars(task.id)) if rep == 0 else n_points
        if stored != n_points:
            raise RuntimeError(f"stepline stored {stored} of {n_points} scalar points")
        log(f"scalars {rep + 1}/{repeats}")
    scalar_con.close()

    # 3. artifact
    arr = np.random.default_rng(0).random((array_mb << 20) // 8)
    rt_row = Row(f"artifact {array_mb} MB round trip", "s", target=ARTIFACT_TARGET)
    up_row = Row("  upload_artifact (floor: np.save)", "s", target=ARTIFACT_TARGET)
    get_row = Row("  artifacts[name].get() (floor: np.load)", "s", target=ARTIFACT_TARGET)
    sync_row = Row("  upload, wait_on_upload=True (floor: np.save)", "s", target=None)
    npy = work / "floor.npy"
    # Warm up both sides once (the first 100 MB written and read is slower on either).
    np.save(npy, arr)
    np.load(npy)
    previous: Any = Task.create(project_name="bench", task_name="artifact warm-up")
    previous.upload_artifact("big", arr)
    previous.artifacts["big"].get()

    for rep in range(repeats):
        # Both sides write a new file: the floor's old file is removed, and stepline gets a new
        # task (replacing an artifact would also delete the old file inside the timing).
        npy.unlink(missing_ok=True)
        previous.delete()
        task = previous = Task.create(project_name="bench", task_name=f"artifact {rep}")
        task.mark_started()
        save = _timed(lambda: np.save(npy, arr))
        gc.collect()
        t0 = time.perf_counter()
        loaded = np.load(npy)
        load = time.perf_counter() - t0
        del loaded
        up_row.floor.append(save)
        get_row.floor.append(load)
        rt_row.floor.append(save + load)

        upload = _timed(lambda task=task: task.upload_artifact("big", arr))
        gc.collect()
        t0 = time.perf_counter()
        got = task.artifacts["big"].get()
        get = time.perf_counter() - t0
        if rep == 0 and not np.array_equal(got, arr):
            raise RuntimeError("the artifact read back differs from the array uploaded")
        del got
        up_row.stepline.append(upload)
        get_row.stepline.append(get)
        rt_row.stepline.append(upload + get)
        task.flush(wait_for_uploads=True)
        sync_row.floor.append(save)
        sync_row.stepline.append(
            _timed(lambda task=task: task.upload_artifact("sync", arr, wait_on_upload=True))
        )
        task.mark_completed()
        log(f"artifact {rep + 1}/{repeats}")
    reset_backend()
    notes = []
    from stepline.backend.sql import store

    limit = getattr(store, "VERIFY_LIMIT", None)
    if limit is not None:
        side = "at most" if arr.nbytes <= limit else "above"
        notes.append(
            f"the {array_mb} MB artifact is {side} the store's VERIFY_LIMIT ({limit >> 20} MiB): "
            + (
                "get() checks its sha256 on every read"
                if arr.nbytes <= limit
                else "get() checks its size only"
            )
        )
    notes.append(
        "upload_artifact records the sha256 of large files in a background thread (the "
        "reference's default wait_on_upload=False); with wait_on_upload=True it hashes first"
    )
    return [sdk_row, be_row, sc_row, rt_row, up_row, get_row, sync_row], notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--verbose", action="store_true", help="also print every repeat")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    try:
        import stepline  # noqa: F401  (only checks that it can be imported)
    except ImportError:  # run from a checkout without an installed stepline
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

    work = Path(tempfile.mkdtemp(prefix="stepline-bench-"))
    saved_env = {v: os.environ.get(v) for v in _ENV}

    def log(msg: str) -> None:
        if args.verbose:
            print(f"  .. {msg}", file=sys.stderr, flush=True)

    try:
        rows, notes = run(args.quick, args.repeats, work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for var, value in saved_env.items():  # as it was, for callers running main() in-process
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value

    import numpy as np
    import sqlalchemy

    print(
        f"stepline store benchmark{' (--quick)' if args.quick else ''}: best of {args.repeats}; "
        f"ratio = stepline rate / floor rate, or stepline time / floor time"
    )
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"sqlalchemy {sqlalchemy.__version__}, numpy {np.__version__}, {os.cpu_count()} cpus; "
        f"temp dir {tempfile.gettempdir()}"
    )
    print()
    print(render(rows))
    for note in notes:
        print(f"note: {note}")
    if args.verbose:
        print()
        print(render_repeats(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
