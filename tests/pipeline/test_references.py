"""``${...}`` references: parsing, finding and substituting (stepline/pipeline/references.py)."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepline.core.errors import ValidationError
from stepline.pipeline.references import (
    ARTIFACT_FIELDS,
    MODEL_FIELDS,
    Ref,
    find_refs,
    parse_ref,
    substitute,
)

WHERE = "step 'train' parameter_override"


# -- parse_ref: every valid form ------------------------------------------------------------------
def test_pipeline_argument() -> None:
    assert parse_ref("pipeline.lr", WHERE) == Ref("${pipeline.lr}", "pipeline", "pipeline", "lr")


def test_step_id() -> None:
    ref = parse_ref("prep.id", WHERE)
    assert ref == Ref("${prep.id}", "prep", "id")
    assert (ref.name, ref.field) == ("", "")


@pytest.mark.parametrize("field", ["url", "hash", "size", "type", "preview", "name"])
def test_artifact_fields(field: str) -> None:
    ref = parse_ref(f"prep.artifacts.data.{field}", WHERE)
    assert ref == Ref(f"${{prep.artifacts.data.{field}}}", "prep", "artifact", "data", field)


def test_artifact_fields_constant_lists_all_six() -> None:
    assert set(ARTIFACT_FIELDS) == {"url", "hash", "size", "type", "preview", "name"}


def test_escaped_dot_in_artifact_name_is_a_literal_dot() -> None:
    ref = parse_ref(r"prep.artifacts.train\.set\.csv.url", WHERE)
    assert ref.kind == "artifact"
    assert ref.step == "prep"
    assert ref.name == "train.set.csv"
    assert ref.field == "url"
    assert ref.text == r"${prep.artifacts.train\.set\.csv.url}"


def test_escaped_dot_in_step_name() -> None:
    ref = parse_ref(r"stage\.one.id", WHERE)
    assert (ref.step, ref.kind) == ("stage.one", "id")


def test_parameter_with_section() -> None:
    ref = parse_ref("prep.parameters.General/lr", WHERE)
    assert ref == Ref("${prep.parameters.General/lr}", "prep", "parameter", "General/lr")


def test_parameter_key_may_hold_dots() -> None:
    ref = parse_ref("prep.parameters.Args/opt.lr", WHERE)
    assert (ref.kind, ref.name) == ("parameter", "Args/opt.lr")


def test_last_output_model_url() -> None:
    ref = parse_ref("train.models.output.-1.url", WHERE)
    assert ref == Ref(
        "${train.models.output.-1.url}", "train", "model", field="url", index=-1, mode="output"
    )


@pytest.mark.parametrize(
    ("body", "mode", "index", "field"),
    [
        ("train.models.output.0.name", "output", 0, "name"),
        ("train.models.output.2.id", "output", 2, "id"),
        ("train.models.input.-2.url", "input", -2, "url"),
    ],
)
def test_model_forms(body: str, mode: str, index: int, field: str) -> None:
    ref = parse_ref(body, WHERE)
    assert (ref.kind, ref.mode, ref.index, ref.field) == ("model", mode, index, field)
    assert field in MODEL_FIELDS


def test_return_value_of_a_function_step() -> None:
    assert parse_ref("prep.features", WHERE) == Ref(
        "${prep.features}", "prep", "return", "features"
    )


def test_surrounding_blanks_are_ignored() -> None:
    ref = parse_ref("  prep.id ", WHERE)
    assert (ref.step, ref.kind) == ("prep", "id")


def test_step_names_with_dashes_and_digits() -> None:
    ref = parse_ref("step-2_b.artifacts.x.size", WHERE)
    assert (ref.step, ref.name, ref.field) == ("step-2_b", "x", "size")


# -- parse_ref: malformed -------------------------------------------------------------------------
MALFORMED = [
    ("", "malformed"),
    ("   ", "malformed"),
    ("prep..id", "malformed"),
    (".id", "malformed"),
    ("prep.", "malformed"),
    ("prep", "names a step but not what"),
    ("pipeline", "one pipeline argument"),
    ("pipeline.a.b", "one pipeline argument"),
    ("prep.artifacts.data", "FIELD one of url, hash, size, type, preview, name"),
    ("prep.artifacts.data.md5", "FIELD one of url, hash, size, type, preview, name"),
    ("prep.artifacts.a.b.url", "FIELD one of"),
    ("prep.artifacts", "FIELD one of"),
    ("prep.parameters.lr", "Section/key"),
    ("prep.parameters", "Section/key"),
    ("prep.models.output.last.url", "not an integer"),
    ("prep.models.output.1.5.url", "models.output.INDEX.FIELD"),
    ("prep.models.output.-1", "models.output.INDEX.FIELD"),
    ("prep.models.output.0.hash", "FIELD one of url, name, id"),
    ("prep.models.middle.0.url", "models.output.INDEX.FIELD"),
    ("prep.id.extra", "is not understood"),
    ("prep.a.b", "is not understood"),
]


@pytest.mark.parametrize(("body", "hint"), MALFORMED)
def test_malformed_reference_names_where_and_text(body: str, hint: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_ref(body, WHERE)
    msg = str(info.value)
    assert msg.startswith(WHERE + ": ")
    assert "${" + body + "}" in msg
    assert hint in msg


def test_non_integer_model_index_is_quoted() -> None:
    with pytest.raises(ValidationError, match=r"model index 'last' that is not an integer"):
        parse_ref("prep.models.output.last.url", WHERE)


def test_malformed_error_is_a_value_error() -> None:
    # callers catching ValueError (as with the reference system) keep working
    with pytest.raises(ValueError):
        parse_ref("prep", WHERE)


# -- find_refs ------------------------------------------------------------------------------------
def test_find_refs_walks_nested_containers_in_order() -> None:
    value = {
        "a": "${s1.id}",
        "b": ["x ${pipeline.p} y", ("${s2.artifacts.d.url}",)],
        "c": {"d": "${s3.ret}", "e": 5, "f": None, "g": 1.5},
    }
    refs = find_refs(value, WHERE)
    assert [r.text for r in refs] == [
        "${s1.id}",
        "${pipeline.p}",
        "${s2.artifacts.d.url}",
        "${s3.ret}",
    ]
    assert [r.kind for r in refs] == ["id", "pipeline", "artifact", "return"]


def test_find_refs_several_in_one_string() -> None:
    refs = find_refs("${a.id}-${b.parameters.General/x}/${pipeline.q}", WHERE)
    assert [(r.step, r.kind) for r in refs] == [
        ("a", "id"),
        ("b", "parameter"),
        ("pipeline", "pipeline"),
    ]


@pytest.mark.parametrize(
    "value", ["plain", "cost: $5 {braces}", "$ {a.id}", "", 3, None, [], {}, ("x",), {"k": 1.0}]
)
def test_find_refs_without_references(value: Any) -> None:
    assert find_refs(value, WHERE) == []


def test_find_refs_does_not_look_at_dict_keys() -> None:
    assert find_refs({"${a.id}": 1}, WHERE) == []


@pytest.mark.parametrize("value", ["prefix ${s1.id", "${s1.id} and ${s2.id", "${", "a ${ b"])
def test_unclosed_reference(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        find_refs({"k": [value]}, WHERE)
    msg = str(info.value)
    assert msg.startswith(WHERE + ": ")
    assert value in msg
    assert "without its closing '}'" in msg


def test_empty_reference_in_a_string() -> None:
    with pytest.raises(ValidationError, match=r"reference '\$\{\}' is malformed") as info:
        find_refs("value: ${}", WHERE)
    assert WHERE in str(info.value)


def test_find_refs_reports_the_bad_one_among_good_ones() -> None:
    with pytest.raises(ValidationError) as info:
        find_refs(["${a.id}", "${b.artifacts.x.md5}"], "step 'c' function_kwargs")
    msg = str(info.value)
    assert "step 'c' function_kwargs" in msg
    assert "${b.artifacts.x.md5}" in msg
    assert "${a.id}" not in msg


# -- substitute -----------------------------------------------------------------------------------
class Recorder:
    """A resolver returning values by reference text, recording the references it saw."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.seen: list[Ref] = []

    def __call__(self, ref: Ref) -> Any:
        self.seen.append(ref)
        return self.values[ref.text]


