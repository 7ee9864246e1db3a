"""What a resume costs: a chain of trivial steps fails at its last step, then is resumed.

Usage::

    .venv/bin/python benchmarks/bench_resume.py               # 100 and 500 steps, best of 3
    .venv/bin/python benchmarks/bench_resume.py --quick       # a few seconds (smoke run)
    .venv/bin/python benchmarks/bench_resume.py --steps 1000 --repeat 1

The chain runs in-process (``start_locally(run_pipeline_steps_locally=True, in_process=True)``):
step ``sK`` returns ``x + K`` for ``x`` the previous step's result, and the last step fails
while a flag file exists. Each repeat gets a fresh STEPLINE_HOME. Rows, each the best (min) of
``--repeat`` runs:

1. ``first run``: the chain runs and fails at its last step. Per step, it is the floor of the
   other rows: what running a trivial step costs with everything recorded.
2. ``resume``: the flag is removed and the run resumed (``recovery.resume_run``, which reads
   the run and plans the resume, then the new run is run here from its stored graph; both
   are timed): every step but the last is reused. Target: a
   reused step costs at most half of running one (ratio = per-step time / floor <= 0.5).
3. ``resume from the middle``: the completed run is resumed with ``from_step`` at its middle
   step: half the steps reused, half run again. Target: at most 0.75 of the floor.

The result of every run is checked (the last step returns the sum of the chain), so a broken
resume cannot report a fast number; nothing asserts a time, the exit status is non-zero only
when a run fails or returns a wrong result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUICK_STEPS = (50,)


def add(x: int, i: int, last: int, flag: str) -> int:
    import os

    if i == last and os.path.exists(flag):
        raise RuntimeError("the flag is up")
    return x + i


@dataclass
class Times:
    first: float
    resume: float
    middle: float


def one_repeat(n: int, folder: Path) -> Times:
    """Run, resume and resume from the middle a chain of ``n`` steps in a fresh home."""
    from stepline import PipelineController
    from stepline.backend import get_backend, reset_backend
    from stepline.pipeline.controller import run_stored_pipeline
    from stepline.pipeline.recovery import resume_run

    home = folder / "home"
    os.environ["STEPLINE_HOME"] = str(home)
    reset_backend()
    backend = get_backend()
    flag = folder / "flag"
    flag.touch()
    pipe = PipelineController(name="chain", project="bench-resume")
    prev = None
    for i in range(n):
        pipe.add_function_step(
            f"s{i}", add,
            function_kwargs={"x": 0 if prev is None else f"${{{prev}.total}}", "i": i,
                             "last": n - 1, "flag": str(flag)},
            function_return=["total"], parents=[prev] if prev else None,
        )  # fmt: skip
        prev = f"s{i}"
    start = time.perf_counter()
    ok = pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
    first = time.perf_counter() - start
    if ok or pipe.id is None:
        raise SystemExit("the first run should have failed at its last step")
    flag.unlink()

    def resumed(run_id: str, **kwargs: str) -> tuple[str, float]:
        begin = time.perf_counter()  # planning the resume counts too
        attempt = resume_run(backend, run_id, **kwargs)  # type: ignore[arg-type]
        code = run_stored_pipeline(attempt.id)
        took = time.perf_counter() - begin
        if code != 0:
            raise SystemExit(f"the resumed run {attempt.id} did not complete")
        check(backend, attempt.id, n)
        return attempt.id, took

    done, resume = resumed(pipe.id)
    _, middle = resumed(done, from_step=f"s{n // 2}")
    reset_backend()
    return Times(first, resume, middle)


def check(backend: object, run_id: str, n: int) -> None:
    from stepline.pipeline.views import RunView

    view = RunView.load(backend, backend.get_task(run_id))  # type: ignore[attr-defined]
    last = next(s for s in view.steps if s.name == f"s{n - 1}")
    params = backend.get_params(last.task)  # type: ignore[attr-defined]
    total = next(p.value for p in params if p.key == "return/total")
    if int(total) != sum(range(n)):
        raise SystemExit(f"run {run_id}: the chain returned {total}, not {sum(range(n))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"steps {QUICK_STEPS}, 1 repeat")
    parser.add_argument("--steps", default="100,500", help="chain lengths, comma separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (the best counts)")
    args = parser.parse_args(argv)
    sizes = QUICK_STEPS if args.quick else tuple(int(s) for s in args.steps.split(","))
    repeat = 1 if args.quick else max(1, args.repeat)

    import sqlalchemy

    print(
        f"stepline resume benchmark: a chain of trivial in-process steps failing at its last "
        f"step, then resumed; best of {repeat}, each run in a fresh STEPLINE_HOME"
    )
    print(
        f"python {sys.version.split()[0]}, sqlalchemy {sqlalchemy.__version__}, "
        f"{os.cpu_count()} cpus"
    )
    print()
    rows: list[tuple[str, int, float, float, float, str]] = []
    for n in sizes:
        best: Times | None = None
        for _ in range(repeat):
            folder = Path(tempfile.mkdtemp(prefix="stepline-bench-resume-"))
            try:
                t = one_repeat(n, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            best = t if best is None else Times(
                min(best.first, t.first), min(best.resume, t.resume), min(best.middle, t.middle)
            )  # fmt: skip
        assert best is not None
        floor = best.first / n * 1000
        rows.append(("first run", n, best.first, floor, 1.0, "the floor"))
        rows.append(("resume", n, best.resume, floor, best.resume / best.first, "<= 0.5x"))
        rows.append(
            ("resume from the middle", n, best.middle, floor, best.middle / best.first, "<= 0.75x")
        )
    header = ("row", "steps", "total s", "per-step ms", "floor ms", "ratio", "target", "ok?")
    table = [
        (
            name, str(n), f"{total:.3f}", f"{total / n * 1000:.2f}", f"{floor:.2f}",
            f"{ratio:.2f}x", target,
            "-" if target == "the floor" else ("ok" if ratio <= float(target[2:-1]) else "MISS"),
        )
        for name, n, total, floor, ratio, target in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print()
    print("ratio: the row's time / the first run's time for the same chain (floor = per step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
