"""The UI benchmark stays runnable: a tiny run prints every row of its tables (numbers, or
n/a for a page that answers 404), and leaves no server process behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.benchmarks.test_bench_server_smoke import _processes_on

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")

#: row -> whether it is a UI page (may answer 404: n/a)
HTTP_ROWS = {
    "/health (floor)": False,
    "/api/v1/pipelines": False,
    "/api/v1/pipelines/{small}": False,
    "/api/v1/pipelines/{big}": False,
    "/pipelines": True,
    "/runs?project=ui&pipeline=train": True,
    "/runs/{small}": True,
    "/runs/{big}": True,
    "/runs/{small}/state": True,
    "/runs/{big}/state": True,
    "/tasks": True,
}
#: row -> the wait that ends "ready"
BROWSER_ROWS = {
    "/health (floor)": "load",
    "/pipelines": "load",
    "/runs?project=ui&pipeline=train": "load",
    "/runs/{small}": "svg.dag",
    "/runs/{big}": "svg.dag",
    "/tasks": "load",
}
MS = re.compile(r"^\d[\d,]*\.\d$")


def _row(lines: list[str], name: str, stdout: str) -> list[str]:
    found = [ln for ln in lines if ln.startswith(name + " ")]
    assert len(found) == 1, f"no row {name!r} (or more than one) in:\n{stdout}"
    return found[0][len(name) :].split()


@pytest.fixture
def temp_dir() -> Iterator[Path]:
    """The run's TMPDIR and HOME: a short path of its own. Chromium's profile folder, and its
    ``SingletonSocket`` in it, go under TMPDIR, and a Unix socket's path must fit in 107
    bytes: pytest's ``tmp_path`` (under ``popen-gwN/`` with xdist) can be too long."""
    folder = Path(tempfile.mkdtemp(prefix="stepline-ui-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _run(temp_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_ui.py"), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(temp_dir), "HOME": str(temp_dir)},
    )


@pytest.mark.slow
def test_ui_benchmark_tiny_run_prints_its_tables(temp_dir: Path) -> None:
    browser = os.access(CHROMIUM, os.X_OK)
    proc = _run(temp_dir, "--steps", "20", "--requests", "3", "--loads", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    http, _, rest = proc.stdout.partition("\nbrowser")
    http_lines = http.splitlines()
    for name, ui in HTTP_ROWS.items():
        cells = _row(http_lines, name, proc.stdout)
        if cells[1:5] == ["n/a"] * 4 and ui:
            continue  # the page is not built (404)
        n, p50, p95, ratio, size, unit = cells
        assert n == "3", cells
        assert MS.match(p50) and MS.match(p95), cells
        assert float(p50.replace(",", "")) > 0, cells
        assert ratio.endswith("x") and float(ratio[:-1]) > 0, cells
        assert unit in ("B", "kB", "MB") and float(size) > 0, cells
    assert _row(http_lines, "/health (floor)", proc.stdout)[3] == "1.00x"
    if browser:
        assert "browser: Chromium " in proc.stdout
        browser_lines = rest.splitlines()
        for name, ready_at in BROWSER_ROWS.items():
            cells = _row(browser_lines, name, proc.stdout)
            if cells[1:] == ["n/a"] * 5:
                continue
            n, paint, ready, ready95, ratio, shown = cells
            assert n == "1", cells
            assert paint == "-" or MS.match(paint), cells
            assert MS.match(ready) and MS.match(ready95), cells
            assert ratio.endswith("x") and float(ratio[:-1]) > 0, cells
            assert shown == ready_at, cells
    else:
        assert "browser: skipped (no Chromium" in proc.stdout
    assert "note: runs: {small} = " in proc.stdout and "(20 steps, made in" in proc.stdout
    assert any(ln.startswith("note: server: `stepline server --port 0`") for ln in lines)
    assert "Traceback" not in proc.stderr, proc.stderr
    if Path("/proc/self/environ").exists():
        assert _processes_on(temp_dir) == []  # the server was stopped


@pytest.mark.slow
def test_ui_benchmark_without_the_browser(temp_dir: Path) -> None:
    proc = _run(temp_dir, "--steps", "3", "--requests", "1", "--no-browser")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "browser: skipped (--no-browser)" in proc.stdout
    assert "/api/v1/pipelines/{big}" in proc.stdout
