"""The HTTP backend against the embedded store, measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_server.py            # full sizes (about a minute)
    .venv/bin/python benchmarks/bench_server.py --quick    # small sizes, one run each (smoke run)
    .venv/bin/python benchmarks/bench_server.py --verbose  # also every repeat and progress

Two backends, each over a fresh STEPLINE_HOME of its own in one temporary folder (same disk):

* embedded: ``SqlBackend`` (SQLite + the local artifact folder), in this process;
* HTTP: ``HttpBackend`` in this process, talking over loopback to a real ``stepline server``
  process started here (``sys.executable -m stepline.cli.main server --port 0``, its defaults
  otherwise), over its own home; it is stopped with SIGTERM at the end, whatever happened.

Every row runs the same calls on both, interleaved (embedded, then HTTP, per repeat), and
shows the best of ``--repeats`` (default 3, 1 with ``--quick``) of each and their ratio:
HTTP rate / embedded rate (a percentage) or HTTP time / embedded time (a multiple).

1. task creation: ``create_task`` of a ``NewTask`` with five parameters and a small script,
   as ``Task.create`` + ``connect`` would send them; tasks per second. No target.
2. metric points: ``add_scalars`` in batches of ``stepline.sdk.logger.BATCH`` points (the
   SDK's logger writes one such batch per call when its buffer fills; it also writes a
   smaller one every ``FLUSH_SECONDS``), spread over 8 curves; points per second.
   Target: HTTP >= 25% of embedded.
3. artifact round trip: ``put_artifact`` of a file of random bytes, then
   ``artifact_local_path(record, verify=True)``; seconds. Target: HTTP <= 2x embedded.
   HTTP: the upload is streamed to the server (hashed on both ends), and the read goes
   through a second ``HttpBackend`` with a fresh, empty cache folder, so the bytes are really
   downloaded (streamed into the cache, their sha256 checked on the way). Embedded: ``put``
   hashes the file and copies it into the store's folder; the read needs no download, so it
   is the size and sha256 check of the stored file only. Both ``put`` calls return with the
   sha256 recorded (no ``defer_hash``). The two halves are shown as rows of their own.
4. dispatch (``--dispatches`` tasks, 0 skips it): a claimer thread with a backend of its own
   waits in ``claim([queue], agent, wait=30)``; the main thread creates a task, waits until
   the claimer is waiting, pauses 5-45 ms (seeded; so that the HTTP claim has reached the
   server, and so that tasks arrive at any point of the embedded store's polling cycle),
   then ``t0``, ``enqueue``; latency = when ``claim`` returned that task in the claimer
   thread - ``t0``. p50 and p95; no target. The embedded ``claim`` looks at the queue every
   ``poll_interval`` (20 ms); the server's is a long poll that the enqueue wakes.

Every result is checked (the parameters and scalar points stored, the artifact's size and
sha256, the task each claim returned), so a broken run exits non-zero instead of reporting a
fast number. Machines are shared and noisy, so nothing here asserts a time: the exit status is
0 whether targets are met or not ("ok?" says which; "-" where no target is set).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import math
import os
import platform
import queue
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Sizes: (full, --quick).
TASKS = (1000, 100)
POINTS = (200_000, 20_000)
ARTIFACT_MB = (100, 10)
DISPATCHES = (50, 5)

SCALAR_TARGET = 0.25  #: HTTP points/s >= this fraction of the embedded store's
ARTIFACT_TARGET = 2.0  #: HTTP round trip <= this multiple of the embedded store's
CLAIM_WAIT = 30.0  #: the claimer's ``wait``
PAUSE = (0.005, 0.045)  #: before each dispatch, seconds (uniform, seeded)
TIMEOUT = 120.0  #: seconds any one wait may take before the run is declared broken
PROJECT = "bench-server"
QUEUE = "bench"
TITLES = ("loss", "accuracy", "lr", "grad_norm")
SERIES = ("train", "validation")
SCRIPT = {"kind": "script", "entry_point": "train.py", "working_dir": ".", "repository": ""}


# -- results ---------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    n: int
    unit: str  #: "s" rows are times (lower is better); the others are rates
    embedded: list[float] = field(default_factory=list)
    http: list[float] = field(default_factory=list)
    target: float | None = None  #: the least fraction (rates) or most multiple (times)

    @property
    def is_rate(self) -> bool:
        return self.unit != "s"

    def best(self, values: list[float]) -> float:
        return max(values) if self.is_rate else min(values)

    @property
    def ratio(self) -> float:
        """HTTP / embedded: a fraction of the embedded rate, or a multiple of its time."""
        return self.best(self.http) / self.best(self.embedded)

    @property
    def ok(self) -> str:
        if self.target is None:
            return "-"
        met = self.ratio >= self.target if self.is_rate else self.ratio <= self.target
        return "ok" if met else "MISS"


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
    header = ("row", "n", "embedded", "http", "ratio", "target", "ok?")
    table = [header]
    for r in rows:
        table.append(
            (
                r.name,
                f"{r.n:,}",
                _fmt_value(r.best(r.embedded), r.unit),
                _fmt_value(r.best(r.http), r.unit),
                _fmt_ratio(r),
                _fmt_target(r),
                r.ok,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    out = []
    for n, line in enumerate(table):
        cells = [line[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(line[1:-1], widths[1:-1], strict=True)]
        cells.append(line[-1])
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_repeats(rows: Sequence[Row]) -> str:
    out = []
    for r in rows:

        def show(values: list[float], unit: str = r.unit) -> str:
            return ", ".join(_fmt_value(v, unit) for v in values)

        out.append(f"{r.name.strip()}:")
        out.append(f"    embedded: {show(r.embedded)}")
        out.append(f"    http:     {show(r.http)}")
    return "\n".join(out)


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (p50 of an even count: the mean of the middle two)."""
    if pct == 50:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- the server process ----------------------------------------------------------------------
