"""Module-level step functions for ``test_dataflow.py``.

A function step stores its source (with this module's imports and the constants it reads) on
its task and runs it in a thread or a forked child, so every step function lives here, at
module level. Each one imports what it needs inside its body.
"""

from __future__ import annotations

OFFSET = 100  # a module-level constant a step reads (copied into the step's code)


def basics(n: int = 3, scale: float = 1.5):
    return n * 2, n * scale, f"n={n}", n > 2, None


def make_objects(n: int = 4):
    import numpy as np

    return np.arange(n, dtype=float), {"rows": n, "names": ["a", "b"], "nested": {"k": 1.5}}


def make_frame(n: int = 3):
    import pandas as pd

    return pd.DataFrame({"x": list(range(n)), "y": [i * 0.5 for i in range(n)]})


def describe(arr, info, plain: int, frame=None):
    """Takes objects made by other steps and says what it got."""
    import numpy as np

    return {
        "arr_type": type(arr).__name__,
        "arr_sum": float(np.asarray(arr).sum()),
        "info": info,
        "plain": plain,
        "plain_type": type(plain).__name__,
        "frame_type": type(frame).__name__,
        "frame_y": None if frame is None else float(frame["y"].sum()),
    }


def split(values: list):
    half = len(values) // 2
    return values[:half], values[half:], len(values)


def use_split(left, right, count: int):
    return {"left": left, "right": right, "count": count}


def array_stats(arr, label: str = "x"):
    import numpy as np

    return f"{label}:{type(arr).__name__}:{arr.dtype}:{float(np.sum(arr))}"


def add(a: int, b: int = 1):
    return a + b


def add_v2(a: int, b: int = 1):
    # the same result as add(), different code
    return b + a


def plus_offset(a: int):
    return a + OFFSET


def numbers(n: int):
    import numpy as np

    return np.arange(n, dtype=np.int64)


def total(arr):
    return int(arr.sum())


def report_current_logger(steps: int = 3):
    from stepline import Logger

    log = Logger.current_logger()
    for i in range(steps):
        log.report_scalar("loss", "train", 1.0 / (i + 1), i)
    return steps


def report_task_logger(steps: int = 2):
    from stepline import Task

    log = Task.current_task().get_logger()
    for i in range(steps):
        log.report_scalar("loss", "train", 10.0 + i, i)
    return steps


def make_artifacts():
    from stepline import Task

    task = Task.current_task()
    task.upload_artifact("a", {"which": "a", "values": [1, 2, 3]})
    task.upload_artifact("b", [4, 5, 6])
    return 0


def to_pipeline(tag: str):
    from stepline.pipeline.controller import PipelineController

    PipelineController.get_logger().report_scalar("from_step", tag, 7.5, 3)
    PipelineController.upload_artifact(f"shared_{tag}", {"tag": tag, "values": [1, 2]})
    return tag


def square(i: int):
    return i * i


def join_all(**values):
    return sum(values.values())


def inc(x: int):
    return x + 1
