"""The queue benchmark stays runnable: a quick run prints every row with numbers (the
PostgreSQL rows where its binaries are installed), and leaves no agent or worker behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: row -> n in --quick
ROWS = {
    f"{measure}, {k} {one if k == 1 else many}, {store}": n
    for measure, one, many, n in (
        ("drain", "agent", "agents", "20"),
        ("claim+complete", "process", "processes", "100"),
    )
    for store in ("SQLite", "PostgreSQL")
    for k in (1, 2, 4)
}


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _processes_on(root: Path) -> list[str]:
    """Command lines of the live processes whose STEPLINE_HOME is under ``root``."""
    marker = f"STEPLINE_HOME={root}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


@pytest.fixture
def temp_dir() -> Iterator[Path]:
    """The run's TMPDIR: a folder of its own that the PostgreSQL server's user (``postgres``,
    when run as root) can pass through, as it can through /tmp (pytest's are private)."""
    folder = Path(tempfile.mkdtemp(prefix="stepline-smoke-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_queue_benchmark_quick_run_prints_its_table(temp_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_queue.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(temp_dir), "HOME": str(temp_dir)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # without PostgreSQL binaries the run says so and shows the SQLite rows only
    postgres = "note: no PostgreSQL rows: no PostgreSQL binaries" not in proc.stdout
    floors: dict[str, set[str]] = {}
    for row, n in ROWS.items():
        found = [ln for ln in lines if ln.startswith(row + " ")]
        if row.endswith("PostgreSQL") and not postgres:
            assert found == [], found
            continue
        assert len(found) == 1, f"no row {row!r} (or more than one) in:\n{proc.stdout}"
        cells = found[0][len(row) :].split()
        assert len(cells) == 5 and cells[0] == n, found[0]
        ms, per_second, floor, ratio = cells[1:]
        assert _number(ms) > 0 and _number(per_second) > 0, found[0]
        assert ratio.endswith("x") and _number(ratio[:-1]) > 0, found[0]
        floors.setdefault(row.split(",")[0], set()).add(floor)
        if row.endswith(", 1 agent, SQLite") or row.endswith(", 1 process, SQLite"):
            assert (floor, ratio) == (per_second, "1.00x"), found[0]  # the floor row itself
    assert all(len(f) == 1 for f in floors.values()), floors  # one floor per measure
    assert "stepline:" not in proc.stderr, proc.stderr  # e.g. log lines that never got stored
    assert list(temp_dir.glob("stepline-*")) == []  # its folders (and the server's) are gone
    if Path("/proc/self/environ").exists():
        assert _processes_on(temp_dir) == []  # every agent (and its children) was stopped
