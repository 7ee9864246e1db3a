"""The benchmarks stay runnable: a quick run prints every row with a ratio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_store_benchmark_quick_run_prints_its_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_store.py"), "--quick", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for row in ("task create+start+complete, SDK", "report_scalar + flush", "round trip"):
        found = [ln for ln in lines if row in ln]
        assert found, f"no row {row!r} in:\n{proc.stdout}"
        assert any(ch.isdigit() for ch in found[0].split(row, 1)[1])


@pytest.mark.slow
def test_pipeline_benchmark_quick_run_prints_its_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_pipeline.py"), "--quick", "--repeat=1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for row in ("in-process", "local processes"):
        found = [ln for ln in lines if ln.startswith(row)]
        assert found, f"no row {row!r} in:\n{proc.stdout}"
        cells = found[0].split(row, 1)[1].split()
        assert cells[0] == "5", found[0]  # --quick: a chain of 5 steps
        assert cells[-1] in ("ok", "MISS"), found[0]
    assert "stepline:" not in proc.stderr, proc.stderr  # e.g. log lines that never got stored
