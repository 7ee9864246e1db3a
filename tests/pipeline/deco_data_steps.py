"""Module-level components and pipelines for ``test_decorator_data.py``.

In local mode a component's stored code (this module's imports, the literal constants and the
same-module helpers it uses, and the function itself) runs in a child process, so every
component may only use its arguments, imports, module-level literal constants and the plain
helper functions below. Classes are not copied into a step's code: a component that builds a
``Point`` imports it from this module.
"""

from __future__ import annotations

import json
import os

from stepline import Task
from stepline.automation.controller import PipelineDecorator

PROJECT = "deco-data"
BUMP = 1000  # a module-level constant a component reads (copied into its stored code)
ARG_NAMES = ["i", "f", "b", "s", "s2", "none", "lst", "dct", "tup", "frame", "arr", "point"]


class Point:
    """A custom (picklable) class: travels as a pickled artifact."""

    def __init__(self, x: float, y: float) -> None:
        self.x = x
        self.y = y

    def __eq__(self, other: object) -> bool:
        return type(other).__name__ == "Point" and (self.x, self.y) == (other.x, other.y)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.x, self.y))

    def __repr__(self) -> str:
        return f"Point({self.x}, {self.y})"


def sample_frame(n: int = 3):
    import pandas as pd

    return pd.DataFrame({"x": list(range(n)), "y": [i * 0.5 for i in range(n)], "s": ["a"] * n})


def sample_array(n: int = 3):
    import numpy as np

    return np.arange(n, dtype=np.float32) * 1.5


def plain(value):
    """A JSON-friendly picture of ``value`` that keeps its type's identity (a helper)."""
    kind = type(value).__name__
    if kind == "DataFrame":
        return {"columns": list(value.columns), "dtypes": [str(d) for d in value.dtypes],
                "data": value.to_dict("list"), "index": list(value.index)}  # fmt: skip
    if kind == "ndarray":
        return {"dtype": str(value.dtype), "shape": list(value.shape), "data": value.tolist()}
    if kind == "Point":
        return {"x": value.x, "y": value.y}
    return value


# -- type round trips --------------------------------------------------------------------------
@PipelineDecorator.component(return_values=["report"])
def describe_args(i, f, b, s, s2, none, lst, dct, tup, frame, arr, point):
    """What the step received: {argument: [type name, plain value]}."""
    got = {
        "i": i, "f": f, "b": b, "s": s, "s2": s2, "none": none, "lst": lst, "dct": dct,
        "tup": tup, "frame": frame, "arr": arr, "point": point,
    }  # fmt: skip
    return {name: [type(v).__name__, plain(v)] for name, v in got.items()}


@PipelineDecorator.component(return_values=ARG_NAMES)
def make_values(n: int, point):
    """Returns one value of every kind (the Point passed in, moved by n)."""
    from tests.pipeline.deco_data_steps import Point

    return (
        n * 7,
        n * 1.0,
        n > 2,
        "hé\nllo",
        "007",
        None,
        [n, "a", None, 1.5],
        {"k": [1, 2], "nested": {"x": n}},
        (n, "t"),
        sample_frame(n),
        sample_array(n),
        Point(point.x + n, point.y),
    )


@PipelineDecorator.component(return_values=["names"])
def kinds(items: list):
    return [type(v).__name__ for v in items]


LITERALS = {
    "i": 2**40 + 1,
    "f": 2.0,
    "b": False,
    "s": "hé\nllo",
    "s2": "007",
    "none": None,
    "lst": [1, "a", None, 1.5, [2, 3]],
    "dct": {"k": [1, 2], "nested": {"x": True}, "e": {}},
    "tup": (1, "t", None),
}


@PipelineDecorator.pipeline(name="types", project=PROJECT, version="1.0", return_value="result")
def types_pipeline(n: int = 3):
    point = Point(1.5, -2.0)
    direct = describe_args(frame=sample_frame(2), arr=sample_array(4), point=point, **LITERALS)
    values = make_values(n, point)
    via_refs = describe_args(*values)
    listed = kinds([values[9], values[10], values[0], values[11]])
    return {"direct": direct, "via_refs": via_refs, "values": list(values), "kinds": listed}


