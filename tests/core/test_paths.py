from __future__ import annotations

import pytest

from stepline.core.errors import UnsafePathError
from stepline.core.paths import check_name, storage_key


@pytest.mark.parametrize(
    "bad",
    ["", ".", "..", "../x", "a/b", "/abs", "a\\b", "x\x00y", " lead", "trail ", "a\nb", "x" * 256],
)
def test_unsafe_names_are_refused(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        check_name(bad, "artifact name")


@pytest.mark.parametrize("good", ["dataset", "model v2", "x.y.z", "résumé", "..hidden", "a-b_c"])
def test_ordinary_names_pass(good: str) -> None:
    assert check_name(good) == good


def test_storage_key_joins_checked_parts() -> None:
    assert storage_key("t1", "artifacts", "a.npy") == "t1/artifacts/a.npy"
    with pytest.raises(UnsafePathError, match="storage path part"):
        storage_key("t1", "..", "x")
