"""The web UI's pages and the API calls behind them, on a run of 1,000 steps, next to a floor
measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_ui.py               # 1,000 steps, 30 requests a URL
    .venv/bin/python benchmarks/bench_ui.py --quick       # 50 steps, 5 requests (smoke run)
    .venv/bin/python benchmarks/bench_ui.py --no-browser  # the HTTP table only
    .venv/bin/python benchmarks/bench_ui.py --steps 5000 --requests 50 --loads 10

One fresh STEPLINE_HOME in a temporary folder holds two real pipeline runs, made before the
clock starts by ``tests/ui/bigrun.py`` in a child process: a small one (``ui/train``: four
steps with arguments, artifacts, metrics and log lines) and a big one (``ui/fan-out``: one
root, ``--steps`` - 2 parallel steps, one join; a decorator pipeline in debug mode). A real
``stepline server --port 0`` process serves that home; it is stopped with SIGTERM at the end,
whatever happened.

1. HTTP: each URL is fetched ``--requests`` times (default 30, 5 with ``--quick``) with one
   keep-alive ``httpx.Client``, the URLs taken in turn (one request of each, then again), after
   one warm-up request each. A row shows the median and the 95th percentile of the time from
   sending the request to having read the whole body, the body's size, and the ratio of its
   median to the floor's: ``GET /health``, the cheapest route of the same server.
2. Browser (unless ``--no-browser``, or when no Chromium is found): headless Chromium
   (``/usr/bin/chromium``, through Playwright) opens each UI page ``--loads`` times (default 5,
   2 with ``--quick``) in one page of one context, after one warm-up load (so the static files
   are cached, as for a user moving between pages). ``first paint``: the page's own
   first-contentful-paint time (Paint Timing API, from the start of the navigation);
   ``ready``: from ``page.goto`` until the DAG's ``svg.dag`` is in the page (run pages) or the
   ``load`` event (the others). Floor: ``/health`` loaded the same way.

A UI URL that answers 404 (a page not built yet) shows ``n/a``. Every other answer is checked
(status 200; the API's runs hold the right number of steps; a run page shows ``svg.dag``), so
a broken server exits non-zero instead of reporting a fast number. Machines are shared and
noisy, so nothing here asserts a time: there are no targets, the ratios are what to watch.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the run maker and the server helper live in tests/
    sys.path.insert(0, str(ROOT))

# Sizes: (full, --quick).
STEPS = (1000, 50)
REQUESTS = (30, 5)
LOADS = (5, 2)

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000  #: the longest a page may take to load or show its DAG
VIEWPORT = {"width": 1400, "height": 900}
#: the page's first-contentful-paint (ms from the start of its navigation), once it happened;
#: null when it does not come within PAINT_WAIT_MS
FIRST_PAINT = """(wait) => new Promise((resolve) => {
    const seen = (entries) => entries.find((e) => e.name === 'first-contentful-paint');
    const now = seen(performance.getEntriesByType('paint'));
    if (now) return resolve(now.startTime);
    const observer = new PerformanceObserver((list) => {
        const entry = seen(list.getEntries());
        if (entry) { observer.disconnect(); resolve(entry.startTime); }
    });
    observer.observe({type: 'paint', buffered: true});
    setTimeout(() => { observer.disconnect(); resolve(null); }, wait);
})"""
PAINT_WAIT_MS = 2000


class Broken(RuntimeError):
    """The server answered something wrong: no number is reported for a broken run."""


# -- results ---------------------------------------------------------------------------------
@dataclass
class Target:
    """One URL to measure. ``ui``: a page of the web UI (404 means not built yet);
    ``check``: validates a 200 answer's body (raises ``Broken``); ``dag``: a run page, whose
    ``svg.dag`` the browser waits for."""

    label: str
    path: str
    ui: bool = False
    check: Callable[[bytes], None] | None = None
    dag: bool = False
    browser: bool = False  #: also loaded in the browser
    times: list[float] = field(default_factory=list)  #: seconds
    size: int = 0
    missing: bool = False  #: answered 404
    paints: list[float] = field(default_factory=list)  #: seconds (first-contentful-paint)
    ready: list[float] = field(default_factory=list)  #: seconds


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (p50 of an even count: the mean of the middle two)."""
    if pct == 50:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def _size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:,.1f} MB"
    if n >= 1_000:
        return f"{n / 1_000:,.1f} kB"
    return f"{n} B"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    table = [tuple(header), *(tuple(line) for line in lines)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    out = []
    for n, line in enumerate(table):
        cells = [line[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_http(targets: Sequence[Target]) -> str:
    floor = statistics.median(targets[0].times)
    lines = []
    for t in targets:
        if t.missing:
            lines.append((t.label, "-", "n/a", "n/a", "n/a", "n/a"))
            continue
        p50 = statistics.median(t.times)
        lines.append(
            (
                t.label,
                f"{len(t.times):,}",
                _ms(p50),
                _ms(percentile(t.times, 95)),
                f"{p50 / floor:.2f}x",
                _size(t.size),
            )
        )
    return _table(("what", "n", "ms p50", "ms p95", "ratio", "size"), lines)


def render_browser(targets: Sequence[Target]) -> str:
    floor = statistics.median(targets[0].ready)
    lines = []
    for t in targets:
        if t.missing:
            lines.append((t.label, "-", "n/a", "n/a", "n/a", "n/a", "n/a"))
            continue
        ready = statistics.median(t.ready)
        paints = [p for p in t.paints if p >= 0]
        lines.append(
            (
                t.label,
                f"{len(t.ready):,}",
                _ms(statistics.median(paints)) if paints else "-",
                _ms(ready),
                _ms(percentile(t.ready, 95)),
                f"{ready / floor:.2f}x",
                "svg.dag" if t.dag else "load",
            )
        )
    header = ("what", "n", "first paint ms p50", "ready ms p50", "ready ms p95", "ratio")
    return _table((*header, "ready at"), lines)


# -- checks ----------------------------------------------------------------------------------
def _json(body: bytes) -> Any:
    import json

    try:
        return json.loads(body)
    except ValueError as exc:
        raise Broken(f"not JSON: {body[:200]!r}") from exc


def check_health(body: bytes) -> None:
    if _json(body).get("status") != "ok":
        raise Broken(f"/health answered {body[:200]!r}")


def check_runs(*run_ids: str) -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        listed = {r["id"] for r in _json(body)}
        if not set(run_ids) <= listed:
            raise Broken(f"the runs list lacks {sorted(set(run_ids) - listed)}")

    return check


def check_run(run_id: str, steps: int) -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        data = _json(body)
        done = [s for s in data.get("steps", []) if s.get("status") == "completed"]
        if data.get("id") != run_id or data.get("status") != "completed" or len(done) != steps:
            raise Broken(
                f"run {run_id}: {data.get('status')!r}, {len(done)} of {steps} steps completed"
            )

    return check


def check_json(body: bytes) -> None:
    _json(body)


def make_targets(small: str, big: str, steps: int, runs_page: str) -> list[Target]:
    """The URLs, the floor first; labels name the runs ``{small}`` and ``{big}``."""
    api = "/api/v1/pipelines"
    return [
        Target("/health (floor)", "/health", check=check_health, browser=True),
        Target(api, api, check=check_runs(small, big)),
        Target(api + "/{small}", f"{api}/{small}", check=check_run(small, 4)),
        Target(api + "/{big}", f"{api}/{big}", check=check_run(big, steps)),
        Target("/pipelines", "/pipelines", ui=True, browser=True),
        Target(runs_page, runs_page, ui=True, browser=True),
        Target("/runs/{small}", f"/runs/{small}", ui=True, dag=True, browser=True),
        Target("/runs/{big}", f"/runs/{big}", ui=True, dag=True, browser=True),
        Target("/runs/{small}/state", f"/runs/{small}/state", ui=True, check=check_json),
        Target("/runs/{big}/state", f"/runs/{big}/state", ui=True, check=check_json),
        Target("/tasks", "/tasks", ui=True, browser=True),
    ]


# -- the measures ----------------------------------------------------------------------------
def measure_http(url: str, targets: Sequence[Target], requests: int, log: Callable[..., None]):
    import httpx

    with httpx.Client(base_url=url, timeout=TIMEOUT_MS / 1000) as client:

        def fetch(t: Target) -> float:
            t0 = time.perf_counter()
            response = client.get(t.path)
            body = response.read()
            elapsed = time.perf_counter() - t0
            if response.status_code == 404 and t.ui:
                t.missing = True
            elif response.status_code != 200:
                raise Broken(f"GET {t.path} answered {response.status_code}: {body[:300]!r}")
            elif t.check is not None:
                t.check(body)
            t.size = len(body)
            return elapsed

        for t in targets:  # warm-up, and the checks
            fetch(t)
            log(f"{t.path}: {'404' if t.missing else _size(t.size)}")
        live = [t for t in targets if not t.missing]
        for _ in range(requests):
            for t in live:
                t.times.append(fetch(t))


def find_chromium() -> str | None:
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")


def measure_browser(
    url: str, targets: Sequence[Target], loads: int, chromium: str, log: Callable[..., None]
) -> str:
    """Loads each page; returns the browser's version."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)

            def load(t: Target) -> tuple[float, float]:
                t0 = time.perf_counter()
                response = page.goto(url + t.path, wait_until="commit")
                status = response.status if response is not None else 0
                if status != 200:
                    raise Broken(f"the browser got {status} for {t.path}")
                if t.dag:
                    page.wait_for_selector("svg.dag", state="attached")
                else:
                    page.wait_for_load_state("load")
                ready = time.perf_counter() - t0
                paint = page.evaluate(FIRST_PAINT, PAINT_WAIT_MS)
                return (paint / 1000 if paint is not None else -1.0), ready

            for t in targets:
                load(t)  # warm-up
                log(f"browser: {t.path} loaded")
            for _ in range(loads):
                for t in targets:
                    paint, ready = load(t)
                    t.paints.append(paint)
                    t.ready.append(ready)
            return browser.version
        finally:
            browser.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help=f"big run's steps ({STEPS[0]})")
    parser.add_argument(
        "--requests", type=int, default=None, help=f"requests of each URL ({REQUESTS[0]})"
    )
    parser.add_argument(
        "--loads", type=int, default=None, help=f"browser loads of each page ({LOADS[0]})"
    )
    parser.add_argument("--no-browser", action="store_true", help="the HTTP table only")
    parser.add_argument("--verbose", action="store_true", help="also progress")
    args = parser.parse_args(argv)
    size = 1 if args.quick else 0
    steps = args.steps if args.steps is not None else STEPS[size]
    requests = args.requests if args.requests is not None else REQUESTS[size]
    loads = args.loads if args.loads is not None else LOADS[size]
    if steps < 3 or requests < 1 or loads < 1:
        parser.error("--steps must be at least 3, --requests and --loads at least 1")

    from tests.serverproc import ServerProc, start_server
    from tests.ui.bigrun import PROJECT, SMALL_PIPELINE, make_run

    def log(msg: str) -> None:
        if args.verbose:
            print(f"  .. {msg}", file=sys.stderr, flush=True)

    chromium = None if args.no_browser else find_chromium()
    work = Path(tempfile.mkdtemp(prefix="stepline-bench-ui-"))
    home = work / "home"
    server: ServerProc | None = None
    notes: list[str] = []
    browser_version = ""
    try:
        small = make_run(home, "small")
        big = make_run(home, "big", steps)
        log(f"runs made: small {small.run_id}, big {big.run_id}")
        t0 = time.perf_counter()
        server = start_server(home)
        startup = time.perf_counter() - t0
        runs_page = f"/runs?project={PROJECT}&pipeline={SMALL_PIPELINE}"
        targets = make_targets(small.run_id, big.run_id, steps, runs_page)
        measure_http(server.url, targets, requests, log)
        pages = [t for t in targets if t.browser]
        if chromium is not None:
            live = [t for t in pages if not t.missing]
            browser_version = measure_browser(server.url, live, loads, chromium, log)
        notes.append(
            f"runs: {{small}} = {small.run_id} (4 steps, made in {small.seconds:.2f} s), "
            f"{{big}} = {big.run_id} ({steps:,} steps, made in {big.seconds:.2f} s; "
            f"{big.wall:.2f} s with the child's start-up)"
        )
        notes.append(
            f"server: `stepline server --port 0` process on {server.url}, up in "
            f"{startup * 1000:.0f} ms (spawn until /health answers)"
        )
    except (Broken, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if server is not None:
            print(f"-- server output:\n{''.join(server.output or [])[-2000:]}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    import httpx

    print(
        f"stepline UI benchmark{' (--quick)' if args.quick else ''}: a small run and a run of "
        f"{steps:,} steps behind a `stepline server` process; ratio = median / the floor's"
    )
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"httpx {httpx.__version__}, {os.cpu_count()} cpus; temp dir {tempfile.gettempdir()}"
    )
    print()
    print(f"HTTP: GET, whole body read, {requests} requests of each URL over one connection")
    print(render_http(targets))
    if any(t.missing for t in targets):
        notes.append("n/a: the URL answered 404 (the page is not built yet)")
    print()
    if chromium is None:
        why = "--no-browser" if args.no_browser else f"no Chromium ({CHROMIUM})"
        print(f"browser: skipped ({why})")
    else:
        print(f"browser: Chromium {browser_version}, headless, {loads} loads of each page")
        print(render_browser(pages))
    print()
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
