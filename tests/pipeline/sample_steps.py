"""Sample step functions for tests/pipeline/test_code.py (their source is read with inspect).

Kept small and deliberate: module-level imports, literal constants (used and unused), a chain of
same-module helpers, decorated functions and a function that needs an explicit helper.
"""

from __future__ import annotations

import functools
import json
import math
from collections import OrderedDict

SCALE = 3
GREETING: str = "hello"
UNUSED_CONSTANT = "never read by any step"
LOOKUP = {"a": 1, "b": 2}
NOT_A_LITERAL = math.sqrt(16)  # not a literal: never copied into stored code
OFFSET = 7
REGISTRY: list[str] = []


def register(fn):
    """A decorator that returns the function itself."""
    REGISTRY.append(fn.__name__)
    return fn


def logged(fn):
    """A decorator that wraps the function (functools.wraps)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def leaf_helper(x):
    return x + OFFSET


def middle_helper(x):
    return leaf_helper(x) * 2


def unrelated_helper():
    return "not called by any step"


def plain_step(x):
    return x * SCALE


def chained_step(x):
    return middle_helper(x) + LOOKUP["b"]


def imports_step(values):
    return json.dumps(OrderedDict(sorted(values.items()))) + str(math.floor(2.5))


@register
def registered_step(name):
    return f"{GREETING}, {name}"


@logged
def wrapped_step(x):
    return x * SCALE


def default_from_constant(x, factor=SCALE):
    return x * factor


def calls_explicit_helper(x):
    return explicit_helper(x) + 1  # noqa: F821  (given as helper_functions)


def nested_closure_step(values):
    def inner(v):
        return v * SCALE

    return [inner(v) for v in values]
