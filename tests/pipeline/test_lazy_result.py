"""``LazyResult`` on its own: every use of the proxy loads its step's value (once) and acts on
it as the value itself would.

The proxy's owner is a stand-in with the one method the proxy calls, ``_result(step, name)``;
the pipeline-level behaviour (waiting for a step, failed steps) is tested end to end in
``test_decorator_data.py``.
"""

from __future__ import annotations

import copy
import json
import math
import operator
import pickle
import types
from typing import Any

import numpy as np
import pytest

from stepline.pipeline.decorator import LazyResult, StepFailedError


class FakeOwner:
    """Answers ``_result`` with a fixed value and counts the calls."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.calls: list[tuple[str, str]] = []

    def _result(self, step: str, name: str) -> Any:
        self.calls.append((step, name))
        if self.error is not None:
            raise self.error
        return self.value


def lazy(value: Any) -> LazyResult:
    return LazyResult(FakeOwner(value), "step", "out")  # type: ignore[arg-type]


def owner_of(proxy: LazyResult) -> FakeOwner:
    return object.__getattribute__(proxy, "_owner")


# -- loading ---------------------------------------------------------------------------------------
def test_value_is_loaded_on_first_use_only_once():
    owner = FakeOwner(41)
    proxy = LazyResult(owner, "train", "model")  # type: ignore[arg-type]
    assert owner.calls == []  # making the proxy loads nothing
    assert proxy + 1 == 42
    assert proxy * 2 == 82
    assert str(proxy) == "41"
    assert owner.calls == [("train", "model")]


def test_a_failed_load_raises_at_the_use_and_is_tried_again():
    owner = FakeOwner(error=StepFailedError('Pipeline step "s" failed'))
    proxy = LazyResult(owner, "s", "out")  # type: ignore[arg-type]
    with pytest.raises(StepFailedError, match='step "s" failed'):
        proxy + 1
    with pytest.raises(StepFailedError):
        bool(proxy)
    assert len(owner.calls) == 2  # nothing cached after a failure
    owner.error, owner.value = None, 5
    assert proxy + 1 == 6


def test_type_is_still_the_proxy_but_isinstance_sees_the_value():
    proxy = lazy(3)
    assert type(proxy) is LazyResult
    assert isinstance(proxy, int)
    assert not isinstance(proxy, str)
    assert proxy.__class__ is int
    assert isinstance(lazy({"a": 1}), dict)
    # documented: identity checks see the proxy, comparisons see the value
    none = lazy(None)
    assert none is not None
    assert none == None  # noqa: E711
    assert not none


# -- binary operators ------------------------------------------------------------------------------
ARITHMETIC = [
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.mod,
    divmod,
    pow,
    operator.lshift,
    operator.rshift,
    operator.and_,
    operator.xor,
    operator.or_,
]


@pytest.mark.parametrize("op", ARITHMETIC, ids=lambda op: op.__name__)
def test_arithmetic_forward_and_reflected(op: Any):
    assert op(lazy(13), 3) == op(13, 3)
    assert op(3, lazy(13)) == op(3, 13)
    assert op(lazy(13), lazy(3)) == op(13, 3)
    assert type(op(lazy(13), 3)) is type(op(13, 3))


@pytest.mark.parametrize(
    "op", [operator.add, operator.sub, operator.mul, operator.truediv, operator.pow]
)
def test_float_arithmetic(op: Any):
    assert op(lazy(2.5), 4.0) == op(2.5, 4.0)
    assert op(4.0, lazy(2.5)) == op(4.0, 2.5)


def test_sequences_concatenate_and_repeat_on_both_sides():
    assert lazy("ab") + "c" == "abc"
    assert "c" + lazy("ab") == "cab"
    assert lazy("ab") * 2 == "abab"
    assert 2 * lazy("ab") == "abab"
    assert [1] + lazy([2]) == [1, 2]  # noqa: RUF005
    assert lazy([2]) + [1] == [2, 1]  # noqa: RUF005
    assert (0,) + lazy((1,)) == (0, 1)  # noqa: RUF005
    assert lazy({1}) | {2} == {1, 2}
    assert {2, 3} & lazy({3, 4}) == {3}
    assert "%d items" % lazy(3) == "3 items"  # noqa: UP031
    assert lazy("%s-%s") % ("a", "b") == "a-b"


def test_matmul_with_numpy():
    a = np.array([[1, 2], [3, 4]])
    b = np.array([[0, 1], [1, 0]])
    np.testing.assert_array_equal(lazy(a) @ b, a @ b)
    np.testing.assert_array_equal(a @ lazy(b), a @ b)
    np.testing.assert_array_equal(lazy(a) @ lazy(b), a @ b)


def test_numpy_uses_the_value():
    arr = np.arange(4, dtype=np.float32)
    proxy = lazy(arr)
    np.testing.assert_array_equal(np.asarray(proxy), arr)
    assert np.asarray(proxy).dtype == np.float32
    assert np.asarray(proxy, dtype=np.int64).dtype == np.int64
    np.testing.assert_array_equal(arr + proxy, arr * 2)
    np.testing.assert_array_equal(proxy + arr, arr * 2)
    assert np.sum(proxy) == 6.0
    assert proxy.shape == (4,) and proxy.dtype == np.float32
    np.testing.assert_array_equal(proxy[1:3], arr[1:3])
    np.testing.assert_array_equal(np.array(lazy([1, 2, 3])), np.array([1, 2, 3]))


# -- comparisons -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op", [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge],
    ids=lambda op: op.__name__,
)  # fmt: skip
@pytest.mark.parametrize("other", [4, 5, 6])
def test_comparisons_both_ways(op: Any, other: int):
    assert op(lazy(5), other) is op(5, other)
    assert op(other, lazy(5)) is op(other, 5)
    assert op(lazy(5), lazy(other)) is op(5, other)


def test_sorting_min_max_and_sum():
    proxies = [lazy(3), lazy(1), lazy(2)]
    assert sorted(proxies) == [1, 2, 3]
    assert min(proxies) == 1 and max(proxies) == 3
    assert sum(proxies) == 6
    assert max(lazy([4, 9, 2])) == 9


# -- unary operators and conversions ---------------------------------------------------------------
def test_unary_operators():
    assert -lazy(5) == -5
    assert +lazy(-5) == -5
    assert abs(lazy(-5)) == 5
    assert ~lazy(5) == -6
    assert -lazy(2.5) == -2.5


def test_numeric_conversions():
    assert int(lazy(3.9)) == 3 and type(int(lazy(3.9))) is int
    assert float(lazy(2)) == 2.0 and type(float(lazy(2))) is float
    assert complex(lazy(2)) == 2 + 0j
    assert round(lazy(2.567), 2) == 2.57
    assert round(lazy(2.567)) == 3 and type(round(lazy(2.567))) is int
    assert math.trunc(lazy(-2.5)) == -2
    assert math.floor(lazy(2.5)) == 2
    assert math.ceil(lazy(2.5)) == 3
    assert math.sqrt(lazy(16.0)) == 4.0
    # __index__: where only a true integer will do
    assert [10, 20, 30][lazy(1)] == 20
    assert list(range(lazy(3))) == [0, 1, 2]
    assert hex(lazy(255)) == "0xff"
    assert operator.index(lazy(7)) == 7


@pytest.mark.parametrize("value", [0, 1, "", "x", [], [0], None, 0.0, {}, {"a": 1}])
def test_truth_value(value: Any):
    assert bool(lazy(value)) is bool(value)
    assert (not lazy(value)) is (not value)


def test_text_conversions():
    assert str(lazy(3)) == "3"
    assert repr(lazy("a")) == "'a'"
    assert repr(lazy([1, "x"])) == "[1, 'x']"
    assert f"{lazy(3.14159):.2f}" == "3.14"
    assert f"{lazy(7):>3}" == "  7"
    assert f"{lazy('v')!r}" == "'v'"
    assert format(lazy(255), "x") == "ff"
    assert bytes(lazy(b"ab")) == b"ab"
    assert bytes(lazy([65, 66])) == b"AB"


def test_hash_matches_the_value():
    assert hash(lazy(3)) == hash(3)
    assert hash(lazy("k")) == hash("k")
    table = {lazy("k"): 1}
    assert table["k"] == 1  # found by the value
    assert lazy(3) in {3, 4}
    with pytest.raises(TypeError):
        hash(lazy([1]))


# -- containers ------------------------------------------------------------------------------------
def test_container_protocol():
    proxy = lazy([3, 1, 2])
    assert len(proxy) == 3
    assert list(proxy) == [3, 1, 2]
    assert list(reversed(proxy)) == [2, 1, 3]
    assert 1 in proxy and 5 not in proxy
    assert proxy[0] == 3 and proxy[-1] == 2 and proxy[1:] == [1, 2]
    a, b, c = proxy
    assert (a, b, c) == (3, 1, 2)
    assert dict(lazy({"a": 1})) == {"a": 1}
    assert list(lazy({"a": 1, "b": 2})) == ["a", "b"]
    assert [k for k in lazy((1, 2))] == [1, 2]


def test_item_assignment_and_deletion_change_the_value():
    data = {"a": 1}
    proxy = lazy(data)
    proxy["b"] = 2
    assert data == {"a": 1, "b": 2}
    del proxy["a"]
    assert data == {"b": 2}
    assert proxy == {"b": 2}
    items = [1, 2, 3]
    plist = lazy(items)
    plist[0] = 9
    del plist[-1]
    assert items == [9, 2]


def test_next_on_an_iterator_value():
    proxy = lazy(iter([1, 2]))
    assert next(proxy) == 1
    assert next(proxy) == 2
    with pytest.raises(StopIteration):
        next(proxy)


# -- attributes, calls, context managers -----------------------------------------------------------
def test_attributes_are_the_values():
    assert lazy("abc").upper() == "ABC"
    assert lazy({"a": 1}).get("a") == 1
    assert lazy(3).real == 3
    assert not hasattr(lazy(3), "no_such_attribute")
    with pytest.raises(AttributeError):
        lazy(3).no_such_attribute  # noqa: B018
    assert "upper" in dir(lazy("abc"))


def test_setting_and_deleting_attributes_act_on_the_value():
    obj = types.SimpleNamespace(a=1)
    proxy = lazy(obj)
    proxy.b = 2
    assert obj.b == 2 and proxy.b == 2
    del proxy.a
    assert not hasattr(obj, "a")
    with pytest.raises(AttributeError):
        lazy(3).x = 1


def test_calling_the_value():
    assert lazy(lambda x, y=1: x + y)(2, y=3) == 5
    assert lazy(len)([1, 2]) == 2


def test_context_manager():
    events: list[str] = []

    class Resource:
        def __enter__(self):
            events.append("enter")
            return "inside"

        def __exit__(self, *exc):
            events.append(f"exit {exc[0].__name__ if exc[0] else None}")
            return True  # swallows the error

    with lazy(Resource()) as got:
        assert got == "inside"
    with lazy(Resource()):
        raise ValueError("boom")
    assert events == ["enter", "exit None", "enter", "exit ValueError"]


# -- copying and pickling --------------------------------------------------------------------------
def test_pickle_and_copies_hold_the_value_itself():
    value = {"a": [1, 2]}
    proxy = lazy(value)
    restored = pickle.loads(pickle.dumps(proxy))
    assert type(restored) is dict and restored == value
    shallow = copy.copy(proxy)
    assert type(shallow) is dict and shallow == value
    deep = copy.deepcopy(proxy)
    assert type(deep) is dict and deep == value and deep["a"] is not value["a"]
    arr = np.arange(3)
    deep_arr = copy.deepcopy(lazy(arr))
    assert type(deep_arr) is np.ndarray and deep_arr is not arr
    np.testing.assert_array_equal(deep_arr, arr)
    nested = pickle.loads(pickle.dumps([lazy(1), {"k": lazy("v")}]))
    assert nested == [1, {"k": "v"}] and type(nested[0]) is int


def test_in_place_operators_rebind_to_a_value():
    x = lazy(5)
    x += 1
    assert type(x) is int and x == 6
    s = lazy("a")
    s *= 3
    assert type(s) is str and s == "aaa"


# -- bugs found ------------------------------------------------------------------------------------
def test_three_argument_pow():
    assert pow(lazy(5), 2, 3) == pow(5, 2, 3)


def test_json_dumps_needs_the_value_itself():
    # a documented limit (README): json checks the exact type, so it refuses the proxy...
    with pytest.raises(TypeError):
        json.dumps({"k": lazy(3)})
    # ...and takes the value once it is loaded
    assert json.dumps({"k": int(lazy(3))}) == '{"k": 3}'
