from __future__ import annotations

import http.server
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from stepline.core.errors import NotFoundError
from stepline.sdk.storage_manager import StorageError, StorageManager


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTP server on loopback serving a folder; yields (base url, folder, request log)."""
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    finally:
        server.shutdown()
        server.server_close()


def test_local_paths_and_file_urls(home: Path, tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("x")
    assert StorageManager.get_local_copy(str(f)) == str(f)
    assert StorageManager.get_local_copy(f.as_uri()) == str(f)
    with pytest.raises(NotFoundError, match="does not exist"):
        StorageManager.get_local_copy(str(tmp_path / "nope"))


def test_http_download_is_cached(home: Path, http_root: tuple[str, Path, list[str]]) -> None:
    base, root, requests = http_root
    (root / "data.bin").write_bytes(b"payload")
    first = StorageManager.get_local_copy(f"{base}/data.bin")
    assert Path(first).read_bytes() == b"payload"
    assert Path(first).is_relative_to(home / "cache")
    second = StorageManager.get_local_copy(f"{base}/data.bin")
    assert second == first
    assert requests.count("/data.bin") == 1
    StorageManager.get_local_copy(f"{base}/data.bin", force_download=True)
    assert requests.count("/data.bin") == 2
    with pytest.raises(StorageError, match="could not download"):
        StorageManager.get_local_copy(f"{base}/missing.bin")


def test_archives_are_extracted(home: Path, http_root: tuple[str, Path, list[str]]) -> None:
    base, root, _ = http_root
    with zipfile.ZipFile(root / "set.zip", "w") as zf:
        zf.writestr("inner/a.txt", "A")
    folder = StorageManager.get_local_copy(f"{base}/set.zip")
    assert (Path(folder) / "inner" / "a.txt").read_text() == "A"
    raw = StorageManager.get_local_copy(f"{base}/set.zip", extract_archive=False)
    assert raw.endswith("set.zip")


def test_upload_file_and_download_file(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("content")
    dest = tmp_path / "remote" / "dir" / "copy.txt"
    assert StorageManager.upload_file(str(src), str(dest)) == str(dest)
    assert dest.read_text() == "content"
    assert [p.name for p in dest.parent.iterdir()] == ["copy.txt"]
    got = StorageManager.download_file(str(dest), local_folder=str(tmp_path / "dl"))
    assert Path(got).read_text() == "content"
    with pytest.raises(NotFoundError, match="is not a file"):
        StorageManager.upload_file(str(tmp_path / "none"), str(dest))