@pytest.mark.parametrize("resolved", [42, 0.5, True, None, [1, 2], {"k": "v"}, ("t",), b"raw"])
def test_whole_reference_keeps_the_type(resolved: Any) -> None:
    resolver = Recorder({"${prep.result}": resolved})
    out = substitute("${prep.result}", resolver, WHERE)
    assert out == resolved
    assert type(out) is type(resolved)
    assert [r.kind for r in resolver.seen] == ["return"]


def test_whole_reference_returns_the_same_object() -> None:
    obj = object()
    assert substitute("${prep.id}", lambda ref: obj, WHERE) is obj


def test_references_inside_longer_strings_are_interpolated_with_str() -> None:
    resolver = Recorder({"${pipeline.lr}": 0.1, "${prep.id}": "abc123", "${prep.n}": None})
    out = substitute("lr=${pipeline.lr}, id=${prep.id}, n=${prep.n}", resolver, WHERE)
    assert out == "lr=0.1, id=abc123, n=None"
    assert [r.text for r in resolver.seen] == ["${pipeline.lr}", "${prep.id}", "${prep.n}"]


def test_two_adjacent_references_are_interpolated() -> None:
    resolver = Recorder({"${a.id}": 1, "${b.id}": 2})
    assert substitute("${a.id}${b.id}", resolver, WHERE) == "12"


