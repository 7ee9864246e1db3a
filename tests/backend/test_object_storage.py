"""Artifacts in an object store: the SQL backend with its storage on a real S3-compatible
server (moto's server mode on loopback, fixture ``s3_server``), reached through the
environment (``AWS_*``) as users configure any S3 provider."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepline.backend.sql.store import SqlBackend
from stepline.backend.storage import PART_SIZE
from stepline.core.errors import ArtifactError, ArtifactNotFoundError, ConfigError
from stepline.core.records import ArtifactRecord, NewTask
from tests.conftest import TIMEOUT
from tests.s3server import ACCESS_KEY, SECRET_KEY, FlakyLink, MotoServer, start_moto

BIG = 2 * PART_SIZE + PART_SIZE // 2 + 3  # 40 MiB and a bit: three parts, the last one short


@pytest.fixture
def root(s3_server: MotoServer) -> str:
    """The storage root, ``s3://BUCKET/artifacts``, in a bucket of this test's own."""
    return s3_server.new_bucket()


def open_store(tmp_path: Path, root: str, home: str = "home") -> SqlBackend:
    return SqlBackend(f"sqlite:///{tmp_path}/db", root, home=tmp_path / home)


@pytest.fixture
def store(tmp_path: Path, root: str) -> Iterator[SqlBackend]:
    s = open_store(tmp_path, root)
    yield s
    s.close()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(os.urandom(BIG))
    return path


@pytest.fixture(scope="module")
def strict_s3() -> Iterator[MotoServer]:
    """A second server, checking credentials as AWS does; it knows none."""
    server = start_moto(auth=True)
    yield server
    server.stop()


def new_task(store: SqlBackend) -> str:
    return store.create_task(NewTask(name="train", project="object-storage")).id


def artifact(task_id: str, name: str) -> ArtifactRecord:
    return ArtifactRecord(task_id=task_id, name=name, type="bytes", url="", hash="", size=0)


def make_file(tmp_path: Path, data: bytes, name: str = "data.bin") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def bucket_and_prefix(root: str) -> tuple[str, str]:
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    return bucket, prefix


def objects(server: MotoServer, root: str) -> list[str]:
    """Keys of the objects under ``root``, read straight from the server."""
    bucket, prefix = bucket_and_prefix(root)
    listing = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def unfinished_uploads(server: MotoServer, root: str) -> list[str]:
    bucket, _ = bucket_and_prefix(root)
    listing = server.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in listing.get("Uploads", [])]


def key_of(url: str) -> str:
    return bucket_and_prefix(url)[1]


def head(server: MotoServer, url: str) -> dict[str, Any]:
    bucket, key = bucket_and_prefix(url)
    return dict(server.client().head_object(Bucket=bucket, Key=key))


# -- round trips -----------------------------------------------------------------------------


def test_small_and_large_artifacts_round_trip(
    store: SqlBackend, root: str, s3_server: MotoServer, big_file: Path, tmp_path: Path
) -> None:
    task_id = new_task(store)
    small = os.urandom(100_000)
    small_rec = store.put_artifact(artifact(task_id, "small"), str(make_file(tmp_path, small)))
    big_rec = store.put_artifact(artifact(task_id, "big"), str(big_file))
    assert store.get_artifacts(task_id) == [small_rec, big_rec]

    # a large file goes up in parts (its ETag counts them), a small one in one request
    assert head(s3_server, big_rec.url)["ETag"].strip('"').endswith("-3")
    assert "-" not in head(s3_server, small_rec.url)["ETag"]
    assert head(s3_server, big_rec.url)["ContentLength"] == BIG == big_rec.size

    for rec, data in ((small_rec, small), (big_rec, big_file.read_bytes())):
        assert rec.url.startswith(root + "/")
        assert rec.hash == hashlib.sha256(data).hexdigest()
        local = Path(store.artifact_local_path(rec, verify=True))
        assert local.is_relative_to(tmp_path / "home" / "cache")
        assert local.read_bytes() == data
    assert not [p for p in (tmp_path / "home").rglob("*") if p.name.endswith(".part")]
    assert len(objects(s3_server, root)) == 2
    assert unfinished_uploads(s3_server, root) == []


