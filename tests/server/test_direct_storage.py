"""When the server's artifact storage is an object store (any fsspec URL that is not a local
folder), clients put and get the bytes there themselves and only the records go through the
server. fsspec's ``memory://`` filesystem stands in for the object store: the server runs in a
thread of the test process, so both sides see the same one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from stepline.backend.http.client import HttpBackend
from stepline.backend.sql.store import SqlBackend
from stepline.core.errors import ArtifactCorruptError, ValidationError
from stepline.core.records import ArtifactRecord, NewTask
from tests.serverproc import ServedBackend


@pytest.fixture
def remote_storage(tmp_path: Path) -> Iterator[tuple[ServedBackend, str]]:
    bucket = f"memory://bucket-{uuid.uuid4().hex[:8]}"
    inner = SqlBackend(f"sqlite:///{tmp_path / 'server.db'}", bucket, home=tmp_path / "server")
    client = ServedBackend(inner, tmp_path / "client")
    yield client, bucket
    client.close()
    fs = fsspec.filesystem("memory")
    if fs.exists(bucket):
        fs.rm(bucket, recursive=True)


def test_bytes_go_straight_to_the_object_store(
    remote_storage: tuple[ServedBackend, str], tmp_path: Path
) -> None:
    client, bucket = remote_storage
    assert client.info()["storage_local"] is False
    task = client.create_task(NewTask(name="t", project="p"))
    src = tmp_path / "data.csv"
    src.write_bytes(b"a,b\n1,2\n" * 1000)
    rec = ArtifactRecord(task_id=task.id, name="table", type="file", url="", hash="", size=0)
    stored = client.put_artifact(rec, str(src))
    assert stored.url.startswith(bucket + "/") and stored.url.endswith(".csv")
    assert stored.size == src.stat().st_size
    fs = fsspec.filesystem("memory")
    assert fs.cat_file(stored.url) == src.read_bytes()
    # nothing went through the server's upload folder
    uploads = tmp_path / "server" / "cache" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    assert client.get_artifacts(task.id) == [stored]
    assert Path(client.artifact_local_path(stored, verify=True)).read_bytes() == src.read_bytes()

    # bytes changed in the store after upload are caught on read
    fs.pipe_file(stored.url, b"tampered")
    other = HttpBackend(client.url, home=tmp_path / "other-client")  # nothing cached
    with pytest.raises(ArtifactCorruptError):
        other.artifact_local_path(stored)
    other.close()


def test_a_commit_of_an_object_outside_the_storage_is_refused(
    remote_storage: tuple[ServedBackend, str],
) -> None:
    client, _ = remote_storage
    task = client.create_task(NewTask(name="t", project="p"))
    body = {"name": "x", "url": "memory://elsewhere/x.bin", "sha256": "0" * 64, "size": 1}
    r = client._client.post(f"/tasks/{task.id}/artifacts", json=body)
    assert r.status_code == 422
    assert "not inside" in r.json()["message"]
    with pytest.raises(ValidationError):
        client._call("POST", f"/tasks/{task.id}/artifacts", json=body)
    assert client.get_artifacts(task.id) == []