def test_substitute_recurses_into_dicts_lists_and_tuples() -> None:
    resolver = Recorder({"${a.id}": "ID", "${pipeline.n}": 3, "${a.out}": [9]})
    value = {
        "x": "${a.id}",
        "y": ["${pipeline.n}", ("n=${pipeline.n}", "${a.out}"), {"z": "${a.id}/file"}],
        "keep": 7,
        "none": None,
    }
    out = substitute(value, resolver, WHERE)
    assert out == {
        "x": "ID",
        "y": [3, ("n=3", [9]), {"z": "ID/file"}],
        "keep": 7,
        "none": None,
    }
    assert isinstance(out["y"], list)
    assert isinstance(out["y"][1], tuple)


def test_substitute_does_not_change_its_input() -> None:
    value = {"x": ["${a.id}"]}
    out = substitute(value, lambda ref: "ID", WHERE)
    assert out == {"x": ["ID"]}
    assert value == {"x": ["${a.id}"]}


@pytest.mark.parametrize("value", [5, 2.5, None, True, b"${a.id}", {1, 2}])
def test_substitute_leaves_other_values_alone(value: Any) -> None:
    def resolve(ref: Ref) -> Any:
        raise AssertionError(f"resolver called for {ref}")

    assert substitute(value, resolve, WHERE) is value


def test_substitute_passes_parsed_refs_to_the_resolver() -> None:
    resolver = Recorder({r"${a.artifacts.my\.data.hash}": "h", "${a.models.output.-1.url}": "u"})
    substitute([r"${a.artifacts.my\.data.hash}", "m: ${a.models.output.-1.url}"], resolver, WHERE)
    art, model = resolver.seen
    assert (art.kind, art.name, art.field) == ("artifact", "my.data", "hash")
    assert (model.kind, model.index, model.field, model.mode) == ("model", -1, "url", "output")


@pytest.mark.parametrize("value", ["${prep}", "x ${prep.artifacts.a.md5} y", "${}"])
def test_substitute_reports_malformed_references(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        substitute({"k": value}, lambda ref: "never", WHERE)
    assert WHERE in str(info.value)


# -- properties -----------------------------------------------------------------------------------
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


def _has_ref_opener(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(_has_ref_opener(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_ref_opener(v) for v in value)
    return False


def _never(ref: Ref) -> Any:
    raise AssertionError(f"resolver called for {ref}")


@given(json_like.filter(lambda v: not _has_ref_opener(v)))
def test_values_without_references_round_trip(value: Any) -> None:
    assert substitute(value, _never, WHERE) == value
    assert find_refs(value, WHERE) == []


@given(st.text().filter(lambda s: "${" not in s))
def test_strings_without_references_are_returned_unchanged(text: str) -> None:
    assert substitute(text, _never, WHERE) is text


plain_text = st.text(alphabet=st.characters(blacklist_characters="${}\\"), max_size=20)
identifier = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)


@given(plain_text, plain_text, identifier, st.integers())
def test_interpolation_keeps_surrounding_text(
    prefix: str, suffix: str, step: str, resolved: int
) -> None:
    text = f"{prefix}${{{step}.id}}{suffix}"
    out = substitute(text, lambda ref: resolved, WHERE)
    if (prefix + suffix).strip():
        assert out == f"{prefix}{resolved}{suffix}"
    else:
        assert out == resolved


@given(
    identifier.filter(lambda s: s != "pipeline"),
    st.lists(identifier, min_size=1, max_size=4),
    st.sampled_from(ARTIFACT_FIELDS),
)
def test_escaped_artifact_names_parse_back(step: str, pieces: list[str], field: str) -> None:
    name = ".".join(pieces)
    body = f"{step}.artifacts.{name.replace('.', chr(92) + '.')}.{field}"
    (ref,) = find_refs(f"${{{body}}}", WHERE)
    assert (ref.step, ref.kind, ref.name, ref.field) == (step, "artifact", name, field)
