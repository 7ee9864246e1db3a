"""Step cache keys (stepline/pipeline/cache.py): pure, deterministic, sensitive to exactly the
things that decide a step's outputs."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepline.pipeline.cache import CODE_KEYS, PART_NAMES, cache_key, cache_parts, explain_miss

Inputs = dict[str, Any]


def inputs() -> Inputs:
    return {
        "script": {
            "kind": "function",
            "function": "train",
            "source": "def train(lr):\n    return lr\n",
            "returns": ["model"],
            "repository": "https://example.com/repo.git",
            "branch": "main",
            "commit": "abc123",
            "entry_point": "steps.py",
            "content": "print('hi')\n",
            "diff": "",
            "working_dir": "/home/alice/project",
            "python": "3.11.4",
            "requirements": ["numpy==1.26"],
            "binary": "/usr/bin/python3",
        },
        "parameters": {"kwargs/lr": "0.1", "kwargs/data": "sha256:deadbeef"},
        "configurations": {"config": '{"epochs": 3}'},
        "packages": ["numpy==1.26", "pandas>=2"],
        "container": "python:3.11-slim",
    }


def parts_of(i: Inputs) -> dict[str, str]:
    return cache_parts(
        i["script"], i["parameters"], i["configurations"], i["packages"], i["container"]
    )


def key_of(i: Inputs) -> str:
    return cache_key(parts_of(i))


def changed_parts(a: Inputs, b: Inputs) -> list[str]:
    pa, pb = parts_of(a), parts_of(b)
    return [k for k in PART_NAMES if pa[k] != pb[k]]


# -- purity ---------------------------------------------------------------------------------------
def test_parts_are_named_hex_digests() -> None:
    parts = parts_of(inputs())
    assert list(parts) == list(PART_NAMES)
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in parts.values())
    assert len(set(parts.values())) == len(parts)
    assert re.fullmatch(r"[0-9a-f]{64}", cache_key(parts))


def test_deterministic() -> None:
    assert parts_of(inputs()) == parts_of(inputs())
    assert key_of(inputs()) == key_of(inputs())


def test_inputs_are_not_changed() -> None:
    i = inputs()
    before = copy.deepcopy(i)
    key_of(i)
    assert i == before


def test_same_key_in_another_process() -> None:
    # no hash(), id() or set ordering: another interpreter (other hash seed) agrees
    code = (
        "import json, sys\n"
        "from stepline.pipeline.cache import cache_key, cache_parts\n"
        "i = json.loads(sys.stdin.read())\n"
        "print(cache_key(cache_parts(i['script'], i['parameters'], i['configurations'],"
        " i['packages'], i['container'])))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(inputs()),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == key_of(inputs())


# -- what changes the key -------------------------------------------------------------------------
def _set(section: str, key: str, value: Any) -> Callable[[Inputs], None]:
    def change(i: Inputs) -> None:
        i[section][key] = value

    return change


def _replace(section: str, value: Any) -> Callable[[Inputs], None]:
    def change(i: Inputs) -> None:
        i[section] = value

    return change


CHANGES: list[tuple[str, Callable[[Inputs], None], str]] = [
    ("source", _set("script", "source", "def train(lr):\n    return lr * 2\n"), "code"),
    ("returns", _set("script", "returns", ["model", "score"]), "code"),
    ("function", _set("script", "function", "fit"), "code"),
    ("kind", _set("script", "kind", "script"), "code"),
    ("repository", _set("script", "repository", "https://example.com/other.git"), "code"),
    ("branch", _set("script", "branch", "dev"), "code"),
    ("commit", _set("script", "commit", "def456"), "code"),
    ("content", _set("script", "content", "print('bye')\n"), "code"),
    ("diff", _set("script", "diff", "--- a\n+++ b\n"), "code"),
    ("param value", _set("parameters", "kwargs/lr", "0.2"), "parameters"),
    ("param type-ish", _set("parameters", "kwargs/lr", "0.10"), "parameters"),
    ("artifact hash", _set("parameters", "kwargs/data", "sha256:feedface"), "parameters"),
    ("param added", _set("parameters", "General/seed", "1"), "parameters"),
    (
        "param renamed",
        _replace("parameters", {"kwargs/LR": "0.1", "kwargs/data": "x"}),
        "parameters",
    ),
    ("config value", _set("configurations", "config", '{"epochs": 4}'), "configurations"),
    ("config added", _set("configurations", "other", "a: 1"), "configurations"),
    ("package added", _replace("packages", ["numpy==1.26", "pandas>=2", "scipy"]), "packages"),
    ("package version", _replace("packages", ["numpy==2.0", "pandas>=2"]), "packages"),
    ("container", _replace("container", "python:3.12-slim"), "container"),
    ("no container", _replace("container", ""), "container"),
]


@pytest.mark.parametrize(("what", "change", "part"), CHANGES, ids=[c[0] for c in CHANGES])
def test_each_input_changes_its_part_and_the_key(
    what: str, change: Callable[[Inputs], None], part: str
) -> None:
    before, after = inputs(), inputs()
    change(after)
    assert changed_parts(before, after) == [part]
    assert key_of(before) != key_of(after)


def test_every_code_key_counts() -> None:
    for k in CODE_KEYS:
        before = inputs()
        if k == "entry_point":  # a script step's (see below for a function step's)
            before["script"]["kind"] = "script"
        after = copy.deepcopy(before)
        after["script"][k] = "something else entirely"
        assert changed_parts(before, after) == ["code"], k


def test_where_a_function_steps_file_was_does_not_count() -> None:
    """The same function run from another folder (another checkout, the code an agent
    stored) is the same step."""
    i = inputs()
    i["script"]["entry_point"] = "/elsewhere/steps.py"
    i["script"]["module_dir"] = "/elsewhere"
    assert key_of(i) == key_of(inputs())


# -- what does not change the key -----------------------------------------------------------------
VOLATILE = [
    ("working_dir", "/tmp/elsewhere"),
    ("python", "3.12.0"),
    ("binary", "/opt/python/bin/python"),
    ("requirements", ["numpy==2.0"]),
    ("started_by", "bob"),
]


@pytest.mark.parametrize(("key", "value"), VOLATILE, ids=[v[0] for v in VOLATILE])
def test_volatile_script_keys_do_not_change_the_key(key: str, value: Any) -> None:
    i = inputs()
    i["script"][key] = value
    assert parts_of(i) == parts_of(inputs())
    assert key_of(i) == key_of(inputs())


def test_volatile_script_keys_removed_do_not_change_the_key() -> None:
    i = inputs()
    for k in ("working_dir", "python", "requirements", "binary"):
        del i["script"][k]
    assert key_of(i) == key_of(inputs())


def test_empty_code_fields_count_as_missing() -> None:
    i = inputs()
    del i["script"]["diff"]  # was ""
    i["script"]["branch"] = None
    j = inputs()
    j["script"]["branch"] = ""
    assert key_of(i) == key_of(j)


def test_package_order_does_not_matter() -> None:
    i = inputs()
    i["packages"] = list(reversed(i["packages"]))
    assert i["packages"] != inputs()["packages"]
    assert key_of(i) == key_of(inputs())
    i["packages"] = tuple(i["packages"])
    assert key_of(i) == key_of(inputs())


def test_mapping_order_does_not_matter() -> None:
    i = inputs()
    i["parameters"] = dict(reversed(list(i["parameters"].items())))
    i["script"] = dict(reversed(list(i["script"].items())))
    assert key_of(i) == key_of(inputs())


def test_values_do_not_leak_between_parts() -> None:
    # the same text as a parameter or as a configuration gives different parts
    a = cache_parts({}, {"x": "1"}, {}, [], "")
    b = cache_parts({}, {}, {"x": "1"}, [], "")
    assert a["parameters"] != b["parameters"]
    assert a["configurations"] != b["configurations"]
    assert cache_key(a) != cache_key(b)


# -- cache_key ------------------------------------------------------------------------------------
def test_cache_key_uses_only_the_known_parts() -> None:
    parts = parts_of(inputs())
    assert cache_key({**parts, "extra": "ignored"}) == cache_key(parts)
    assert cache_key(dict(reversed(list(parts.items())))) == cache_key(parts)


@pytest.mark.parametrize("part", PART_NAMES)
def test_cache_key_changes_with_each_part(part: str) -> None:
    parts = parts_of(inputs())
    assert cache_key({**parts, part: "0" * 64}) != cache_key(parts)


def test_a_missing_part_counts_as_empty() -> None:
    parts = dict.fromkeys(PART_NAMES, "h")
    del parts["container"]
    assert cache_key(parts) == cache_key({**parts, "container": ""})
    assert cache_key(parts) != cache_key({**parts, "container": "h"})


# -- explain_miss ---------------------------------------------------------------------------------
def test_explain_miss_without_an_earlier_run() -> None:
    parts = parts_of(inputs())
    assert explain_miss(parts, None) == "no earlier run of this step"
    assert explain_miss(parts, {}) == "no earlier run of this step"


def test_explain_miss_with_nothing_changed() -> None:
    parts = parts_of(inputs())
    assert explain_miss(parts, dict(parts)) == (
        "the earlier run with the same inputs did not complete or was archived"
    )


def test_explain_miss_names_the_changed_parts_in_order() -> None:
    i = inputs()
    i["container"] = "other:1"
    i["script"]["source"] = "def train(lr):\n    return 0\n"
    i["packages"] = ["torch"]
    assert explain_miss(parts_of(i), parts_of(inputs())) == (
        "changed since the last run: code, packages, container"
    )


def test_explain_miss_with_one_change() -> None:
    i = inputs()
    i["parameters"]["kwargs/lr"] = "1"
    assert explain_miss(parts_of(i), parts_of(inputs())) == (
        "changed since the last run: parameters"
    )


def test_explain_miss_counts_a_part_missing_from_an_old_record() -> None:
    parts = parts_of(inputs())
    old = {k: v for k, v in parts.items() if k != "container"}
    assert explain_miss(parts, old) == "changed since the last run: container"


# -- properties -----------------------------------------------------------------------------------
texts = st.text(max_size=10)


@given(st.lists(texts, max_size=6), st.randoms(use_true_random=False))
def test_key_ignores_package_order(packages: list[str], rnd: Any) -> None:
    shuffled = list(packages)
    rnd.shuffle(shuffled)
    a = cache_parts({}, {}, {}, packages, "")
    b = cache_parts({}, {}, {}, shuffled, "")
    assert cache_key(a) == cache_key(b)


@given(st.dictionaries(texts, texts, min_size=1, max_size=5), texts)
def test_any_parameter_change_changes_the_key(params: dict[str, str], new: str) -> None:
    key = next(iter(params))
    changed = {**params, key: params[key] + "!" + new}
    a = cache_parts({"source": "s"}, params, {}, [], "")
    b = cache_parts({"source": "s"}, changed, {}, [], "")
    assert cache_key(a) != cache_key(b)
    assert explain_miss(b, a) == "changed since the last run: parameters"
