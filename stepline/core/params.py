"""Parameter values: stored as text with their Python type, read back as that type.

Users of the reference system complain that parameters come back as strings. Here each
parameter keeps its type name beside its text, and reading it back casts to that type (or,
when code connects a default, to the default's type).
"""

from __future__ import annotations

import ast
import json
from typing import Any

from stepline.core.errors import ValidationError

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", ""}


_BASIC = (bool, int, float, str, type(None))


def is_basic(value: Any) -> bool:
    """A value that is stored as one parameter and read back as the same type: exactly a
    bool, int, float, str or None (not a subclass), or a numpy bool or number scalar."""
    kind = type(value)
    if kind in _BASIC:
        return True
    return _is_numpy_scalar(value)


def _is_numpy_scalar(value: Any) -> bool:
    if type(value).__module__ != "numpy" or getattr(value, "shape", None) != ():
        return False
    return getattr(getattr(value, "dtype", None), "kind", "") in ("b", "i", "u", "f")


def type_name(value: Any) -> str:
    if value is None:
        return "NoneType"
    return type(value).__name__


def encode(value: Any) -> tuple[str, str]:
    """(text, type name) for a Python value."""
    tname = type_name(value)
    if _is_numpy_scalar(value):
        return repr(value.item()), f"numpy.{tname}"
    if isinstance(value, str):
        return value, "str"
    if isinstance(value, bool):
        return ("True" if value else "False"), "bool"
    if isinstance(value, (int, float)):
        return repr(value), tname
    if value is None:
        return "", "NoneType"
    if isinstance(value, (list, tuple, dict)):
        try:
            return json.dumps(value), tname
        except (TypeError, ValueError):
            return repr(value), tname
    return str(value), tname


def decode(text: str, tname: str) -> Any:
    """The Python value of stored ``text`` whose type is ``tname``.

    Text that does not parse as its type is returned unchanged (a string), so a bad edit in
    the UI shows up as the string the user typed rather than vanishing.
    """
    if text is None:
        return None
    try:
        if tname == "str":
            return text
        if tname == "bool":
            return _to_bool(text)
        if tname == "int":
            return int(text)
        if tname == "float":
            return float(text)
        if tname == "NoneType":
            return None if text in ("", "None") else _literal(text)
        if tname in ("list", "tuple", "dict"):
            value = _literal(text)
            if tname == "tuple" and isinstance(value, list):
                value = tuple(value)
            return value
        if tname.startswith("numpy."):
            return _numpy_scalar(text, tname[len("numpy.") :])
    except (ValueError, SyntaxError, TypeError):
        return text
    return text


def cast_like(text: str, default: Any) -> Any:
    """Cast stored ``text`` to the type of the code's ``default`` value."""
    if default is None:
        return None if text in ("", "None") else _literal_or_text(text)
    if isinstance(default, str):
        return text
    tname = type_name(default)
    if tname in ("bool", "int", "float", "list", "tuple", "dict"):
        value = decode(text, tname)
        if isinstance(value, str) and tname != "str":
            raise ValidationError(
                f"parameter value {text!r} cannot be read as {tname} "
                f"(the type of its default {default!r}); fix the value in the store"
            )
        return value
    try:
        return type(default)(text)
    except Exception:
        return text


def _numpy_scalar(text: str, name: str) -> Any:
    import numpy

    kind = getattr(numpy, name, None)
    if not isinstance(kind, type) or not issubclass(kind, numpy.generic):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = float(text)  # nan, inf
    return kind(value)


def _to_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return ast.literal_eval(text)


def _literal_or_text(text: str) -> Any:
    try:
        return _literal(text)
    except (ValueError, SyntaxError):
        return text
