"""The stored code of a function step.

A function step must run in a fresh process and, later, on another machine, so its task stores
a small module: the defining module's top-level imports (each guarded, so a missing optional
package does not stop the step before it is needed), the module-level constants the function
reads, the helper functions it calls (found by name, transitively, plus any given as
``helper_functions``), and the function itself without its decorators.

Users of the reference system often hit "name is not defined" in steps because only the
function's own text travels; picking up constants and same-module helpers removes most of that.
"""

from __future__ import annotations

import ast
import dis
import inspect
import os
import textwrap
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from stepline.core.errors import ValidationError


@dataclass
class StepCode:
    source: str
    function_name: str
    module_dir: str
    entry_point: str
    parameters: list[inspect.Parameter]


def _def_source(fn: Callable[..., Any]) -> str:
    """The function's text from ``def`` to its end, without decorators, dedented."""
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise ValidationError(
            f"cannot read the source of {getattr(fn, '__qualname__', fn)!r} ({exc}); a step "
            "function must be defined in a file (not typed into an interactive prompt)"
        )
    tree = ast.parse(text)
    node = tree.body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ValidationError(f"{fn!r} is not a plain function defined with 'def'")
    lines = text.splitlines()
    return "\n".join(lines[node.lineno - 1 : node.end_lineno]) + "\n"


_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})


def _names_used(code: types.CodeType) -> set[str]:
    """The global names the code (and the functions, lambdas and comprehensions inside it)
    reads; attribute names (``model.train``) are not among them."""
    names = {str(ins.argval) for ins in dis.get_instructions(code) if ins.opname in _GLOBAL_LOADS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_used(const)
    return names


def _default_names(fn: Callable[..., Any]) -> set[str]:
    """Names read by the default values of ``fn``'s arguments (evaluated where it is defined,
    so the stored module must define them too)."""
    try:
        node = ast.parse(_def_source(fn)).body[0]
    except (SyntaxError, ValidationError, IndexError):
        return set()
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return set()
    exprs = [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
    return {n.id for e in exprs for n in ast.walk(e) if isinstance(n, ast.Name)}


_parsed: dict[tuple[str, str], tuple[list[str], dict[str, str], bool]] = {}


def _module_parts(
    module: types.ModuleType | None,
) -> tuple[list[str], dict[str, str], bool]:
    """(guarded import blocks, {name: literal assignment source}, has future annotations).
    Parsed once per module text: a pipeline adds many steps from one module."""
    if module is None:
        return [], {}, False
    try:
        text = inspect.getsource(module)
    except (OSError, TypeError):
        return [], {}, False
    memo = (module.__name__, text)
    found = _parsed.get(memo)
    if found is None:
        found = _parse_module(text)
        _parsed[memo] = found
    return list(found[0]), dict(found[1]), found[2]


def _parse_module(text: str) -> tuple[list[str], dict[str, str], bool]:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return [], {}, False
    lines = text.splitlines(keepends=True)

    def segment(node: ast.stmt) -> str:
        if node.lineno == node.end_lineno:
            return lines[node.lineno - 1].encode()[node.col_offset : node.end_col_offset].decode()
        return ast.get_source_segment(text, node) or ""

    imports: list[str] = []
    constants: dict[str, str] = {}
    future = False
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            future = future or any(a.name == "annotations" for a in stmt.names)
            continue
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            if isinstance(stmt, ast.ImportFrom) and stmt.level:
                continue  # relative imports cannot work outside their package
            seg = segment(stmt)
            imports.append(f"try:\n    {seg}\nexcept Exception:\n    pass\n")
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if stmt.value is None or not all(isinstance(t, ast.Name) for t in targets):
                continue
            try:
                ast.literal_eval(stmt.value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            seg = segment(stmt)
            for t in targets:
                constants[t.id] = seg  # type: ignore[attr-defined]
    return imports, constants, future


def build_step_code(
    fn: Callable[..., Any],
    helper_functions: Iterable[Callable[..., Any]] = (),
    skip_global_imports: bool = False,
    exclude: Callable[[Any], bool] | None = None,
    extra: Callable[[str, Any], str | None] | None = None,
) -> StepCode:
    """The module text a function step stores and runs. ``exclude`` marks module functions
    that must not be copied in as helpers; ``extra(name, value)`` may return the code that
    defines a module global the function uses which is not a plain function (a pipeline
    component used inside another component is re-declared as a component)."""
    if callable(fn) and hasattr(fn, "__wrapped__"):
        fn = inspect.unwrap(fn)
    if not callable(fn) or not hasattr(fn, "__code__"):
        raise ValidationError(f"a function step needs a Python function, got {fn!r}")
    if fn.__name__ == "<lambda>":
        raise ValidationError("a function step cannot be a lambda; define it with 'def'")
    module = inspect.getmodule(fn)
    imports, constants, future = _module_parts(module)
    module_globals = getattr(fn, "__globals__", {})
    helpers: dict[str, str] = {}
    extras: dict[str, str] = {}
    used_constants: dict[str, str] = {}
    explicit = list(helper_functions or [])
    todo: list[Callable[..., Any]] = [fn, *explicit]
    seen: set[int] = set()
    while todo:
        f = todo.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        code = getattr(f, "__code__", None)
        if code is None:
            continue
        if f is not fn:
            helpers.setdefault(f.__name__, _def_source(f))
        for name in _names_used(code) | _default_names(f):
            if name in constants:
                used_constants[name] = constants[name]
            value = module_globals.get(name)
            if (
                isinstance(value, types.FunctionType)
                and value is not fn
                and value.__module__ == fn.__module__
                and value.__name__ == name
                and not (exclude and exclude(value))
            ):
                todo.append(value)
            elif (
                extra is not None
                and value is not None
                and name not in extras
                and not isinstance(value, (types.ModuleType, types.FunctionType, type))
            ):
                text = extra(name, value)
                if text is not None:
                    extras[name] = text
    parts: list[str] = []
    if future:
        parts.append("from __future__ import annotations\n")
    if not skip_global_imports:
        parts.extend(imports)
    parts.extend(dict.fromkeys(used_constants.values()))
    parts.extend(helpers[name] for name in sorted(helpers))
    parts.extend(extras[name] for name in sorted(extras))
    parts.append(_def_source(fn))
    source = "\n".join(parts)
    try:
        compile(source, f"<step {fn.__name__}>", "exec")
    except SyntaxError as exc:
        raise ValidationError(f"the stored code of step function {fn.__name__!r}: {exc}")
    src_file = inspect.getsourcefile(fn) or ""
    return StepCode(
        source=source,
        function_name=fn.__name__,
        module_dir=os.path.dirname(os.path.abspath(src_file)) if src_file else "",
        entry_point=os.path.abspath(src_file) if src_file else "",
        parameters=list(inspect.signature(fn).parameters.values()),
    )
