"""BlobStorage: atomic puts, no way out of the root, deletes only of its own files."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepline.backend.storage import MAX_PARTS, PART_SIZE, BlobStorage, file_digest, part_size
from stepline.core.errors import ArtifactNotFoundError, ConfigError, UnsafePathError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def storage(root: Path, tmp_path: Path) -> BlobStorage:
    return BlobStorage(str(root), tmp_path / "cache")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the root whose content must never be touched."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_bytes(b"keep me")
    return d


def src_file(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def path_of(url: str) -> Path:
    from urllib.parse import unquote, urlparse

    assert url.startswith("file://")
    return Path(unquote(urlparse(url).path))


# -- put -------------------------------------------------------------------------------------


@pytest.mark.parametrize("move", [False, True])
def test_put_stores_the_bytes_and_leaves_no_temporary_file(
    storage: BlobStorage, root: Path, tmp_path: Path, move: bool
) -> None:
    data = os.urandom(3 << 20)
    src = src_file(tmp_path, data)
    url = storage.put(str(src), "task/artifacts/data.bin", move=move)
    assert path_of(url) == root / "task" / "artifacts" / "data.bin"
    assert path_of(url).read_bytes() == data
    assert src.exists() != move
    assert all_files(root) == [root / "task" / "artifacts" / "data.bin"]


def test_put_replaces_atomically(storage: BlobStorage, root: Path, tmp_path: Path) -> None:
    """A reader holding the old file keeps reading all of it: the new bytes arrive under
    another name and are renamed over it, never written into it."""
    old, new = b"old bytes " * 1000, b"NEW" * 5000
    url = storage.put(str(src_file(tmp_path, old, "old")), "k/data")
    with open(path_of(url), "rb") as reader:
        assert storage.put(str(src_file(tmp_path, new, "new")), "k/data") == url
        assert reader.read() == old
    assert path_of(url).read_bytes() == new
    assert all_files(root) == [root / "k" / "data"]


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux /proc")
def test_a_put_failing_halfway_leaves_the_old_file_whole_and_no_temporary(
    storage: BlobStorage, root: Path, tmp_path: Path
) -> None:
    """/proc/self/mem opens fine and fails on the first read: a copy that breaks midway."""
    old = b"the complete old file\n" * 100
    url = storage.put(str(src_file(tmp_path, old)), "k/data")
    with pytest.raises(OSError):
        storage.put("/proc/self/mem", "k/data")
    assert path_of(url).read_bytes() == old
    with pytest.raises(OSError):
        storage.put("/proc/self/mem", "k/fresh")
    assert all_files(root) == [root / "k" / "data"]


def test_put_of_a_missing_source_stores_nothing(storage: BlobStorage, root: Path) -> None:
    for move in (False, True):
        with pytest.raises(FileNotFoundError):
            storage.put(str(root.parent / "no-such-file"), "k/data", move=move)
    assert all_files(root) == []


def test_url_with_spaces_and_specials_round_trips(
    storage: BlobStorage, root: Path, tmp_path: Path
) -> None:
    data = b"spaces and specials"
    key = "task 1/artifacts/my data %20 #x ?y é.bin"
    url = storage.put(str(src_file(tmp_path, data)), key)
    assert storage.owns(url)
    local = storage.local_copy(url)
    assert Path(local) == root / key
    assert Path(local).read_bytes() == data
    storage.delete(url)
    assert not (root / key).exists()


# -- keys that would leave the root ---------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "../root-sibling/x", "/tmp/stepline-absolute-x", "a/../.."]
)
def test_keys_escaping_the_root_are_refused(
    storage: BlobStorage, root: Path, tmp_path: Path, outside: Path, key: str
) -> None:
    src = src_file(tmp_path, b"data")
    before = all_files(tmp_path)
    with pytest.raises(UnsafePathError) as exc:
        storage.put(str(src), key)
    assert repr(key) in str(exc.value)
    with pytest.raises(UnsafePathError):
        storage.url_for(key)
    with pytest.raises(UnsafePathError):
        storage.delete_prefix(key)
    assert all_files(tmp_path) == before
    assert not Path("/tmp/stepline-absolute-x").exists()
    assert (outside / "victim").read_bytes() == b"keep me"


def test_a_symlink_inside_the_root_cannot_lead_out(
    storage: BlobStorage, root: Path, tmp_path: Path, outside: Path
) -> None:
    (root / "link").symlink_to(outside, target_is_directory=True)
    src = src_file(tmp_path, b"data")
    for key in ("link/new-file", "link/victim"):
        with pytest.raises(UnsafePathError):
            storage.put(str(src), key)
        with pytest.raises(UnsafePathError):
            storage.put(str(src), key, move=True)
    with pytest.raises(UnsafePathError):
        storage.delete_prefix("link")
    storage.delete((root / "link" / "victim").as_uri())
    storage.delete(str(root / "link" / "victim"))
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_bytes() == b"keep me"
    assert src.read_bytes() == b"data"
    assert (root / "link").is_symlink()


# -- delete ----------------------------------------------------------------------------------


def test_delete_removes_its_own_file(storage: BlobStorage, root: Path, tmp_path: Path) -> None:
    url = storage.put(str(src_file(tmp_path, b"x")), "k/data")
    assert storage.owns(url)
    storage.delete(url)
    assert all_files(root) == []
    storage.delete(url)  # deleting what is gone already is fine


def test_delete_outside_the_root_does_nothing(
    storage: BlobStorage, root: Path, tmp_path: Path, outside: Path
) -> None:
    # a sibling whose name starts with the root's name is still outside it
    sibling = tmp_path / (root.name + "-sibling")
    sibling.mkdir()
    (sibling / "victim").write_bytes(b"keep me too")
    for url in (
        (outside / "victim").as_uri(),
        str(outside / "victim"),
        (sibling / "victim").as_uri(),
        f"{root.as_uri()}/../outside/victim",
        root.as_uri(),
        "s3://bucket/victim",
    ):
        assert not storage.owns(url)
        storage.delete(url)
    assert (outside / "victim").read_bytes() == b"keep me"
    assert (sibling / "victim").read_bytes() == b"keep me too"
    assert root.is_dir()


def test_delete_prefix_removes_only_that_folder(
    storage: BlobStorage, root: Path, tmp_path: Path
) -> None:
    storage.put(str(src_file(tmp_path, b"a")), "task-a/artifacts/x")
    storage.put(str(src_file(tmp_path, b"b")), "task-b/artifacts/x")
    storage.delete_prefix("task-a")
    assert all_files(root) == [root / "task-b" / "artifacts" / "x"]


# -- local_copy ------------------------------------------------------------------------------


def test_local_copy_of_a_missing_file(storage: BlobStorage, root: Path) -> None:
    for url in ((root / "k" / "gone").as_uri(), str(root / "k" / "gone")):
        with pytest.raises(ArtifactNotFoundError) as exc:
            storage.local_copy(url)
        assert str(root / "k" / "gone") in str(exc.value)


def test_remote_storage_round_trip_and_missing_file(tmp_path: Path) -> None:
    """Any fsspec URL works the same way; memory:// stands in for an object store."""
    root = f"memory://stepline-test-{uuid.uuid4().hex}"
    cache = tmp_path / "cache"
    storage = BlobStorage(root, cache)
    data = os.urandom(100_000)
    src = src_file(tmp_path, data)
    url = storage.put(str(src), "task/artifacts/data.bin", move=True)
    try:
        assert url == f"{root}/task/artifacts/data.bin"
        assert storage.owns(url) and not storage.owns(f"{root}-other/x")
        assert not src.exists()
        local = Path(storage.local_copy(url))
        assert local.is_relative_to(cache)
        assert local.read_bytes() == data
        assert file_digest(local)[1] == len(data)
        assert not [p for p in cache.rglob("*") if p.name.endswith(".part")]
        with pytest.raises(ArtifactNotFoundError):
            storage.local_copy(f"{root}/task/artifacts/never-stored.bin")
    finally:
        storage.delete_prefix("task")
    assert not storage.fs.exists(url)


