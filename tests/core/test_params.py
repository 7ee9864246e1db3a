from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepline.core import params as pv
from stepline.core.errors import ValidationError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(json_values)
def test_encode_decode_round_trips_value_and_type(value: object) -> None:
    text, tname = pv.encode(value)
    back = pv.decode(text, tname)
    assert back == value
    assert type(back) is type(value)


def test_tuple_comes_back_as_tuple() -> None:
    assert pv.decode(*pv.encode((1, "a"))) == (1, "a")


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("5", 1, 5),
        ("0.5", 1.0, 0.5),
        ("3", 1.0, 3.0),
        ("false", True, False),
        ("True", False, True),
        ("yes", False, True),
        ("[1, 2]", [0], [1, 2]),
        ('{"a": 1}', {}, {"a": 1}),
        ("hello", "x", "hello"),
        ("7", None, 7),
        ("", None, None),
    ],
)
def test_cast_like_uses_the_type_of_the_default(
    text: str, default: object, expected: object
) -> None:
    value = pv.cast_like(text, default)
    assert value == expected
    assert type(value) is type(expected)


def test_cast_like_refuses_text_that_is_not_the_type() -> None:
    with pytest.raises(ValidationError, match="cannot be read as int"):
        pv.cast_like("abc", 3)


def test_python_literal_lists_are_accepted() -> None:
    # a person editing a value in the UI may type Python rather than JSON
    assert pv.decode("[1, 'a', None]", "list") == [1, "a", None]
