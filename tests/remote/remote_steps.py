"""Step functions and components for ``test_remote_pipelines.py``.

Every step runs on a ``stepline agent`` (a process of its own, in an empty folder), from the
code stored on its task: this module's imports, the literal constants it reads, the same-module
helpers it calls and the function itself. So a step uses only its arguments, the standard
library and those helpers. Steps that must wait poll for marker files in a folder the test
passes them, with a deadline, and say they started by writing ``started-NAME`` there.
"""

from __future__ import annotations

import os
import time

from stepline.automation.controller import PipelineDecorator

PROJECT = "remote-tests"
HOLD = 60.0  # seconds a held step waits for the test to release it (or sleeps)


def _touch(path, text=""):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text or str(os.getpid()))
    os.replace(tmp, path)


def make_data(n):
    return {"values": list(range(n)), "n": n}


def total(data, scale):
    return sum(data["values"]) * scale


def describe(data, value):
    return f"{len(data['values'])}:{value}"


def where(tag):
    """Says which process ran it (and that it ran at all)."""
    return f"{tag}:{os.getpid()}"


def hold(folder, name):
    """Says it started, then waits until ``release`` appears (or it is killed)."""
    _touch(os.path.join(folder, "started-" + name))
    deadline = time.monotonic() + HOLD
    while not os.path.exists(os.path.join(folder, "release")):
        if time.monotonic() > deadline:
            raise TimeoutError("nobody released the step")
        time.sleep(0.01)
    return name


def sleep_long(folder):
    """Writes its pid to ``started-sleeper`` and sleeps far longer than any test runs."""
    _touch(os.path.join(folder, "started-sleeper"))
    time.sleep(HOLD)
    return "woke up"


def fail_once(folder):
    """Fails on the first attempt (it leaves ``failed-once`` with its pid), then succeeds."""
    marker = os.path.join(folder, "failed-once")
    if not os.path.exists(marker):
        _touch(marker)
        raise RuntimeError("the first attempt fails")
    return f"second attempt:{os.getpid()}"


# -- a decorator pipeline whose logic runs in the test process (pipeline_execution_queue=None) --
@PipelineDecorator.component(return_values=["data"])
def deco_make(n):
    return {"values": list(range(n)), "n": n}


@PipelineDecorator.component(return_values=["value"], execution_queue="cpu")
def deco_total(data, scale):
    return sum(data["values"]) * scale


@PipelineDecorator.pipeline(
    name="deco-here", project=PROJECT, version="1.0.0", pipeline_execution_queue=None
)
def logic_here(n=3):
    data = deco_make(n)
    value = deco_total(data, 100)
    return {"value": value, "size": len(data["values"])}
