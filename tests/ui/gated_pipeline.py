"""A pipeline whose middle step waits for a file: a test holds a run at that step for as
long as it needs to look at it, then lets it go (or aborts it).

``python gated_pipeline.py`` (``STEPLINE_HOME`` set) runs it with its steps as child processes
of this one; its arguments are ``size`` (the first step makes ``range(size)``) and ``gate``
(the file the middle step waits for). The last step reports the sum as the metric
``total/value``.

A function step runs its own source and the top-level imports of this module: keep those to
the standard library and stepline.
"""

from __future__ import annotations

import sys

from stepline import PipelineController

NAME = "gated"
PROJECT = "ui"


def prepare(size: int):
    print(f"preparing {size} values")
    return list(range(size))


def wait_gate(values, gate: str):
    import os
    import time

    n = 0
    while not os.path.exists(gate):
        if n % 10 == 0:
            print(f"waiting for the gate ({n // 10})", flush=True)
        n += 1
        time.sleep(0.05)
    print("gate open", flush=True)
    return [v * 1 for v in values]


def finish(values):
    from stepline import Logger

    total = sum(values)
    Logger.current_logger().report_scalar("total", "value", total, 0)
    print(f"total {total}")
    return total


def build(size: int, gate: str) -> PipelineController:
    pipe = PipelineController(name=NAME, project=PROJECT, version="1.0.0")
    pipe.add_parameter("size", size, "how many values")
    pipe.add_parameter("gate", gate, "the file the middle step waits for")
    pipe.add_function_step(
        "prepare", prepare, function_kwargs={"size": "${pipeline.size}"},
        function_return=["values"], cache_executed_step=False,
    )  # fmt: skip
    pipe.add_function_step(
        "wait_gate", wait_gate,
        function_kwargs={"values": "${prepare.values}", "gate": "${pipeline.gate}"},
        function_return=["values"],
    )  # fmt: skip
    pipe.add_function_step(
        "finish", finish, function_kwargs={"values": "${wait_gate.values}"},
        function_return=["total"], monitor_metrics=[("total", "value")],
    )  # fmt: skip
    return pipe


if __name__ == "__main__":
    pipe = build(int(sys.argv[1]), sys.argv[2])
    ok = pipe.start_locally(run_pipeline_steps_locally=True)
    print(f"run {pipe.id}: {'completed' if ok else 'not completed'}")