class Server:
    """A ``stepline server --port 0`` process over ``home``; ``stop`` sends SIGTERM."""

    def __init__(self, home: Path, pythonpath: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
        env.update(STEPLINE_HOME=str(home), PYTHONUNBUFFERED="1")
        if pythonpath:  # stepline is not installed: the server imports it from the checkout
            env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "stepline.cli.main", "server", "--port", "0"]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._drain, name="server-output", daemon=True)
        self._reader.start()
        self.url = ""
        try:
            first = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            first = ""
        match = re.search(r"on (http://\S+)", first)
        if not match:
            self.stop()
            raise RuntimeError(f"stepline server did not start:\n{self.tail()}")
        self.url = match.group(1)
        self._wait_healthy()
        self.startup = time.perf_counter() - t0

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + TIMEOUT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stepline server did not answer /health:\n{self.tail()}")
            time.sleep(0.02)

    def tail(self) -> str:
        return "".join(self.output)[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)  # the pipe ends with the process
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()


# -- the rows --------------------------------------------------------------------------------
def new_task(name: str) -> Any:
    """A task as ``Task.create`` + ``connect({...five values...})`` would store it."""
    from stepline.core.records import NewTask, Param

    params = [
        Param("General", "lr", "0.1", "float"),
        Param("General", "epochs", "3", "int"),
        Param("General", "batch_size", "64", "int"),
        Param("General", "optimizer", "adam", "str"),
        Param("General", "augment", "True", "bool"),
    ]
    return NewTask(
        name=name, project=PROJECT, type="training", script=dict(SCRIPT), params=params,
        user="bench",
    )  # fmt: skip


def create_tasks(backend: Any, n: int, ids: list[str]) -> None:
    for i in range(n):
        ids.append(backend.create_task(new_task(f"task {i}")).id)


def check_tasks(backend: Any, ids: list[str]) -> None:
    """The last task has the five parameters sent, and every task is there."""
    from stepline.core.records import TaskFilter

    stored = {p.key: p.value for p in backend.get_params(ids[-1])}
    if stored.get("General/optimizer") != "adam" or len(stored) != 5:
        raise RuntimeError(f"{backend!r} stored the parameters {stored}, not the five sent")
    found = backend.find_tasks(TaskFilter(ids=ids, archived=None, limit=None))
    if len(found) != len(ids):
        raise RuntimeError(f"{backend!r} has {len(found)} of the {len(ids)} tasks created")