def test_recorded_urls_carry_no_credentials(store: SqlBackend, root: str, tmp_path: Path) -> None:
    task_id = new_task(store)
    rec = store.put_artifact(artifact(task_id, "data"), str(make_file(tmp_path, b"x" * 100)))
    assert rec.url.startswith(root + "/") and "@" not in rec.url
    store.close()
    recorded = (tmp_path / "db").read_bytes()
    assert rec.url.encode() in recorded
    assert ACCESS_KEY.encode() not in recorded and SECRET_KEY.encode() not in recorded


def test_a_child_process_with_only_the_environment_reads_the_artifact(
    store: SqlBackend, root: str, tmp_path: Path
) -> None:
    task_id = new_task(store)
    rec = store.put_artifact(artifact(task_id, "data"), str(make_file(tmp_path, b"d" * 5000)))
    script = (
        "import hashlib, sys\n"
        "from pathlib import Path\n"
        "from stepline.backend.sql.store import SqlBackend\n"
        "db, root, home, task_id = sys.argv[1:]\n"
        "store = SqlBackend(db, root, home=Path(home))\n"
        "[rec] = store.get_artifacts(task_id)\n"
        "path = store.artifact_local_path(rec, verify=True)\n"
        "print(hashlib.sha256(open(path, 'rb').read()).hexdigest(), path)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    child_home = tmp_path / "child-home"
    out = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path}/db", root, str(child_home), task_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 0, out.stderr
    digest, path = out.stdout.split()
    assert digest == rec.hash
    assert Path(path).is_relative_to(child_home)  # downloaded, not read from the parent's cache


def test_a_forked_child_makes_its_own_connection(
    store: SqlBackend, s3_server: MotoServer, tmp_path: Path
) -> None:
    """s3fs's filesystem belongs to the process that made it (its event loop thread is not
    copied by fork): a child makes its own and leaves the parent's alone, unclosed."""
    task_id = new_task(store)
    store.put_artifact(artifact(task_id, "before"), str(make_file(tmp_path, b"parent")))
    parent_fs = store.storage.fs
    src = make_file(tmp_path, b"child", "child.bin")
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, use of fork()"
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code, report = 1, "?"
        try:
            rec = store.put_artifact(artifact(task_id, "from-child"), str(src))
            assert store.storage.fs is not parent_fs
            registry = getattr(weakref.finalize, "_registry", {})
            alive = [f for f in registry if (f.peek() or (None,))[0] is parent_fs]
            assert not alive, "the parent's filesystem would be closed in the child"
            code, report = 0, rec.url
        except BaseException as exc:
            report = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, report.encode())
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    [child_rec] = [r for r in store.get_artifacts(task_id) if r.name == "from-child"]
    assert child_rec.url == report
    assert Path(store.artifact_local_path(child_rec)).read_bytes() == b"child"
    assert store.storage.fs is parent_fs  # and the parent's still works


# -- failures --------------------------------------------------------------------------------