# -- object stores ---------------------------------------------------------------------------


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[BlobStorage]:
    """memory:// stands in for an object store (tests/backend/test_object_storage.py has S3)."""
    storage = BlobStorage(f"memory://stepline-test-{uuid.uuid4().hex}/root", tmp_path / "cache")
    yield storage
    with contextlib.suppress(FileNotFoundError):
        storage.fs.rm(storage.root_url.split("/root")[0], recursive=True)


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "a/..", "./x", "a/./b", "/abs/x", "a//b", "", "a/", "a\\..\\x"]
)
def test_object_keys_that_could_leave_the_root_are_refused(
    remote: BlobStorage, tmp_path: Path, key: str
) -> None:
    src = src_file(tmp_path, b"data")
    with pytest.raises(UnsafePathError) as exc:
        remote.put(str(src), key)
    assert repr(key) in str(exc.value)
    with pytest.raises(UnsafePathError):
        remote.url_for(key)
    with pytest.raises(UnsafePathError):
        remote.delete_prefix(key)
    assert not remote.owns(f"{remote.root_url}/{key}")
    assert remote.fs.find(remote.root_url.split("/root")[0]) == []


def test_object_store_owns_only_plain_keys_under_its_root(remote: BlobStorage) -> None:
    root = remote.root_url
    assert remote.owns(f"{root}/task/artifacts/x.bin")
    for url in (root, f"{root}/", f"{root}-sibling/x", f"{root}/../x", f"{root}/a/../../x"):
        assert not remote.owns(url)


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAEXAMPLE:wJalr/K7MDENG+bPxRfi@my-bucket/artifacts",
        "s3://AKIAEXAMPLE:wJalrK7MDENGbPxRfi@my-bucket",
        "s3://AKIAEXAMPLE@my-bucket/artifacts",
        "S3A://AKIAEXAMPLE:wJalrK7MDENGbPxRfi@my-bucket/artifacts",
        "gs://AKIAEXAMPLE:wJalrK7MDENGbPxRfi@my-bucket/artifacts",
        "https://AKIAEXAMPLE:wJalrK7MDENGbPxRfi@my-bucket/artifacts",
    ],
)
def test_storage_urls_carrying_credentials_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        BlobStorage(url, tmp_path / "cache")
    msg = str(exc.value)
    assert "my-bucket/..." in msg and "environment" in msg
    assert "AKIAEXAMPLE" not in msg and "wJalr" not in msg
    if url.lower().startswith("s3"):
        assert "AWS_ACCESS_KEY_ID" in msg


@pytest.mark.parametrize(
    "url", ["s3://my-bucket/user@example.com/artifacts", "sftp://deploy@host/artifacts"]
)
def test_storage_urls_with_an_at_sign_but_no_secret_are_fine(tmp_path: Path, url: str) -> None:
    assert BlobStorage(url, tmp_path / "cache").root_url == url


def test_part_size_keeps_uploads_within_the_part_limit() -> None:
    assert part_size(0) == part_size(1) == PART_SIZE
    assert part_size(PART_SIZE * MAX_PARTS) == PART_SIZE
    for size in (PART_SIZE * MAX_PARTS + 1, 5 << 40):  # 5 TiB: S3's largest object
        part = part_size(size)
        assert part > PART_SIZE and part % (1 << 20) == 0
        assert -(-size // part) <= MAX_PARTS
