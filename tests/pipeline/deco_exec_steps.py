"""Components and pipeline functions for tests/pipeline/test_decorator_exec.py.

Components live at module level: in local mode a component's source (plus this module's
imports, the literal constants it reads and the same-module helpers it calls) is stored and run
in a forked child, so a component may use only its arguments, imports, literal constants and
helpers. Steps that must overlap or wait poll for marker files in a folder passed to them as an
argument, with a deadline, so every test waits for an event, never for a sleep.

The pipeline functions take a ``seen`` dict that the logic fills in with what it observed
(proxies' types, values, the running pipeline); the tests read it after the run, even when the
run raised.
"""

from __future__ import annotations

import os
import time

from stepline.automation.controller import PipelineDecorator
from stepline.pipeline.decorator import LazyResult, StepFailedError

PROJECT = "deco-exec-tests"
WAIT = 20.0  # seconds a step waits for a marker before giving up
HOLD = 90.0  # seconds a held step waits for the test to release it


# -- helpers (copied into the stored code of the components that call them) ------------------
def _wait_for(path, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.005)


def _touch(path, text=""):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text or str(os.getpid()))
    os.replace(tmp, path)


def touch_marker(path):
    """Used by the pipeline logic (not a component)."""
    _touch(path)


# -- callbacks (run by the controller, in the test process) ----------------------------------
def never(pipeline, node, params):
    return False


# -- components ------------------------------------------------------------------------------
@PipelineDecorator.component(return_values=["who"])
def rendezvous(folder, me, other):
    """Records its start and end times; succeeds only if ``other`` runs at the same time."""
    _touch(os.path.join(folder, "start-" + me), repr(time.time()))
    _wait_for(os.path.join(folder, "start-" + other), WAIT)
    _touch(os.path.join(folder, "end-" + me), repr(time.time()))
    return me


@PipelineDecorator.component(return_values=["value"])
def wait_then_return(folder, marker, value):
    """Returns ``value`` once the marker file exists (written by the logic after the call)."""
    _wait_for(os.path.join(folder, marker), WAIT)
    _touch(os.path.join(folder, "ended-" + marker), repr(time.time()))
    return value


@PipelineDecorator.component(return_values=["number"])
def make_number(x):
    return x


@PipelineDecorator.component(return_values=["items"])
def make_list(n):
    return list(range(n))


@PipelineDecorator.component(return_values=["mapping"])
def make_dict(key, value):
    return {key: value}


@PipelineDecorator.component(return_values=["text"])
def make_text(text):
    return text


@PipelineDecorator.component(return_values=["low", "high"])
def split(x):
    return x - 1, x + 1


@PipelineDecorator.component(return_values=["number"])
def increment(x):
    if not isinstance(x, int) or isinstance(x, bool):
        raise TypeError(f"x arrived as {type(x).__name__}: {x!r}")
    return x + 1


@PipelineDecorator.component(return_values=["number"])
def square(x):
    return x * x


@PipelineDecorator.component(return_values=["total"])
def add(a, b):
    return a + b


@PipelineDecorator.component(return_values=["total"])
def total(values):
    return sum(values)


@PipelineDecorator.component(return_values=["value"])
def one(i):
    return i


@PipelineDecorator.component(return_values=["value"])
def boom(message):
    raise ValueError(message)


@PipelineDecorator.component(return_values=["value"], continue_on_fail=True)
def tolerated_boom(message):
    raise ValueError(message)


@PipelineDecorator.component(return_values=["name"])
def hold(folder, name):
    """Says it started, then waits until the test releases it (or it is killed)."""
    _touch(os.path.join(folder, "started-" + name))
    _wait_for(os.path.join(folder, "release"), HOLD)
    return name


@PipelineDecorator.component(return_values=["value"])
def fail_after_started(folder, other, message):
    """Fails once the step named ``other`` (a ``hold`` step) is running."""
    _wait_for(os.path.join(folder, "started-" + other), WAIT)
    raise RuntimeError(message)


@PipelineDecorator.component(return_values=["result"], retry_on_failure=1)
def fail_once(folder):
    marker = os.path.join(folder, "failed-once")
    if not os.path.exists(marker):
        _touch(marker)
        raise RuntimeError("the first attempt fails")
    return "second attempt"


@PipelineDecorator.component(return_values=["value"], pre_execute_callback=never)
def never_runs(x):
    return x


@PipelineDecorator.component(return_values=["number"])
def square_plus_one(x):
    """Calls another component: ``square`` runs as a nested step."""
    return square(x) + 1


# -- pipelines -------------------------------------------------------------------------------
@PipelineDecorator.pipeline(name="parallel", project=PROJECT, version="1.0", max_workers=2)
def parallel_logic(folder, seen):
    left = rendezvous(folder, "left", "right")
    right = rendezvous(folder, "right", "left")
    seen["who"] = [str(left), str(right)]


