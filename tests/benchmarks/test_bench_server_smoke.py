"""The server benchmark stays runnable: a quick run prints every row with numbers for both
backends, and leaves no server process behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: row -> (n in --quick, the unit of its values, the target shown or None for "-")
ROWS = {
    "task creation": ("100", "tasks/s", None),
    "metric points (add_scalars, batches of 2,000)": ("20,000", "points/s", ">= 25%"),
    "artifact 10 MB round trip": ("1", "time", "<= 2x"),
    "  put_artifact": ("1", "time", None),
    "  artifact_local_path(verify=True)": ("1", "time", None),
    "dispatch (enqueue -> claim), p50": ("5", "time", None),
    "dispatch (enqueue -> claim), p95": ("5", "time", None),
}


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _processes_on(root: Path) -> list[str]:
    """Command lines of the live processes whose STEPLINE_HOME is under ``root``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            if any(v.startswith(f"STEPLINE_HOME={root}".encode()) for v in environ):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


@pytest.mark.slow
def test_server_benchmark_quick_run_prints_its_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_server.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for row, (n, unit, target) in ROWS.items():
        found = [ln for ln in lines if ln.startswith(row + " ")]
        assert len(found) == 1, f"no row {row!r} (or more than one) in:\n{proc.stdout}"
        cells = found[0][len(row) :].split()
        assert cells[0] == n, found[0]
        values = [(cells[1], cells[2]), (cells[3], cells[4])]  # embedded, http
        for number, shown_unit in values:
            assert _number(number) > 0, found[0]
            assert shown_unit in (("ms", "s") if unit == "time" else (unit,)), found[0]
        ratio = cells[5]
        assert _number(ratio.rstrip("%x")) > 0, found[0]
        assert ratio.endswith("%" if unit != "time" else "x"), found[0]
        shown = " ".join(cells[6:-1])
        if target is None:
            assert (shown, cells[-1]) == ("-", "-"), found[0]
        else:
            assert shown == target, found[0]
            assert cells[-1] in ("ok", "MISS"), found[0]
    assert "note: server: `stepline server --port 0` process" in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    if Path("/proc/self/environ").exists():
        assert _processes_on(tmp_path) == []  # the server was stopped