# -- where values are stored -------------------------------------------------------------------
@PipelineDecorator.component(
    return_values=["count", "name", "ratio", "flag", "nothing", "frame", "arr", "items"],
    task_type="training",
    tags=["stored"],
)
def store_step(n: int, label: str, ratio: float, flag: bool, nothing, items: list, table, vec):
    return n + 1, label.upper(), ratio / 2, not flag, nothing, table, vec * 2, [*items, n]


@PipelineDecorator.pipeline(
    name="storage",
    project=PROJECT,
    version="2.0",
    return_value="result",
    args_map={"Data": ["path", "rows"]},
    target_project=f"{PROJECT}/steps",
    add_pipeline_tags=True,
)
def storage_pipeline(
    n: int = 4, path: str = "data.csv", rows: int = 2, weights: list | None = None
):
    outs = store_step(
        n, path, 0.5, True, None, weights or [1, 2], table=sample_frame(rows), vec=sample_array(n)
    )
    return outs[0] + 10


@PipelineDecorator.pipeline(name="storage-obj", project=PROJECT, return_value="result")
def object_result_pipeline(n: int = 2):
    outs = store_step(n, "x", 1.0, False, None, [], table=sample_frame(n), vec=sample_array(n))
    return {"frame": outs[5], "count": outs[0]}


# -- caching -----------------------------------------------------------------------------------
@PipelineDecorator.component(return_values=["value"], cache=True)
def cached_inc(x: int, log_path: str):
    with open(log_path, "a") as f:
        f.write(f"cached_inc {x}\n")
    return x + BUMP


@PipelineDecorator.component(return_values=["total"], cache=True)
def cached_add(a: int, b: int, log_path: str):
    with open(log_path, "a") as f:
        f.write(f"cached_add {a} {b}\n")
    return a + b


@PipelineDecorator.component(return_values=["arr"], cache=True)
def cached_array(n: int, log_path: str):
    import numpy as np

    with open(log_path, "a") as f:
        f.write(f"cached_array {n}\n")
    return np.arange(n, dtype=np.int64)


@PipelineDecorator.component(return_values=["sum"], cache=True)
def cached_sum(arr, log_path: str):
    with open(log_path, "a") as f:
        f.write(f"cached_sum {len(arr)}\n")
    return int(arr.sum())


@PipelineDecorator.pipeline(name="cached", project=PROJECT, return_value="result")
def cache_pipeline(log_path: str, a: int = 1, b: int = 2, n: int = 4):
    x = cached_inc(a, log_path)  # step cached_inc
    y = cached_inc(b, log_path)  # step cached_inc_1
    z = cached_add(x, y, log_path)  # from both
    s = cached_sum(cached_array(n, log_path), log_path)  # an artifact passed by reference
    return [z, s]


# -- the DAG -----------------------------------------------------------------------------------
@PipelineDecorator.component(return_values=["value"])
def dag_source(n: int):
    return n


@PipelineDecorator.component(return_values=["value"])
def dag_square(x: int, i: int):
    return x * i * i


@PipelineDecorator.component(return_values=["value"])
def dag_sum(values: list):
    return sum(values)


@PipelineDecorator.component(return_values=["seen"])
def dag_peek(total: int):
    """Waits until the pipeline's stored DAG (read from the store while the pipeline still
    runs) lists this step; returns the step names it lists then, and the caller's total."""
    import time

    from stepline.backend import get_backend

    me = Task.current_task()
    rt = me.get_runtime_properties()
    pipe_id, name = rt["_pipeline_id"], rt["_pipeline_step"]
    deadline = time.time() + 20
    nodes: dict = {}
    while time.time() < deadline:
        configs = {c.name: c.value for c in get_backend().get_configs(pipe_id)}
        nodes = json.loads(configs.get("Pipeline", "{}")).get("nodes", {})
        if name in nodes:
            break
        time.sleep(0.05)
    status = get_backend().get_task(pipe_id).status.value
    return {"nodes": sorted(nodes), "pipeline_status": status, "total": total}


