"""Components for ``test_decorator_more``: numpy scalar arguments, a nested step that may fail,
and a retried step that tells which code ran it."""

from __future__ import annotations

import os

import numpy as np

from stepline.automation.controller import PipelineDecorator

PROJECT = "deco-more-tests"


@PipelineDecorator.component(return_values=["kind", "doubled"])
def describe(x):
    return type(x).__name__, x * 2


@PipelineDecorator.pipeline(name="numpy-args", project=PROJECT)
def numpy_args_pipeline():
    out = {}
    for value in (np.int64(3), np.float32(1.5), np.float64(2.25), np.bool_(True)):
        kind, doubled = describe(value)
        out[type(value).__name__] = [str(kind), doubled]
    return out


@PipelineDecorator.component(return_values=["value"], continue_on_fail=True)
def fragile(x: int):
    if x < 0:
        raise ValueError("negative")
    return x


@PipelineDecorator.component(return_values=["got"])
def calls_fragile(x: int):
    return [fragile(x), fragile(-x)]


@PipelineDecorator.pipeline(name="nested-continue", project=PROJECT)
def nested_continue_pipeline(x: int = 4):
    return list(calls_fragile(x))


@PipelineDecorator.component(return_values=["where"], retry_on_failure=1)
def where_am_i(marker: str):
    """Fails on its first attempt; says which file the code that ran it came from."""
    import inspect

    here = inspect.currentframe()
    filename = here.f_code.co_filename if here is not None else ""
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("tried")
        raise RuntimeError("first attempt fails")
    return os.path.basename(filename)


@PipelineDecorator.pipeline(name="retry-where", project=PROJECT)
def retry_where_pipeline(marker: str):
    return str(where_am_i(marker))
