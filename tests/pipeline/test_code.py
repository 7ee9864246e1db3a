"""The stored code of a function step (stepline/pipeline/code.py): the function without its
decorators, the module's imports (guarded), the literal constants and same-module helpers it
uses, and explicit helper functions; the result runs on its own."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import pytest

from stepline.core.errors import ValidationError
from stepline.pipeline.code import StepCode, build_step_code
from tests.pipeline import sample_steps as s

IMPORTS = ["import functools", "import json", "import math", "from collections import OrderedDict"]


def explicit_helper(x: int) -> int:
    """Given to ``calls_explicit_helper`` through ``helper_functions``."""
    return x * 10


def run_stored(code: StepCode) -> Callable[..., Any]:
    """Exec the stored source in a fresh namespace and return the step function from it."""
    compiled = compile(code.source, f"<step {code.function_name}>", "exec")
    namespace: dict[str, Any] = {"__name__": "stored_step"}
    exec(compiled, namespace)
    fn = namespace[code.function_name]
    assert fn.__module__ == "stored_step"
    return fn


def defined_functions(source: str) -> list[str]:
    return [
        ln.split("(")[0].removeprefix("def ") for ln in source.splitlines() if ln.startswith("def ")
    ]


# -- the function itself --------------------------------------------------------------------------
def test_step_code_fields() -> None:
    code = build_step_code(s.plain_step)
    sample_file = os.path.abspath(inspect.getsourcefile(s) or "")
    assert code.function_name == "plain_step"
    assert code.entry_point == sample_file
    assert code.module_dir == os.path.dirname(sample_file)
    assert [p.name for p in code.parameters] == ["x"]


def test_the_function_text_is_stored_verbatim() -> None:
    code = build_step_code(s.plain_step)
    assert code.source.endswith(inspect.getsource(s.plain_step))
    assert defined_functions(code.source) == ["plain_step"]


def test_stored_code_runs_in_a_fresh_namespace() -> None:
    fn = run_stored(build_step_code(s.plain_step))
    assert fn(2) == 6 == s.plain_step(2)


def test_deterministic() -> None:
    assert build_step_code(s.chained_step).source == build_step_code(s.chained_step).source


# -- imports --------------------------------------------------------------------------------------
@pytest.mark.parametrize("statement", IMPORTS)
def test_module_imports_are_guarded(statement: str) -> None:
    code = build_step_code(s.plain_step)
    assert f"try:\n    {statement}\nexcept Exception:\n    pass\n" in code.source


def test_future_import_comes_first_and_unguarded() -> None:
    code = build_step_code(s.plain_step)
    assert code.source.startswith("from __future__ import annotations\n")
    assert code.source.count("__future__") == 1


def test_imports_are_usable_by_the_stored_function() -> None:
    fn = run_stored(build_step_code(s.imports_step))
    assert fn({"b": 2, "a": 1}) == '{"a": 1, "b": 2}2' == s.imports_step({"b": 2, "a": 1})


def test_a_missing_optional_package_does_not_stop_the_import() -> None:
    code = build_step_code(s.plain_step)
    broken = code.source.replace("import json", "import not_installed_anywhere_xyz")
    assert broken != code.source
    namespace: dict[str, Any] = {}
    exec(compile(broken, "<broken>", "exec"), namespace)
    assert namespace["plain_step"](1) == 3


def test_skip_global_imports() -> None:
    code = build_step_code(s.plain_step, skip_global_imports=True)
    for statement in IMPORTS:
        assert statement not in code.source
    assert run_stored(code)(1) == 3


# -- constants ------------------------------------------------------------------------------------
def test_only_the_literal_constants_read_are_copied() -> None:
    code = build_step_code(s.plain_step)
    assert "SCALE = 3\n" in code.source
    for name in ("UNUSED_CONSTANT", "LOOKUP", "OFFSET", "GREETING", "NOT_A_LITERAL", "REGISTRY"):
        assert name not in code.source, name


def test_annotated_constant_is_copied() -> None:
    code = build_step_code(s.registered_step)
    assert 'GREETING: str = "hello"' in code.source


def test_non_literal_constants_are_not_copied() -> None:
    def uses_non_literal() -> float:
        return s.NOT_A_LITERAL

    code = build_step_code(uses_non_literal)
    assert "math.sqrt" not in code.source


def test_constants_read_by_a_nested_function_are_copied() -> None:
    code = build_step_code(s.nested_closure_step)
    assert "SCALE = 3\n" in code.source
    assert run_stored(code)([1, 2]) == [3, 6]


def test_constant_used_as_a_default_argument_is_copied() -> None:
    # ``factor=SCALE`` is evaluated when the stored module defines the function
    code = build_step_code(s.default_from_constant)
    assert "SCALE = 3\n" in code.source
    assert run_stored(code)(2) == 6 == s.default_from_constant(2)


# -- helpers --------------------------------------------------------------------------------------
def test_helper_chain_is_copied_transitively() -> None:
    code = build_step_code(s.chained_step)
    assert sorted(defined_functions(code.source)) == [
        "chained_step",
        "leaf_helper",
        "middle_helper",
    ]
    assert code.source.rstrip().endswith('return middle_helper(x) + LOOKUP["b"]')
    for constant in ('LOOKUP = {"a": 1, "b": 2}', "OFFSET = 7"):
        assert constant in code.source
    assert "unrelated_helper" not in code.source
    assert "SCALE" not in code.source


def test_helper_chain_runs() -> None:
    fn = run_stored(build_step_code(s.chained_step))
    assert fn(1) == s.chained_step(1) == (1 + 7) * 2 + 2


def test_exclude_keeps_a_helper_and_its_own_helpers_out() -> None:
    code = build_step_code(s.chained_step, exclude=lambda f: f.__name__ == "middle_helper")
    assert defined_functions(code.source) == ["chained_step"]


def test_explicit_helper_functions_are_copied() -> None:
    code = build_step_code(s.calls_explicit_helper, helper_functions=[explicit_helper])
    assert "def explicit_helper(x: int) -> int:" in code.source
    assert run_stored(code)(2) == 21


def test_without_the_explicit_helper_the_step_fails() -> None:
    fn = run_stored(build_step_code(s.calls_explicit_helper))
    with pytest.raises(NameError, match="explicit_helper"):
        fn(2)


def test_an_explicit_helper_listed_twice_is_copied_once() -> None:
    code = build_step_code(s.chained_step, helper_functions=[s.leaf_helper, s.leaf_helper])
    assert defined_functions(code.source).count("leaf_helper") == 1


# -- decorators -----------------------------------------------------------------------------------
def test_decorator_is_dropped() -> None:
    assert s.REGISTRY.count("registered_step") == 1
    code = build_step_code(s.registered_step)
    assert "@register" not in code.source
    assert "def register(" not in code.source
    assert run_stored(code)("bob") == "hello, bob"


def test_wrapping_decorator_is_dropped() -> None:
    code = build_step_code(s.wrapped_step)
    assert "@logged" not in code.source
    assert "def wrapped_step(x):" in code.source
    assert "def logged(" not in code.source and "def wrapper(" not in code.source


def test_function_under_a_wrapping_decorator_runs() -> None:
    # the stored code holds the undecorated function, so it needs the constants *it* reads
    code = build_step_code(s.wrapped_step)
    assert run_stored(code)(2) == 6 == s.wrapped_step(2)


# -- refused --------------------------------------------------------------------------------------
def test_lambda_is_refused() -> None:
    with pytest.raises(ValidationError, match="cannot be a lambda"):
        build_step_code(lambda x: x)


@pytest.mark.parametrize(
    "obj", [len, "plain_step", 3, type("C", (), {"__call__": lambda self: 1})()]
)
def test_non_functions_are_refused(obj: Any) -> None:
    with pytest.raises(ValidationError, match="needs a Python function"):
        build_step_code(obj)


def test_function_without_a_source_file_is_refused() -> None:
    namespace: dict[str, Any] = {}
    exec(compile("def typed_in(x):\n    return x\n", "<stdin>", "exec"), namespace)
    with pytest.raises(ValidationError, match="cannot read the source"):
        build_step_code(namespace["typed_in"])


def test_a_local_function_is_dedented() -> None:
    def local_step(x: int) -> int:
        total = 0
        for _ in range(x):
            total += 1
        return total

    code = build_step_code(local_step)
    assert "\ndef local_step(x: int) -> int:\n" in code.source
    assert run_stored(code)(4) == 4