def point_batches(task_id: str, n: int, batch: int) -> list[list[Any]]:
    """``n`` points over TITLES x SERIES curves, iterations rising, in batches (made before
    the clock starts: building them is the SDK's work on either backend)."""
    from stepline.core.records import ScalarPoint

    curves = [(t, s) for t in TITLES for s in SERIES]
    k = len(curves)
    now = time.time()
    points = [
        ScalarPoint(task_id, *curves[i % k], iteration=i // k, value=i * 0.001, timestamp=now)
        for i in range(n)
    ]
    return [points[i : i + batch] for i in range(0, n, batch)]


def add_points(backend: Any, batches: list[list[Any]]) -> None:
    for b in batches:
        backend.add_scalars(b)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class RoundTrip:
    put: float
    get: float


def artifact_round_trip(
    backend: Any, reader: Any, src: Path, sha256: str, task_name: str
) -> RoundTrip:
    """``put_artifact`` of ``src`` through ``backend``, then its local path (verified) through
    ``reader``; the task is deleted afterwards (not timed)."""
    from stepline.core.records import ArtifactRecord

    task = backend.create_task(new_task(task_name))
    record = ArtifactRecord(task_id=task.id, name="big", type="file", url="", hash="", size=0)
    gc.collect()
    t0 = time.perf_counter()
    stored = backend.put_artifact(record, str(src))
    t1 = time.perf_counter()
    path = reader.artifact_local_path(stored, verify=True)
    t2 = time.perf_counter()
    size = src.stat().st_size
    if stored.hash != sha256 or stored.size != size or os.path.getsize(path) != size:
        raise RuntimeError(f"{backend!r} stored the artifact as {stored}, not {size} bytes")
    if reader is not backend and not path.startswith(str(reader.home)):
        raise RuntimeError(f"the artifact was not downloaded into the fresh cache: {path}")
    backend.delete_task(task.id)
    return RoundTrip(t1 - t0, t2 - t1)


class Claimer(threading.Thread):
    """Claims from QUEUE in a loop with ``wait``; puts (task id, perf_counter) of each claim
    on ``claimed``. ``waiting`` is set while it is inside a claim call."""

    def __init__(self, backend: Any, agent_id: str) -> None:
        super().__init__(name=f"claimer-{agent_id}", daemon=True)
        self.backend = backend
        self.agent_id = agent_id
        self.claimed: queue.Queue[tuple[str, float]] = queue.Queue()
        self.waiting = threading.Event()
        self.stopping = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping:
                self.waiting.set()
                rec = self.backend.claim([QUEUE], self.agent_id, wait=CLAIM_WAIT)
                when = time.perf_counter()
                self.waiting.clear()
                if rec is not None:
                    self.claimed.put((rec.id, when))
        except BaseException as exc:
            self.error = exc
            self.claimed.put(("", 0.0))

    def take(self) -> tuple[str, float]:
        try:
            got = self.claimed.get(timeout=TIMEOUT)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no claim in {TIMEOUT:g} s") from None
        if self.error is not None:
            raise RuntimeError(f"{self.name} failed: {self.error!r}") from self.error
        return got


def dispatch(backend: Any, claimer_backend: Any, n: int, agent_id: str) -> list[float]:
    """Seconds from enqueue to claim for ``n`` tasks, one at a time, each queued while the
    claimer waits (a few warm-up tasks first)."""
    claimer = Claimer(claimer_backend, agent_id)
    claimer.start()
    pauses = random.Random(0)
    latencies = []
    try:
        for i in range(-3, n):  # three warm-up dispatches
            task_id = backend.create_task(new_task(f"dispatch {i}")).id
            if not claimer.waiting.wait(TIMEOUT):
                raise RuntimeError(f"{claimer.name} did not wait for a task")
            time.sleep(pauses.uniform(*PAUSE))
            t0 = time.perf_counter()
            backend.enqueue(task_id, QUEUE)
            got, when = claimer.take()
            if got != task_id:
                raise RuntimeError(f"{claimer.name} claimed {got}, not {task_id}")
            if i >= 0:
                latencies.append(when - t0)
    finally:
        claimer.stopping = True
        with contextlib.suppress(Exception):  # wakes the claimer, which then stops
            backend.enqueue(backend.create_task(new_task("stop")).id, QUEUE)
        claimer.join(TIMEOUT)
    return latencies


# -- the benchmark ---------------------------------------------------------------------------
@dataclass
class Settings:
    tasks: int
    points: int
    artifact_mb: int
    dispatches: int
    repeats: int


def run(
    s: Settings, work: Path, url: str, log: Callable[[str], None]
) -> tuple[list[Row], list[str]]:
    """Every row, against the embedded store in ``work/embedded`` and the server at ``url``."""
    from stepline.backend import open_backend
    from stepline.backend.http.client import HttpBackend
    from stepline.core.config import load_config
    from stepline.sdk.logger import BATCH

    embedded = open_backend(load_config({"STEPLINE_HOME": str(work / "embedded")}))
    http = HttpBackend(url, home=work / "client")
    sides = (("embedded", embedded), ("http", http))
    notes: list[str] = []
    try:
        # Warm up both: schema, statement caches, connections, the server's routes.
        for _, be in sides:
            ids: list[str] = []
            create_tasks(be, 20, ids)
            check_tasks(be, ids)
            warm = be.create_task(new_task("warm-up")).id
            add_points(be, point_batches(warm, 2 * BATCH, BATCH))

        # 1. task creation
        tasks = Row("task creation", s.tasks, "tasks/s")
        for rep in range(s.repeats):
            for side, be in sides:
                ids = []
                rate = s.tasks / _timed(lambda be=be, ids=ids: create_tasks(be, s.tasks, ids))
                getattr(tasks, side).append(rate)
                if rep == 0:
                    check_tasks(be, ids)
            log(f"tasks {rep + 1}/{s.repeats}: {tasks.embedded[-1]:,.0f} / {tasks.http[-1]:,.0f}")

        # 2. metric points
        points = Row(
            f"metric points (add_scalars, batches of {BATCH:,})", s.points, "points/s",
            target=SCALAR_TARGET,
        )  # fmt: skip
        for rep in range(s.repeats):
            for side, be in sides:
                task_id = be.create_task(new_task(f"scalars {rep}")).id
                batches = point_batches(task_id, s.points, BATCH)
                seconds = _timed(lambda be=be, batches=batches: add_points(be, batches))
                getattr(points, side).append(s.points / seconds)
                stored = len(be.get_scalars(task_id)) if rep == 0 else s.points
                if stored != s.points:
                    raise RuntimeError(f"{side}: {stored} of {s.points} scalar points stored")
            emb_rate, http_rate = points.embedded[-1], points.http[-1]
            log(f"points {rep + 1}/{s.repeats}: {emb_rate:,.0f} / {http_rate:,.0f}")

        # 3. artifact round trip
        size = s.artifact_mb << 20
        src = work / "big.bin"
        with open(src, "wb") as f:
            for _ in range(s.artifact_mb):
                f.write(os.urandom(1 << 20))
        sha256 = file_sha256(src)
        trip = Row(f"artifact {s.artifact_mb} MB round trip", 1, "s", target=ARTIFACT_TARGET)
        put = Row("  put_artifact", 1, "s")
        get = Row("  artifact_local_path(verify=True)", 1, "s")

        def http_trip(name: str) -> RoundTrip:
            fresh = work / f"client-{name}"
            reader = HttpBackend(url, home=fresh)
            try:
                return artifact_round_trip(http, reader, src, sha256, name)
            finally:
                reader.close()
                shutil.rmtree(fresh, ignore_errors=True)

        artifact_round_trip(embedded, embedded, src, sha256, "artifact warm-up")
        http_trip("artifact warm-up")
        for rep in range(s.repeats):
            results = {
                "embedded": artifact_round_trip(embedded, embedded, src, sha256, f"art {rep}"),
                "http": http_trip(f"art {rep}"),
            }
            for side, result in results.items():
                getattr(trip, side).append(result.put + result.get)
                getattr(put, side).append(result.put)
                getattr(get, side).append(result.get)
            log(f"artifact {rep + 1}/{s.repeats}: {trip.embedded[-1]:.3f} / {trip.http[-1]:.3f} s")
        src.unlink()
        rows = [tasks, points, trip, put, get]
        notes.append(
            f"artifact: {size:,} bytes of random data; embedded put = sha256 + copy into the "
            "store's folder, its read = size + sha256 check of the stored file (no copy); HTTP "
            "put = upload streamed and hashed on both ends, committed by the server, its read "
            "= a download into a fresh cache, hashed on the way"
        )

        # 4. dispatch
        if s.dispatches:
            embedded.create_queue(QUEUE)
            http.create_queue(QUEUE)
            claimer_http = HttpBackend(url, home=work / "claimer")
            try:
                lat = {
                    "embedded": dispatch(embedded, embedded, s.dispatches, "bench-embedded"),
                    "http": dispatch(http, claimer_http, s.dispatches, "bench-http"),
                }
            finally:
                claimer_http.close()
            for pct in (50, 95):
                row = Row(f"dispatch (enqueue -> claim), p{pct}", s.dispatches, "s")
                row.embedded.append(percentile(lat["embedded"], pct))
                row.http.append(percentile(lat["http"], pct))
                rows.append(row)
            log(
                "dispatch: embedded "
                + ", ".join(f"{v * 1000:.1f}" for v in lat["embedded"])
                + " ms; http "
                + ", ".join(f"{v * 1000:.1f}" for v in lat["http"])
                + " ms"
            )
            notes.append(
                f"dispatch: an idle claimer thread in claim(wait={CLAIM_WAIT:g}); the embedded "
                f"store looks again every {embedded.poll_interval:g} s, the server's long poll "
                "is woken by the enqueue"
            )
    finally:
        http.close()
        embedded.close()
    return rows, notes


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat (smoke run)")
    parser.add_argument(
        "--repeats", "--repeat", dest="repeats", type=int, default=None,
        help="runs of each row, the best is shown (default 3, 1 with --quick)",
    )  # fmt: skip
    parser.add_argument("--tasks", type=_count, default=None, help=f"tasks ({TASKS[0]})")
    parser.add_argument("--points", type=_count, default=None, help=f"points ({POINTS[0]:,})")
    parser.add_argument(
        "--artifact-mb", type=_count, default=None, help=f"artifact size ({ARTIFACT_MB[0]})"
    )
    parser.add_argument(
        "--dispatches", type=_count, default=None, help=f"dispatches, 0 skips ({DISPATCHES[0]})"
    )
    parser.add_argument("--verbose", action="store_true", help="also every repeat and progress")
    args = parser.parse_args(argv)
    size = 1 if args.quick else 0
    s = Settings(
        tasks=args.tasks if args.tasks is not None else TASKS[size],
        points=args.points if args.points is not None else POINTS[size],
        artifact_mb=args.artifact_mb if args.artifact_mb is not None else ARTIFACT_MB[size],
        dispatches=args.dispatches if args.dispatches is not None else DISPATCHES[size],
        repeats=args.repeats if args.repeats is not None else (1 if args.quick else 3),
    )
    if s.repeats < 1 or s.tasks < 1 or s.points < 1 or s.artifact_mb < 1:
        parser.error("--repeats, --tasks, --points and --artifact-mb must be at least 1")

    pythonpath = None
    try:
        import stepline  # noqa: F401  (only checks that it can be imported)
    except ImportError:  # run from a checkout without an installed stepline
        pythonpath = str(Path(__file__).resolve().parent.parent)
        sys.path.insert(0, pythonpath)

    def log(msg: str) -> None:
        if args.verbose:
            print(f"  .. {msg}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="stepline-bench-server-"))
    server: Server | None = None
    try:
        server = Server(work / "server", pythonpath)
        log(f"server on {server.url}, up in {server.startup:.2f} s")
        rows, notes = run(s, work, server.url, log)
        notes.insert(
            0,
            f"server: `stepline server --port 0` process on {server.url}, up in "
            f"{server.startup * 1000:.0f} ms (spawn until /health answers)",
        )
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if server is not None:
            print(f"-- server output:\n{server.tail()}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    import fastapi
    import httpx
    import sqlalchemy
    import uvicorn

    print(
        f"stepline server benchmark{' (--quick)' if args.quick else ''}: best of {s.repeats}; "
        "ratio = HTTP rate / embedded rate, or HTTP time / embedded time"
    )
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"sqlalchemy {sqlalchemy.__version__}, fastapi {fastapi.__version__}, "
        f"uvicorn {uvicorn.__version__}, httpx {httpx.__version__}, {os.cpu_count()} cpus; "
        f"temp dir {tempfile.gettempdir()}"
    )
    print()
    print(render(rows))
    print()
    for note in notes:
        print(f"note: {note}")
    if args.verbose:
        print()
        print(render_repeats(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