@PipelineDecorator.pipeline(
    name="lazy", project=PROJECT, version="1.0", return_value="result", max_workers=2
)
def lazy_logic(folder, seen):
    waiting = wait_then_return(folder, "go", 7)
    seen["proxy_type"] = type(waiting)
    seen["returned_before_end"] = not os.path.exists(os.path.join(folder, "ended-go"))
    touch_marker(os.path.join(folder, "go"))
    seen["ops"] = {
        "add": waiting + 1,
        "radd": 1 + waiting,
        "mul": waiting * 2,
        "sub": 10 - waiting,
        "truediv": waiting / 2,
        "neg": -waiting,
        "eq": waiting == 7,
        "ne": waiting != 7,
        "lt": waiting < 8,
        "bool": bool(waiting),
        "str": str(waiting),
        "format": f"<{waiting:03d}>",
        "int": int(waiting),
        "isinstance_int": isinstance(waiting, int),
        "isinstance_str": isinstance(waiting, str),
    }
    items = make_list(4)
    mapping = make_dict("k", "v")
    text = make_text("hello")
    zero = make_number(0)
    low, high = split(10)
    seen["pair_types"] = [type(low), type(high)]
    seen["ops"].update(
        {
            "iter": list(items),
            "index": items[2],
            "slice": items[1:3],
            "len": len(items),
            "contains": 3 in items,
            "getitem_key": mapping["k"],
            "method": text.upper(),
            "isinstance_list": isinstance(items, list),
            "isinstance_dict": isinstance(mapping, dict),
            "bool_zero": bool(zero),
            "low": low + 0,
            "high": high + 0,
        }
    )
    # proxies passed on: dependencies, no value loaded here
    return add(low, high)


@PipelineDecorator.pipeline(name="step-fails", project=PROJECT, version="1.0")
def failing_value_used_logic(seen):
    bad = boom("kaboom-1234")
    seen["reached"] = True
    return bad + 1


@PipelineDecorator.pipeline(name="step-fails-caught", project=PROJECT, version="1.0")
def failing_value_caught_logic(seen):
    bad = boom("kaboom-4321")
    try:
        seen["value"] = bad + 1
    except StepFailedError as exc:
        seen["error"] = exc
    child = increment(bad)
    seen["child"] = child == None  # noqa: E711 (the proxy compares its value)
    seen["child_value"] = child._get()
    other = make_number(5)
    seen["other"] = other + 0
    return "done"


@PipelineDecorator.pipeline(
    name="tolerated", project=PROJECT, version="1.0", return_value="result"
)
def tolerated_logic(seen):
    bad = tolerated_boom("tolerated-99")
    seen["bad_is_none"] = bad == None  # noqa: E711
    good = make_number(3)
    return [bad, good]


@PipelineDecorator.pipeline(
    name="abort", project=PROJECT, version="1.0", abort_on_failure=True, max_workers=2
)
def abort_logic(folder, seen):
    slow = hold(folder, "slow")
    fail_after_started(folder, "slow", "fatal-5678")
    after = increment(slow)
    seen["names"] = ["hold", "fail_after_started", "increment"]
    return after


@PipelineDecorator.pipeline(name="logic-raises", project=PROJECT, version="1.0")
def raising_logic(seen):
    x = increment(1)
    if x == 2:
        seen["x"] = int(x)
        raise KeyError("logic-says-no")
    return x


@PipelineDecorator.pipeline(name="unused-failure", project=PROJECT, version="1.0")
def unused_failure_logic(seen):
    boom("nobody-looks-9")
    seen["returned"] = True
    return 1


@PipelineDecorator.pipeline(
    name="loops", project=PROJECT, version="1.0", return_value="result", max_workers=2
)
def loop_logic(n, seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    results = []
    for i in range(n):
        v = increment(i)
        if v % 2 == 0:
            results.append(square(v))
        else:
            results.append(v)
    seen["dag_during_run"] = sorted(seen["pipeline"].get_pipeline_dag())
    return total(results)


@PipelineDecorator.pipeline(name="nesting", project=PROJECT, version="1.0", return_value="result")
def nesting_logic(x, seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    return square_plus_one(x) * 1


@PipelineDecorator.pipeline(
    name="inner", project=PROJECT, version="1.0", return_value="inner_result"
)
def inner_logic(x):
    return increment(x) * 10


@PipelineDecorator.pipeline(name="outer", project=PROJECT, version="1.0", return_value="result")
def outer_logic(x, seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    start = make_number(x)
    inner = inner_logic(start)
    final = increment(inner)
    return final + 0


@PipelineDecorator.pipeline(
    name="thousand", project=PROJECT, version="1.0", return_value="result", max_workers=2
)
def thousand_logic(n):
    values = [one(i) for i in range(n)]
    return total(values) + 0


@PipelineDecorator.pipeline(name="retry", project=PROJECT, version="1.0", return_value="result")
def retry_logic(folder):
    return fail_once(folder) + ""


@PipelineDecorator.pipeline(name="callbacks", project=PROJECT, version="1.0", return_value="result")
def callback_logic(seen):
    skipped = never_runs(5)
    child = increment(skipped)
    other = make_number(2)
    seen["skipped_is_none"] = skipped == None  # noqa: E711
    seen["child_is_none"] = child == None  # noqa: E711
    return [skipped, child, other]


__all__ = ["LazyResult"]