def test_a_put_cut_off_halfway_leaves_no_record_no_object_and_no_parts(
    tmp_path: Path,
    root: str,
    s3_server: MotoServer,
    big_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The network drops every connection that has carried 8 MiB (half a part), however
    often the part is tried again."""
    link = FlakyLink(("127.0.0.1", s3_server.port), cut_after=PART_SIZE // 2)
    monkeypatch.setenv("AWS_ENDPOINT_URL", link.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries (s3fs retries too)
    store = open_store(tmp_path, root)
    try:
        task_id = new_task(store)
        src = tmp_path / "big.bin"
        src.write_bytes(big_file.read_bytes())
        with pytest.raises(ArtifactError) as exc:
            store.put_artifact(artifact(task_id, "big"), str(src), move=True)
        assert link.cuts > 0
        assert root in str(exc.value) and "AWS_ENDPOINT_URL" in str(exc.value)
        assert store.get_artifacts(task_id) == []
        assert src.read_bytes() == big_file.read_bytes()  # a failed move keeps the source
    finally:
        store.close()
        link.close()
    assert objects(s3_server, root) == []
    assert unfinished_uploads(s3_server, root) == []


def test_a_download_cut_off_halfway_leaves_nothing_in_the_cache(
    store: SqlBackend,
    tmp_path: Path,
    root: str,
    s3_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task_id = new_task(store)
    src = make_file(tmp_path, os.urandom(4 << 20))
    rec = store.put_artifact(artifact(task_id, "data"), str(src))
    # s3fs resumes a broken download where it broke, a few times: 256 KiB a try stays short
    link = FlakyLink(("127.0.0.1", s3_server.port), cut_after=256 << 10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", link.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    reader = open_store(tmp_path, root, home="reader")
    try:
        with pytest.raises(ArtifactError) as exc:
            reader.artifact_local_path(rec)
        assert link.cuts > 0 and rec.url in str(exc.value)
    finally:
        reader.close()
        link.close()
    assert not [p for p in (tmp_path / "reader" / "cache").rglob("*") if p.is_file()]


STOPPED_CHILD = """
import signal, sys
from pathlib import Path
from stepline.backend.sql.store import SqlBackend
from stepline.core.records import ArtifactRecord
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # as a task does
db, root, home, task_id, path = sys.argv[1:]
store = SqlBackend(db, root, home=Path(home))
store.put_artifact(ArtifactRecord(task_id, "big", "bytes", "", "", 0), path)
print("the upload finished")
"""


def test_a_task_stopped_while_uploading_leaves_no_record_no_object_and_no_parts(
    store: SqlBackend, root: str, s3_server: MotoServer, big_file: Path, tmp_path: Path
) -> None:
    """The upload's connections stall halfway; the task is stopped (SIGTERM) meanwhile. The
    upload it started is aborted on the way out, so the server keeps none of its parts."""
    link = FlakyLink(("127.0.0.1", s3_server.port), cut_after=PART_SIZE // 2, stall=True)
    task_id = new_task(store)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env["AWS_ENDPOINT_URL"] = link.endpoint
    args = [f"sqlite:///{tmp_path}/db", root, str(tmp_path / "child"), task_id, str(big_file)]
    with subprocess.Popen(
        [sys.executable, "-c", STOPPED_CHILD, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert link.tripped.wait(TIMEOUT), "the upload never got going"
            assert len(unfinished_uploads(s3_server, root)) == 1  # it is halfway
            child.send_signal(signal.SIGTERM)
            out, err = child.communicate(timeout=TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
            link.close()
    assert child.returncode == 128 + signal.SIGTERM, err
    assert "finished" not in out
    assert store.get_artifacts(task_id) == []
    assert objects(s3_server, root) == []
    assert unfinished_uploads(s3_server, root) == []


def test_credentials_in_the_storage_url_are_refused(tmp_path: Path) -> None:
    for url in (
        "s3://AKIAEXAMPLE:wJalr/K7MDENG+bPxRfi@my-bucket/artifacts",
        "s3://AKIAEXAMPLE:wJalrK7MDENGbPxRfi@my-bucket",
        "s3://AKIAEXAMPLE@my-bucket/artifacts",
    ):
        with pytest.raises(ConfigError) as exc:
            SqlBackend(f"sqlite:///{tmp_path}/db", url, home=tmp_path)
        msg = str(exc.value)
        assert "AWS_ACCESS_KEY_ID" in msg and "s3://my-bucket/" in msg
        assert "AKIAEXAMPLE" not in msg and "wJalr" not in msg


def test_a_missing_bucket_names_the_storage_and_what_to_check(
    tmp_path: Path, root: str, s3_server: MotoServer
) -> None:
    missing = "s3://stepline-no-such-bucket/artifacts"
    store = open_store(tmp_path, missing)
    task_id = new_task(store)
    with pytest.raises(ConfigError) as exc:
        store.put_artifact(artifact(task_id, "data"), str(make_file(tmp_path, b"x")))
    msg = str(exc.value)
    assert missing in msg and "bucket does not exist" in msg and "AWS_ENDPOINT_URL" in msg
    assert store.get_artifacts(task_id) == []
    store.close()

    # a bucket removed after the artifact was stored
    store = open_store(tmp_path, root, home="other-home")
    rec = store.put_artifact(artifact(task_id, "data"), str(make_file(tmp_path, b"x")))
    bucket, key = bucket_and_prefix(rec.url)
    s3_server.client().delete_object(Bucket=bucket, Key=key)
    s3_server.client().delete_bucket(Bucket=bucket)
    with pytest.raises(ConfigError) as exc:
        store.artifact_local_path(rec)
    assert root in str(exc.value) and "bucket does not exist" in str(exc.value)
    store.close()


def test_a_rejected_credential_names_the_storage_and_what_to_check(
    tmp_path: Path, root: str, strict_s3: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", strict_s3.endpoint)
    store = open_store(tmp_path, root)
    task_id = new_task(store)
    with pytest.raises(ConfigError) as exc:
        store.put_artifact(artifact(task_id, "data"), str(make_file(tmp_path, b"x")))
    msg = str(exc.value)
    assert root in msg and "access refused" in msg and "AWS_SECRET_ACCESS_KEY" in msg
    assert store.get_artifacts(task_id) == []


def test_missing_credentials_name_the_variables_to_set(
    tmp_path: Path, root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    # nor any other place botocore would look
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store(tmp_path, root)
    task_id = new_task(store)
    with pytest.raises(ConfigError) as exc:
        store.put_artifact(artifact(task_id, "data"), str(make_file(tmp_path, b"x")))
    assert root in str(exc.value) and "no credentials" in str(exc.value)
    assert "AWS_ACCESS_KEY_ID" in str(exc.value)


def test_an_object_gone_from_the_store_is_not_found(
    store: SqlBackend, root: str, s3_server: MotoServer, tmp_path: Path
) -> None:
    task_id = new_task(store)
    rec = store.put_artifact(artifact(task_id, "data"), str(make_file(tmp_path, b"x")))
    bucket, key = bucket_and_prefix(rec.url)
    s3_server.client().delete_object(Bucket=bucket, Key=key)
    with pytest.raises(ArtifactNotFoundError) as exc:
        store.artifact_local_path(rec)
    assert rec.url in str(exc.value)
    assert not [p for p in (tmp_path / "home" / "cache").rglob("*") if p.is_file()]


# -- deletes ---------------------------------------------------------------------------------


def test_deletes_remove_the_objects(
    store: SqlBackend, root: str, s3_server: MotoServer, tmp_path: Path
) -> None:
    kept, gone = new_task(store), new_task(store)
    src = str(make_file(tmp_path, b"x"))
    replaced = store.put_artifact(artifact(kept, "a"), src)
    store.put_artifact(artifact(gone, "a"), src)
    store.put_artifact(artifact(gone, "b"), src)
    one = store.put_artifact(artifact(kept, "one"), src)
    assert len(objects(s3_server, root)) == 4

    keep = store.put_artifact(artifact(kept, "a"), src)  # a replacement deletes the old one
    assert key_of(replaced.url) not in objects(s3_server, root)
    store.delete_artifact(kept, "one")
    assert key_of(one.url) not in objects(s3_server, root)
    store.delete_task(gone)
    assert objects(s3_server, root) == [key_of(keep.url)]
