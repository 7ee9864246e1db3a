"""The resume benchmark stays runnable: a quick run prints every row with numbers (and the
benchmark itself checks each resumed run's result)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = ("first run", "resume", "resume from the middle")


@pytest.mark.slow
def test_resume_benchmark_quick_run_prints_its_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_resume.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for row in ROWS:
        found = [ln for ln in lines if ln.startswith(row + "  ")]
        assert len(found) == 1, f"no row {row!r} (or more than one) in:\n{proc.stdout}"
        cells = found[0][len(row) :].split()
        assert cells[0] == "50", found[0]  # --quick: 50 steps
        total, per_step, floor, ratio = cells[1:5]
        assert float(total) > 0 and float(per_step) > 0 and float(floor) > 0, found[0]
        assert float(ratio.removesuffix("x")) > 0, found[0]
        assert cells[-1] in ("ok", "MISS", "-"), found[0]
