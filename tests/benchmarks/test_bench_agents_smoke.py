"""The agents benchmark stays runnable: a quick run prints every row with numbers, and leaves
no agent behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: row -> (n in --quick, whether "per s" is a number, the target shown or None for "-")
ROWS = {
    "dispatch to an idle agent, p50": ("5", False, "<= 100 ms"),
    "dispatch to an idle agent, p95": ("5", False, None),
    "enqueue -> completed, p50": ("5", False, None),
    "enqueue -> completed, p95": ("5", False, None),
    "chain through an agent": ("5", True, None),
    "chain in local processes": ("5", True, "<= 1.5x floor"),
    "drain, 1 agent": ("10", True, None),
    "drain, 2 agents": ("10", True, None),
}


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _processes_on(home_root: Path) -> list[str]:
    """Command lines of the live processes whose STEPLINE_HOME is under ``home_root``."""
    marker = f"STEPLINE_HOME={home_root}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


@pytest.mark.slow
def test_agents_benchmark_quick_run_prints_its_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_agents.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for row, (n, rate, target) in ROWS.items():
        found = [ln for ln in lines if ln.startswith(row + " ")]
        assert len(found) == 1, f"no row {row!r} (or more than one) in:\n{proc.stdout}"
        cells = found[0][len(row) :].split()
        assert cells[0] == n, found[0]
        ms, per_second, floor, ratio = cells[1:5]
        assert _number(ms) > 0 and _number(floor) > 0, found[0]
        assert ratio.endswith("x") and _number(ratio[:-1]) > 0, found[0]
        if rate:
            assert _number(per_second) > 0, found[0]
        else:
            assert per_second == "-", found[0]
        shown = " ".join(cells[5:-1])
        if target is None:
            assert (shown, cells[-1]) == ("-", "-"), found[0]
        else:
            assert shown == target, found[0]
            assert cells[-1] in ("ok", "MISS"), found[0]
    assert "first task of a fresh agent" in proc.stdout
    assert "stepline:" not in proc.stderr, proc.stderr  # e.g. log lines that never got stored
    if Path("/proc/self/environ").exists():
        assert _processes_on(tmp_path) == []  # every agent (and its children) was stopped
