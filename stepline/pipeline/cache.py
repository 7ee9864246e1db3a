"""Step caching: when may a step reuse an earlier task's outputs?

A step is reused when everything that decides its outputs is the same as for a completed,
non-archived earlier task:

* **code** — a function step's stored source (its helper functions and the module's imports
  included), the local modules it imports and its return names, wherever its file is; a
  script step's repository, commit, entry point, script
  text and uncommitted diff;
* **parameters** — every parameter after ``${...}`` references are resolved, where an artifact
  passed in counts by its content hash (not its URL, which differs from run to run);
* **configuration objects**, **packages** and the **container image**.

``cache_parts`` reduces each of these to a hash, ``cache_key`` hashes the parts. Both are pure.
Each task records its key and its parts (runtime properties ``_cache_key`` and
``_cache_parts``), so ``explain_miss`` can say which part changed since the last run of a step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

#: Keys of a task's ``script`` section that decide what the code does.
CODE_KEYS = (
    "kind",
    "function",
    "source",
    "returns",
    "repository",
    "branch",
    "commit",
    "entry_point",
    "content",
    "diff",
    "modules",  #: the local modules the code imports: editing one invalidates the cache
)

PART_NAMES = ("code", "parameters", "configurations", "packages", "container")


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def cache_parts(
    script: Mapping[str, Any],
    parameters: Mapping[str, str],
    configurations: Mapping[str, str],
    packages: Sequence[str],
    container: str,
) -> dict[str, str]:
    """The hash of each thing that decides a step's outputs.

    ``parameters`` maps "Section/key" to the text the step receives, with artifact inputs
    already replaced by their content hash."""
    keys: tuple[str, ...] = CODE_KEYS
    if script.get("kind") == "function":  # where its file was does not change what it does
        keys = tuple(k for k in CODE_KEYS if k != "entry_point")
    code = {k: script[k] for k in keys if script.get(k) not in (None, "", {})}
    return {
        "code": _digest(code),
        "parameters": _digest(dict(parameters)),
        "configurations": _digest(dict(configurations)),
        "packages": _digest(sorted(str(p) for p in packages)),
        "container": _digest(container or ""),
    }


def cache_key(parts: Mapping[str, str]) -> str:
    """One key for all parts."""
    return _digest({k: parts.get(k, "") for k in PART_NAMES})


def explain_miss(parts: Mapping[str, str], previous: Mapping[str, str] | None) -> str:
    """Why a step with ``parts`` did not reuse the step run before with ``previous`` parts."""
    if not previous:
        return "no earlier run of this step"
    changed = [k for k in PART_NAMES if parts.get(k) != previous.get(k)]
    if not changed:
        return "the earlier run with the same inputs did not complete or was archived"
    return "changed since the last run: " + ", ".join(changed)
