"""The ``${...}`` references between a pipeline's steps.

A reference names a value that exists only once an earlier step has run:

===================================  ==========================================================
``${pipeline.NAME}``                 the pipeline argument ``NAME`` (section ``Args``)
``${STEP.id}``                       the id of the task that ran ``STEP``
``${STEP.artifacts.NAME.FIELD}``     FIELD of artifact NAME: url, hash, size, type, preview,
                                     name (a ``\\.`` in NAME is a literal dot)
``${STEP.parameters.Section/key}``   a parameter of the step's task
``${STEP.models.output.INDEX.FIELD}``  FIELD (url, name, id) of an output (or input) model;
                                     INDEX counts from 0, -1 is the last
``${STEP.RETURN}``                   a return value of a function step (in ``function_kwargs``)
===================================  ==========================================================

Parsing is pure and happens when a step is added, so a malformed reference is reported then,
naming the step and the text, not halfway through a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from stepline.core.errors import ValidationError

_REF = re.compile(r"\$\{([^{}]*)\}")
_DOT = re.compile(r"(?<!\\)\.")
ARTIFACT_FIELDS = ("url", "hash", "size", "type", "preview", "name")
MODEL_FIELDS = ("url", "name", "id")
PIPELINE = "pipeline"


@dataclass(frozen=True)
class Ref:
    """One parsed reference."""

    text: str  #: as written, with ``${`` and ``}``
    step: str  #: the step name, or ``pipeline``
    kind: str  #: pipeline | id | artifact | parameter | model | return
    name: str = ""  #: argument, artifact, parameter key ("Section/key") or return name
    field: str = ""  #: artifact or model field
    index: int = -1  #: model index
    mode: str = "output"  #: model mode


def _error(where: str, text: str, why: str) -> ValidationError:
    return ValidationError(f"{where}: reference {text!r} {why}")


def parse_ref(body: str, where: str) -> Ref:
    """Parse the inside of ``${...}``; ``where`` names the step and field for errors."""
    text = "${" + body + "}"
    parts = [p.replace("\\.", ".") for p in _DOT.split(body.strip())]
    if not body.strip() or any(not p for p in parts):
        raise _error(
            where,
            text,
            "is malformed; write e.g. ${step_name.id}, ${step_name.artifacts.data.url} "
            "or ${pipeline.argument}",
        )
    step, rest = parts[0], parts[1:]
    if step == PIPELINE:
        if len(rest) != 1:
            raise _error(where, text, "must name one pipeline argument: ${pipeline.NAME}")
        return Ref(text, step, "pipeline", rest[0])
    if not rest:
        raise _error(
            where, text, "names a step but not what of it (add .id, .artifacts.NAME.url, ...)"
        )
    head = rest[0]
    if head == "id" and len(rest) == 1:
        return Ref(text, step, "id")
    if head == "artifacts":
        if len(rest) != 3 or rest[2] not in ARTIFACT_FIELDS:
            raise _error(
                where,
                text,
                "must be ${STEP.artifacts.NAME.FIELD} with FIELD one of "
                + ", ".join(ARTIFACT_FIELDS),
            )
        return Ref(text, step, "artifact", rest[1], rest[2])
    if head == "parameters":
        key = ".".join(rest[1:])
        if not key or "/" not in key:
            raise _error(where, text, "must name a parameter as Section/key, e.g. General/lr")
        return Ref(text, step, "parameter", key)
    if head == "models":
        if len(rest) != 4 or rest[1] not in ("output", "input") or rest[3] not in MODEL_FIELDS:
            raise _error(
                where,
                text,
                "must be ${STEP.models.output.INDEX.FIELD} with FIELD one of "
                + ", ".join(MODEL_FIELDS),
            )
        try:
            index = int(rest[2])
        except ValueError:
            raise _error(where, text, f"has a model index {rest[2]!r} that is not an integer")
        return Ref(text, step, "model", field=rest[3], index=index, mode=rest[1])
    if len(rest) == 1:
        return Ref(text, step, "return", head)
    raise _error(
        where,
        text,
        "is not understood; use .id, .artifacts.NAME.FIELD, .parameters.Section/key, "
        ".models.output.INDEX.FIELD or a function step's return name",
    )


def find_refs(value: Any, where: str) -> list[Ref]:
    """Every reference in ``value`` (strings, and strings inside lists, tuples and dicts)."""
    return list(_walk(value, where))


def _walk(value: Any, where: str) -> Iterator[Ref]:
    if isinstance(value, str):
        if "${" not in value:
            return
        for m in _REF.finditer(value):
            yield parse_ref(m.group(1), where)
        rest = _REF.sub("", value)
        if "${" in rest:
            raise _error(where, value, "has a '${' without its closing '}'")
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk(v, where)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk(v, where)


def substitute(value: Any, resolve: Callable[[Ref], Any], where: str) -> Any:
    """``value`` with its references replaced by ``resolve(ref)``. A string that is exactly
    one reference becomes the resolved value itself (keeping its type); references inside
    longer strings are replaced by their text."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        whole = _REF.fullmatch(value.strip())
        if whole:
            return resolve(parse_ref(whole.group(1), where))
        return _REF.sub(lambda m: str(resolve(parse_ref(m.group(1), where))), value)
    if isinstance(value, dict):
        return {k: substitute(v, resolve, where) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, resolve, where) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, resolve, where) for v in value)
    return value
