"""The decorator benchmark stays runnable: a quick run prints every row with numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ROWS = (
    "decorator debug, chain",
    "decorator debug, fan-out",
    "controller in-process, chain",
    "decorator local, chain",
    "decorator local, fan-out",
    "controller local processes, chain",
)


@pytest.mark.slow
def test_decorator_benchmark_quick_run_prints_its_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_decorator.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for row in ROWS:
        found = [ln for ln in lines if ln.startswith(row + " ")]
        assert len(found) == 1, f"no row {row!r} (or more than one) in:\n{proc.stdout}"
        cells = found[0][len(row) :].split()
        assert cells[0] == "5", found[0]  # --quick: 5 steps
        total, per_step, floor, ratio = cells[1:5]
        for number in (total, per_step, floor, ratio.removesuffix("x")):
            assert float(number.replace(",", "")) >= 0, found[0]
        assert float(per_step.replace(",", "")) > 0, found[0]
        assert cells[-1] in ("ok", "MISS"), found[0]
    assert "per step vs the controller's chain" in proc.stdout
    assert "stepline:" not in proc.stderr, proc.stderr  # e.g. log lines that never got stored
