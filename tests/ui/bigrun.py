"""Real pipeline runs for the browser tests and the UI benchmark.

``make_big_run(home)`` stores a run of 1,000 steps (one root, a fan-out of 998 parallel steps,
one join): a ``PipelineDecorator`` pipeline in debug mode (steps in threads of its process).
``make_small_run(home)`` stores a run of four steps with arguments, artifacts, metrics and log
lines: a ``PipelineController`` whose steps also run in threads of its process
(``start_locally(..., in_process=True)``), so an agent can run it again from the stored DAG.
Each is made by a child Python process on ``home`` (``STEPLINE_HOME``), so the caller's
process-wide backend and pipeline state stay untouched.

Run as a script (``python tests/ui/bigrun.py big|small [STEPS]``, ``STEPLINE_HOME`` set) it
prints one JSON line: ``{"run": RUN_ID, "seconds": SECONDS}``.

A function step stores (and runs) the top-level imports of its module: keep those below to
the standard library and the decorator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stepline.pipeline.decorator import PipelineDecorator

BIG_PIPELINE = "fan-out"
SMALL_PIPELINE = "train"
PROJECT = "ui"
TIMEOUT = 300  #: seconds a child process may take before the caller gives up on it


# -- the big run: a decorator pipeline ------------------------------------------------------
_started: list[str] = []  #: the id of each run ``fan_out`` started in this process


@PipelineDecorator.component(return_values=["count"])
def make_shards(count: int):
    print(f"making {count} shards")
    return count


@PipelineDecorator.component(return_values=["value"])
def shard(count: int, index: int):
    return index * 2


@PipelineDecorator.component(return_values=["total"])
def gather(values: list):
    print(f"gathered {len(values)} shards")
    return sum(values)


@PipelineDecorator.pipeline(name=BIG_PIPELINE, project=PROJECT, version="1.0.0")
def fan_out(shards: int):
    run = PipelineDecorator.get_current_pipeline()
    assert run is not None and run.id is not None
    _started.append(run.id)
    count = make_shards(shards)
    values = [shard(count, i) for i in range(shards)]
    return gather(values)


# -- the small run's steps -------------------------------------------------------------------
def load_rows(rows: int):
    data = [{"x": i, "y": 2 * i + 1} for i in range(rows)]
    print(f"loaded {len(data)} rows")
    print("columns: x, y")
    return data


def train(data, epochs: int):
    from stepline.sdk.logger import Logger

    logger = Logger.current_logger()
    weight = 0.0
    for epoch in range(epochs):
        weight += 0.5
        loss = 1.0 / (epoch + 1)
        logger.report_scalar("loss", "train", loss, epoch)
        print(f"epoch {epoch}: loss {loss:.3f}")
    return {"weight": weight, "rows": len(data)}


def evaluate(model):
    from stepline.sdk.logger import Logger

    accuracy = min(1.0, 0.8 + model["weight"] / 100)
    Logger.current_logger().report_scalar("accuracy", "test", accuracy, 0)
    print(f"accuracy {accuracy:.3f}")
    return accuracy


def report(accuracy: float):
    print(f"report: accuracy {accuracy:.1%}")
    return f"accuracy {accuracy:.3f}"


# -- building and running (in the child process) ---------------------------------------------
def _run_big(steps: int) -> str:
    if steps < 3:
        raise SystemExit(f"a big run needs at least 3 steps, not {steps}")
    PipelineDecorator.debug_pipeline()
    shards = steps - 2
    total = fan_out(shards)
    run_id = _started[-1]
    from stepline.backend import get_backend

    status = get_backend().get_task(run_id).status
    if total != shards * (shards - 1) or status != "completed":
        raise SystemExit(f"the big run {run_id} is {status} (it returned {total!r})")
    return run_id


def _run_small() -> str:
    from stepline.pipeline.controller import PipelineController

    pipe = PipelineController(name=SMALL_PIPELINE, project=PROJECT, version="1.0.0")
    pipe.add_parameter("rows", 20, "rows to load")
    pipe.add_parameter("epochs", 3, "training epochs")
    pipe.add_function_step(
        "load_rows",
        load_rows,
        function_kwargs={"rows": "${pipeline.rows}"},
        function_return=["data"],
    )
    pipe.add_function_step(
        "train",
        train,
        function_kwargs={"data": "${load_rows.data}", "epochs": "${pipeline.epochs}"},
        function_return=["model"],
        monitor_metrics=[("loss", "train")],
    )
    pipe.add_function_step(
        "evaluate",
        evaluate,
        function_kwargs={"model": "${train.model}"},
        function_return=["accuracy"],
    )
    pipe.add_function_step(
        "report",
        report,
        function_kwargs={"accuracy": "${evaluate.accuracy}"},
        function_return=["summary"],
    )
    if not pipe.start_locally(run_pipeline_steps_locally=True, in_process=True):
        raise SystemExit(f"the small run {pipe.id} did not complete")
    assert pipe.id is not None
    return pipe.id


def _main(argv: list[str]) -> int:
    kind = argv[0] if argv else ""
    t0 = time.perf_counter()
    if kind == "big":
        run_id = _run_big(int(argv[1]) if len(argv) > 1 else 1000)
    elif kind == "small":
        run_id = _run_small()
    else:
        print("usage: bigrun.py big [STEPS] | small", file=sys.stderr)
        return 2
    print(json.dumps({"run": run_id, "seconds": round(time.perf_counter() - t0, 3)}))
    return 0


# -- the caller's side -----------------------------------------------------------------------
@dataclass(frozen=True)
class Made:
    run_id: str
    seconds: float  #: the child's own time for the run (building, running, recording)
    wall: float  #: the child process's whole life, Python and stepline imports included


def make_run(home: Path, kind: str, steps: int = 1000) -> Made:
    """Run ``bigrun.py KIND [STEPS]`` in a child process on ``home``; raises with its output
    if the run failed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env.update(STEPLINE_HOME=str(home), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, kind, str(steps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    wall = time.perf_counter() - t0
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    if proc.returncode != 0 or not last[0].startswith("{"):
        raise RuntimeError(
            f"bigrun.py {kind} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    made = json.loads(last[0])
    return Made(str(made["run"]), float(made["seconds"]), wall)


def make_big_run(home: Path, steps: int = 1000) -> str:
    """A completed run of ``steps`` steps in ``home``'s store: ``make_shards``, then
    ``shard_0000`` .. ``shard_{steps-3}`` in parallel, then ``gather``; its run id."""
    return make_run(home, "big", steps).run_id


def make_small_run(home: Path) -> str:
    """A completed run of ``load_rows -> train -> evaluate -> report`` in ``home``'s store
    (arguments ``rows`` and ``epochs``; artifacts ``data`` and ``model``; scalars ``loss`` and
    ``accuracy``; log lines in every step); its run id."""
    return make_run(home, "small").run_id


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