@PipelineDecorator.pipeline(name="dag", project=PROJECT, return_value="result")
def dag_pipeline(n: int = 3):
    base = dag_source(n)
    squares = [dag_square(base, i) for i in range(n)]
    total = dag_sum(squares)  # a list of results: built when the step launches
    # using the value makes the logic wait for dag_sum: the next call depends on it
    extra = dag_source(100) if total > 5 else dag_source(-1)
    seen = dag_peek(total)
    return {"total": total, "extra": extra, "seen": seen}


# -- monitoring and reports onto the pipeline's task ------------------------------------------
@PipelineDecorator.component(
    return_values=["final"],
    monitor_metrics=[("loss", "train"), (("acc", "val"), ("step acc", "validation"))],
    monitor_artifacts=["summary", ("table", "step_table")],
)
def train(epochs: int):
    step = Task.current_task()
    log = step.get_logger()
    loss = 1.0
    for e in range(epochs):
        loss = loss / 2
        log.report_scalar("loss", "train", value=loss, iteration=e)
        log.report_scalar("acc", "val", value=1 - loss, iteration=e)
    log.report_scalar("not monitored", "x", value=5.0, iteration=0)
    step.upload_artifact("summary", {"epochs": epochs, "loss": loss}, wait_on_upload=True)
    step.upload_artifact("table", sample_frame(epochs), wait_on_upload=True)
    step.upload_artifact("private", {"hidden": True}, wait_on_upload=True)
    pipe_log = PipelineDecorator.get_logger()
    pipe_log.report_scalar("from step", "series", value=42.5, iteration=3)
    PipelineDecorator.upload_artifact("pipe_note", {"by": "train", "pid": os.getpid()})
    return {"loss": loss, "step_task": step.id, "pid": os.getpid()}


@PipelineDecorator.pipeline(name="monitor", project=PROJECT, return_value="result")
def monitor_pipeline(epochs: int = 3):
    PipelineDecorator.get_logger().report_scalar("logic", "s", value=7.0, iteration=0)
    return train(epochs)


# -- the same pipeline in both modes -----------------------------------------------------------
@PipelineDecorator.component(return_values=["frame", "stats", "k"])
def prepare(rows: int, scale: float):
    frame = sample_frame(rows)
    frame["y"] = frame["y"] * scale
    return frame, {"rows": rows, "sum": float(frame["y"].sum())}, rows * scale


@PipelineDecorator.component(return_values=["out", "arr"])
def consume(frame, stats: dict, k: float, extra: list):
    import numpy as np

    arr = np.asarray(frame["y"], dtype=np.float64) + k
    return {"cols": list(frame.columns), "stats": stats, "extra": extra, "k": k}, arr


@PipelineDecorator.pipeline(name="compare", project=PROJECT, return_value="result")
def compare_pipeline(rows: int = 4, scale: float = 2.0):
    frame, stats, k = prepare(rows, scale)
    out, arr = consume(frame, stats, k, extra=[k, rows])
    return {"out": out, "arr": arr, "k": k, "first": float(arr[0])}


# -- bugs: minimal repros (see the xfail tests) ------------------------------------------------
@PipelineDecorator.component(return_values=["m"])
def average(n: int):
    import numpy as np

    arr = np.arange(n, dtype=np.float64)
    return arr.sum() / len(arr)  # a numpy.float64, a subclass of float


@PipelineDecorator.component(return_values=["desc"])
def kind_and_double(x):
    return [type(x).__name__, x * 2]


@PipelineDecorator.pipeline(name="np-float", project=PROJECT, return_value="result")
def numpy_float_pipeline(n: int = 4):
    m = average(n)
    return {"step": kind_and_double(m), "logic": m}


@PipelineDecorator.component(return_values=["desc"])
def kind_and_value(x):
    return [type(x).__name__, x]


@PipelineDecorator.pipeline(name="lossy", project=PROJECT, return_value="result")
def lossy_pipeline():
    return {
        "int_keys": kind_and_value({1: "a", 2: "b"}),
        "tuple_in_list": kind_and_value([(1, 2)]),
    }


@PipelineDecorator.component(return_values=["m"])
def mean(values: list):
    import statistics

    return statistics.mean(values)


@PipelineDecorator.pipeline(name="mean", project=PROJECT, return_value="result")
def mean_pipeline():
    return mean([1.0, 2.0, 3.0])
