from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stepline.core.errors import (
    ArtifactCorruptError,
    ArtifactError,
    ArtifactNotFoundError,
    SerializationError,
    UnsafePathError,
)
from stepline.sdk.task import Task


@pytest.fixture
def task(home: Path) -> Task:
    return Task.create(project_name="p", task_name="artifacts")


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


def test_numpy_round_trip(task: Task) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    task.upload_artifact("arr", arr, metadata={"units": "m"})
    art = task.artifacts["arr"]
    back = art.get()
    assert back.dtype == np.float32 and np.array_equal(back, arr)
    assert art.type == "numpy"
    assert art.metadata == {"units": "m"}
    assert "shape=(3, 4)" in art.preview
    assert art.size == os.path.getsize(art.get_local_copy())
    assert len(art.hash) == 64
    assert art.url.startswith("file://")


def test_dataframe_round_trip_keeps_index_and_dtypes(task: Task) -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}, index=[10, 20, 30])
    task.upload_artifact("df", df)
    back = task.artifacts["df"].get()
    pd.testing.assert_frame_equal(back, df)
    assert "shape=(3, 2)" in task.artifacts["df"].preview


def test_dataframe_as_csv_when_asked(task: Task) -> None:
    df = pd.DataFrame({"a": [1.5, 2.5]})
    task.upload_artifact("df", df, extension_name=".csv.gz")
    assert task.artifacts["df"].content_type == "text/csv+gzip"
    pd.testing.assert_frame_equal(task.artifacts["df"].get(), df)


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        ({"a": [1, 2], "b": None}, "json"),
        ([1, "two", 3.0], "json"),
        ("plain text, not a path", "str"),
        (b"\x00\x01raw", "bytes"),
        (Point(3), "pickle"),
        ({"t": (1, 2)}, "pickle"),  # a tuple would come back as a list from JSON
        ({1: "int key"}, "pickle"),
    ],
)
def test_value_round_trips(task: Task, obj: object, kind: str) -> None:
    task.upload_artifact("v", obj)
    art = task.artifacts["v"]
    assert art.type == kind
    assert art.get() == obj


def test_file_and_folder(task: Task, tmp_path: Path) -> None:
    f = tmp_path / "data.csv"
    f.write_text("a,b\n1,2\n")
    task.upload_artifact("file", str(f))
    assert f.exists()  # the user's file is copied, never moved
    local = task.artifacts["file"].get()
    assert Path(local).read_text() == "a,b\n1,2\n"
    assert task.artifacts["file"].metadata["file_name"] == "data.csv"

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.txt").write_text("1")
    (folder / "sub" / "two.txt").write_text("2")
    task.upload_artifact("folder", folder)
    art = task.artifacts["folder"]
    assert art.type == "folder"
    out = Path(art.get())
    assert (out / "one.txt").read_text() == "1"
    assert (out / "sub" / "two.txt").read_text() == "2"
    assert art.get_local_copy(extract_archive=False).endswith(".zip")

    with pytest.raises(ArtifactError, match="does not exist"):
        task.upload_artifact("nope", tmp_path / "missing.bin")


def test_custom_serialization(task: Task) -> None:
    task.upload_artifact("c", [3, 2, 1], serialization_function=lambda v: bytes(v))
    art = task.artifacts["c"]
    assert art.type == "custom"
    assert art.get() == b"\x03\x02\x01"
    assert art.get(deserialization_function=lambda b: list(b)) == [3, 2, 1]
    with pytest.raises(SerializationError, match="must return bytes"):
        task.upload_artifact("bad", 1, serialization_function=lambda v: "text")


def test_image_artifact(task: Task) -> None:
    from PIL import Image

    img = Image.new("RGB", (4, 3), color=(255, 0, 0))
    task.upload_artifact("img", img)
    back = task.artifacts["img"].get()
    assert back.size == (4, 3) and back.getpixel((0, 0)) == (255, 0, 0)


def test_unpicklable_object_is_refused_and_nothing_is_stored(task: Task) -> None:
    with pytest.raises(
        SerializationError, match=f"artifact 'lock' of task {task.id}.*cannot be pickled"
    ):
        task.upload_artifact("lock", threading.Lock())
    assert "lock" not in task.artifacts
    with pytest.raises(SerializationError, match="auto_pickle=False"):
        task.upload_artifact("p", Point(1), auto_pickle=False)


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ""])
def test_names_cannot_escape_storage(task: Task, name: str) -> None:
    with pytest.raises(UnsafePathError):
        task.upload_artifact(name, b"x")
    assert len(task.artifacts) == 0


def test_metadata_must_be_json(task: Task) -> None:
    with pytest.raises(ValueError, match="metadata must be JSON"):
        task.upload_artifact("m", b"x", metadata={"obj": object()})


def test_replacing_an_artifact_keeps_only_the_new_one(task: Task) -> None:
    task.upload_artifact("a", b"first")
    old_path = Path(task.artifacts["a"].get_local_copy())
    task.upload_artifact("a", b"second")
    assert task.artifacts["a"].get() == b"second"
    assert not old_path.exists()
    assert list(task.artifacts) == ["a"]


def test_missing_and_corrupt_files_are_reported(task: Task) -> None:
    task.upload_artifact("a", b"0123456789")
    task.upload_artifact("b", b"abcdefghij")
    path_a = Path(task.artifacts["a"].get_local_copy())
    path_a.write_bytes(b"0123456780")  # same size, other bytes
    with pytest.raises(ArtifactCorruptError, match=f"artifact 'a' of task {task.id}.*sha256"):
        task.artifacts["a"].get()
    path_a.write_bytes(b"012")
    with pytest.raises(ArtifactCorruptError, match="has 3 bytes but 10"):
        task.artifacts["a"].get()
    os.unlink(task.artifacts["b"].get_local_copy())
    with pytest.raises(ArtifactNotFoundError, match=f"artifact 'b' of task {task.id}"):
        task.artifacts["b"].get()


def test_unknown_artifact_name_lists_what_exists(task: Task) -> None:
    task.upload_artifact("here", b"x")
    with pytest.raises(KeyError, match="has no artifact 'there'.*here"):
        task.artifacts["there"]


def test_temporary_files_do_not_pile_up(task: Task, home: Path) -> None:
    for i in range(5):
        task.upload_artifact(f"a{i}", np.zeros(10))
    tmp = home / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def test_large_artifacts_get_their_hash_in_the_background(task: Task) -> None:
    import hashlib

    from stepline.backend.sql import store as sql_store

    data = os.urandom(sql_store.DEFER_HASH_MIN + 1)
    task.upload_artifact("later", data)
    task.upload_artifact("now", data, wait_on_upload=True)
    assert len(task.artifacts["now"].hash) == 64
    assert task.artifacts["later"].get() == data  # readable at once, checked by size
    task.flush(wait_for_uploads=True)
    expected = hashlib.sha256(data).hexdigest()
    assert task.artifacts["later"].hash == expected == task.artifacts["now"].hash
