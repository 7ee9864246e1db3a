"""Components and pipeline functions for tests/pipeline/test_decorator_exec.py.

Components live at module level: in local mode a component's source (plus this module's
imports, the literal constants it reads and the same-module helpers it calls) is stored and run
in a forked child, so a component uses only its arguments, imports, literal constants and
helpers. Steps that must overlap or wait poll for marker files in a folder passed to them as an
argument, with a deadline, so every test waits for an event, never for a sleep.

Most pipeline functions take a ``seen`` dict that the logic fills in with what it observed
(proxies' types and values, the running pipeline); the tests read it after the run, even when
the run raised.
"""

from __future__ import annotations

import os
import threading
import time

from stepline.automation.controller import PipelineDecorator
from stepline.pipeline.decorator import StepFailedError

PROJECT = "deco-exec-tests"
WAIT = 20.0  # seconds a step (or the logic) waits for a marker before giving up
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


# -- callbacks and rules (run by the controller, in the test process) ------------------------
def never(pipeline, node, params):
    """pre_execute_callback: do not run the step."""
    return False


class GatedRule:
    """A ``retry_on_failure`` rule that never retries. ``isinstance(rule, int)`` reads its
    ``__class__``: when the pipeline's DAG writer thread does so (while it turns the DAG into
    JSON), the rule holds that thread until ``release`` is set, so a test can add a step while
    the writer is in the middle of the DAG."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.held_thread = ""

    def __call__(self, pipeline, node, retries):
        return False

    @property  # type: ignore[misc]
    def __class__(self):
        if not self.release.is_set() and not self.entered.is_set():
            self.held_thread = threading.current_thread().name
            self.entered.set()
            self.release.wait(WAIT)
        return GatedRule


gated_rule = GatedRule()


# -- components ------------------------------------------------------------------------------
@PipelineDecorator.component(return_values=["who"])
def rendezvous(folder, me, other):
    """Records its start and end times (and pid); succeeds only if ``other`` runs meanwhile."""
    _touch(os.path.join(folder, "start-" + me), f"{time.time()!r} {os.getpid()}")
    _wait_for(os.path.join(folder, "start-" + other), WAIT)
    _touch(os.path.join(folder, "end-" + me), f"{time.time()!r} {os.getpid()}")
    return me


@PipelineDecorator.component(return_values=["value"])
def wait_then_return(folder, marker, value):
    """Returns ``value`` once the marker file exists (the logic writes it after the call)."""
    _touch(os.path.join(folder, "started-" + marker))
    _wait_for(os.path.join(folder, marker), WAIT)
    _touch(os.path.join(folder, "ended-" + marker))
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


@PipelineDecorator.component(return_values=["number"], name="increment_1")
def increment_by_100(x):
    """Named like the second call of ``increment``."""
    return x + 100


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


@PipelineDecorator.component(
    return_values=["value"],
    continue_behaviour={"continue_on_fail": True, "skip_children_on_fail": False},
)
def boom_but_run_children(message):
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


@PipelineDecorator.component(return_values=["number"])
def sum_of_squares(a, b):
    """Calls the same component twice: two nested steps."""
    return square(a) + square(b)


@PipelineDecorator.component(return_values=["number"], retry_on_failure=1)
def nests_then_fails_once(folder, x):
    """Calls ``square`` as a nested step, then fails on its first attempt."""
    y = square(x)
    marker = os.path.join(folder, "nested-failed-once")
    if not os.path.exists(marker):
        _touch(marker)
        raise RuntimeError("the first attempt fails after its nested step")
    return y


@PipelineDecorator.component(return_values=["number"], retry_on_failure=gated_rule)
def gated_number(x):
    return x


# -- pipelines -------------------------------------------------------------------------------
@PipelineDecorator.pipeline(name="parallel", project=PROJECT, version="1.0", max_workers=2)
def parallel_logic(folder, seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    left = rendezvous(folder, "left", "right")
    right = rendezvous(folder, "right", "left")
    seen["who"] = [str(left), str(right)]


@PipelineDecorator.pipeline(
    name="lazy", project=PROJECT, version="1.0", return_value="result", max_workers=2
)
def lazy_logic(folder, seen):
    waiting = wait_then_return(folder, "go", 7)
    # the call returned: the step is still waiting for the marker only this code writes
    seen["proxy_type"] = type(waiting)
    seen["step_ended_at_return"] = os.path.exists(os.path.join(folder, "ended-go"))
    _wait_for(os.path.join(folder, "started-go"), WAIT)
    seen["step_running_at_return"] = not os.path.exists(os.path.join(folder, "ended-go"))
    _touch(os.path.join(folder, "go"))
    return waiting + 1


@PipelineDecorator.pipeline(
    name="operators", project=PROJECT, version="1.0", return_value="result", max_workers=2
)
def operators_logic(seen):
    seven = make_number(7)
    items = make_list(4)
    mapping = make_dict("k", "v")
    text = make_text("hello")
    zero = make_number(0)
    low, high = split(10)
    seen["types"] = [type(p).__name__ for p in (seven, items, low, high)]
    seen["ops"] = {
        "add": seven + 1,
        "radd": 1 + seven,
        "mul": seven * 2,
        "rsub": 10 - seven,
        "truediv": seven / 2,
        "floordiv": seven // 2,
        "mod": seven % 4,
        "pow": seven**2,
        "neg": -seven,
        "abs": abs(-seven),
        "eq": seven == 7,
        "ne": seven != 7,
        "lt": seven < 8,
        "ge": seven >= 8,
        "bool": bool(seven),
        "bool_zero": bool(zero),
        "not_zero": not zero,
        "str": str(seven),
        "repr": repr(text),
        "format": f"<{seven:03d}>",
        "int": int(seven),
        "float": float(seven),
        "index": [10, 20, 30, 40, 50, 60, 70, 80][seven],
        "isinstance_int": isinstance(seven, int),
        "isinstance_str": isinstance(seven, str),
        "iter": list(items),
        "getitem": items[2],
        "slice": items[1:3],
        "len": len(items),
        "contains": 3 in items,
        "not_contains": 9 in items,
        "key": mapping["k"],
        "method": text.upper(),
        "isinstance_list": isinstance(items, list),
        "isinstance_dict": isinstance(mapping, dict),
        "low": low + 0,
        "high": high + 0,
    }
    # proxies passed on to another step: dependencies, loaded by that step
    return add(low, high)


@PipelineDecorator.pipeline(name="step-fails", project=PROJECT, version="1.0")
def failing_value_used_logic(seen):
    bad = boom("kaboom-1234")
    seen["call_returned"] = True
    return bad + 1


@PipelineDecorator.pipeline(name="step-fails-caught", project=PROJECT, version="1.0")
def failing_value_caught_logic(seen):
    bad = boom("kaboom-4321")
    try:
        seen["value"] = bad + 1
    except StepFailedError as exc:
        seen["error"] = exc
    child = increment(bad)
    seen["child_is_none"] = child == None  # noqa: E711 (the proxy compares its value)
    seen["child_str"] = str(child)
    other = make_number(5)
    seen["other"] = other + 0
    return "logic done"


@PipelineDecorator.pipeline(name="tolerated", project=PROJECT, version="1.0", return_value="result")
def tolerated_logic(seen):
    bad = tolerated_boom("tolerated-99")
    child = increment(bad)
    seen["bad_is_none"] = bad == None  # noqa: E711
    seen["bad_str"] = str(bad)
    good = make_number(3)
    return [bad, child, good]


@PipelineDecorator.pipeline(
    name="run-children", project=PROJECT, version="1.0", return_value="result"
)
def run_children_logic(seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    bad = boom_but_run_children("soft-77")
    child = make_number(bad)
    return [bad, child]


@PipelineDecorator.pipeline(
    name="abort", project=PROJECT, version="1.0", abort_on_failure=True, max_workers=2
)
def abort_logic(folder, seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    slow = hold(folder, "slow")
    fail_after_started(folder, "slow", "fatal-5678")
    increment(slow)
    seen["logic_returned"] = True


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
    seen["logic_returned"] = True
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
    return total(results)


@PipelineDecorator.pipeline(name="names", project=PROJECT, version="1.0", return_value="result")
def names_logic(seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    first = [increment(i) for i in range(2)]
    named = increment_by_100(1)
    last = increment(10)
    return [*first, named, last]


@PipelineDecorator.pipeline(name="nesting", project=PROJECT, version="1.0", return_value="result")
def nesting_logic(x, seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    first = square_plus_one(x)
    second = square_plus_one(x + 1)
    both = sum_of_squares(x, x + 1)
    return [first, second, both]


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
    name="thousand", project=PROJECT, version="1.0", return_value="result", max_workers=16
)
def thousand_logic(n, seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    values = [one(i) for i in range(n)]
    return total(values)


@PipelineDecorator.pipeline(name="retry", project=PROJECT, version="1.0", return_value="result")
def retry_logic(folder, seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    return fail_once(folder)


@PipelineDecorator.pipeline(name="callbacks", project=PROJECT, version="1.0", return_value="result")
def callback_logic(seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    skipped = never_runs(5)
    child = increment(skipped)
    other = make_number(2)
    seen["skipped_is_none"] = skipped == None  # noqa: E711
    seen["child_is_none"] = child == None  # noqa: E711
    return [skipped, child, other]


# -- pipelines that show bugs (see the xfail tests) ------------------------------------------
@PipelineDecorator.pipeline(name="dag-at-once", project=PROJECT, version="1.0")
def dag_at_once_logic(seen):
    pipe = PipelineDecorator.get_current_pipeline()
    seen["in_dag_at_return"] = []
    for i in range(5):
        make_number(i)
        name = "make_number" if i == 0 else f"make_number_{i}"
        seen["in_dag_at_return"].append(name in pipe.get_pipeline_dag())
    deadline = time.monotonic() + WAIT
    while len(pipe.get_pipeline_dag()) < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    seen["in_dag_later"] = sorted(pipe.get_pipeline_dag())


@PipelineDecorator.pipeline(
    name="dag-writer", project=PROJECT, version="1.0", return_value="result"
)
def dag_writer_logic(seen):
    pipe = PipelineDecorator.get_current_pipeline()
    first = gated_number(1)
    # the DAG writer is now stopped in the middle of the DAG (see GatedRule)
    seen["writer_held"] = gated_rule.entered.wait(WAIT)
    second = make_number(2)
    deadline = time.monotonic() + WAIT
    while "make_number" not in pipe.get_pipeline_dag() and time.monotonic() < deadline:
        time.sleep(0.005)
    seen["added_while_held"] = "make_number" in pipe.get_pipeline_dag()
    gated_rule.release.set()
    return [first, second]


@PipelineDecorator.pipeline(
    name="nested-retry", project=PROJECT, version="1.0", return_value="result"
)
def nested_retry_logic(folder, seen):
    seen["pipeline"] = PipelineDecorator.get_current_pipeline()
    return nests_then_fails_once(folder, 3)
