"""The contract every ``stepline.backend.protocol.Backend`` implementation keeps.

Each test runs once per factory in ``IMPLEMENTATIONS``: SQLite; the HTTP client through a real
server on loopback; PostgreSQL with artifacts on an S3-compatible server (both real servers
started by the fixtures). The tests use only the Protocol's methods and the records and errors
of ``stepline.core``; whatever an implementation stores lives under the folder its factory is
given (or in its bucket), which is how "no bytes are left behind" is checked without knowing
how an implementation lays out its files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepline.backend.protocol import KEEP, Backend
from stepline.backend.sql.store import SqlBackend
from stepline.core.errors import (
    ArtifactCorruptError,
    ArtifactNotFoundError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    TaskNotFoundError,
    UnsafePathError,
    ValidationError,
)
from stepline.core.records import (
    ArtifactRecord,
    ConfigObject,
    Event,
    LogLine,
    ModelRecord,
    NewTask,
    Param,
    QueueRecord,
    ScalarPoint,
    TaskFilter,
    TaskRecord,
)
from stepline.core.status import ALLOWED_FROM, FINAL, TaskStatus, TaskTypes


def sqlite_backend(root: Path) -> Backend:
    """The embedded store: a SQLite file and an artifact folder under ``root``."""
    return SqlBackend(f"sqlite:///{root / 'stepline.db'}", str(root / "artifacts"), home=root)


def http_backend(root: Path) -> Backend:
    """The HTTP client, through a real server on loopback serving a SQLite store; the
    server's store and the client's cache both live under ``root``."""
    from tests.serverproc import ServedBackend

    server_home = root / "server"
    server_home.mkdir()
    inner = SqlBackend(
        f"sqlite:///{server_home / 'stepline.db'}", str(server_home / "artifacts"),
        home=server_home,
    )  # fmt: skip
    return ServedBackend(inner, root / "client")


def postgres_backend(root: Path) -> Backend:
    """PostgreSQL (a fresh database on the session's server, ``pg_cluster``) with artifacts
    in a fresh bucket of the S3-compatible server (``s3_server``); its cache is under
    ``root``, and the bucket's objects count as the backend's files."""
    bucket = SERVERS["s3"].new_bucket()
    SERVERS["bucket"] = bucket
    return SqlBackend(SERVERS["pg"].new_database(), bucket, home=root)


#: the running servers the factories above use, filled by the ``store`` fixture
SERVERS: dict[str, Any] = {}

#: Factories ``(folder) -> Backend``; every file the backend writes must stay in the folder.
IMPLEMENTATIONS: list[Callable[[Path], Backend]] = [sqlite_backend, http_backend, postgres_backend]

UNKNOWN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The folder the backend under test keeps everything in."""
    r = tmp_path / "store"
    r.mkdir()
    return r


@pytest.fixture(params=IMPLEMENTATIONS, ids=[f.__name__ for f in IMPLEMENTATIONS])
def store(request: pytest.FixtureRequest, root: Path) -> Iterator[Backend]:
    SERVERS["bucket"] = None
    if request.param is postgres_backend:
        SERVERS["pg"] = request.getfixturevalue("pg_cluster")
        SERVERS["s3"] = request.getfixturevalue("s3_server")
    backend = request.param(root)
    assert isinstance(backend, Backend)
    yield backend
    backend.close()


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., Path]:
    """Write bytes to a new file outside the store's folder; return its path."""
    src = tmp_path / "src"
    src.mkdir()
    count = itertools.count()

    def make(data: bytes, name: str = "data.bin") -> Path:
        path = src / f"{next(count)}-{name}"
        path.write_bytes(data)
        return path

    return make


def payload(tag: str = "") -> bytes:
    """Bytes that occur nowhere else: to find out whether any stored file still holds them."""
    return f"stepline-payload-{tag}-{os.urandom(16).hex()}\n".encode() * 3


class StoredObject:
    """An object in the test's bucket; read, written and deleted like a ``Path``."""

    def __init__(self, bucket: str, key: str) -> None:
        self.bucket, self.key = bucket, key

    def __repr__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def read_bytes(self) -> bytes:
        body = SERVERS["s3"].client().get_object(Bucket=self.bucket, Key=self.key)["Body"]
        return bytes(body.read())

    def write_bytes(self, data: bytes) -> None:
        SERVERS["s3"].client().put_object(Bucket=self.bucket, Key=self.key, Body=data)

    def unlink(self) -> None:
        SERVERS["s3"].client().delete_object(Bucket=self.bucket, Key=self.key)


def files_holding(root: Path, data: bytes) -> list[Any]:
    """Every file under ``root``, and every object in the test's bucket, holding ``data``."""
    found: list[Any] = [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]
    if SERVERS.get("bucket"):
        bucket = SERVERS["bucket"].removeprefix("s3://").split("/")[0]
        pages = SERVERS["s3"].client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for page in pages:
            for obj in page.get("Contents", []):
                stored = StoredObject(bucket, obj["Key"])
                if data in stored.read_bytes():
                    found.append(stored)
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_task(store: Backend, name: str = "task", project: str = "proj", **kw: Any) -> TaskRecord:
    return store.create_task(NewTask(name=name, project=project, **kw))


def artifact(task_id: str, name: str = "data", **kw: Any) -> ArtifactRecord:
    return ArtifactRecord(task_id=task_id, name=name, type="bytes", url="", hash="", size=0, **kw)


def found(store: Backend, **kw: Any) -> set[str]:
    kw.setdefault("archived", None)
    return {r.id for r in store.find_tasks(TaskFilter(**kw))}


# -- create / get ----------------------------------------------------------------------------


def test_create_task_keeps_everything_given(store: Backend) -> None:
    new = NewTask(
        name="train",
        project="proj",
        type=TaskTypes.training,
        comment="first try",
        tags=["b", "a", "b"],
        script={"entry_point": "train.py", "argv": ["--lr", "0.1"], "nested": {"k": 1}},
        params=[
            Param("Args", "lr", "0.1", "float", "learning rate"),
            Param("General", "n", "3", "int"),
        ],
        configs=[ConfigObject("model", "layers: 3", "yaml", "the model")],
        runtime={"host": "node-1", "gpus": "2"},
        user="ann",
    )
    rec = store.create_task(new)
    assert len(rec.id) > 0
    assert (rec.name, rec.project, rec.type, rec.comment, rec.user) == (
        "train",
        "proj",
        "training",
        "first try",
        "ann",
    )
    assert rec.status == TaskStatus.created
    assert rec.parent is None
    assert sorted(rec.tags) == ["a", "b"] and len(rec.tags) == 2
    assert rec.script == new.script
    assert rec.started is None and rec.completed is None
    assert not rec.archived and not rec.published
    assert store.get_task(rec.id) == rec
    assert sorted(store.get_params(rec.id), key=lambda p: p.key) == new.params
    assert store.get_configs(rec.id) == new.configs
    assert store.get_runtime(rec.id) == new.runtime


def test_create_task_with_explicit_id_and_parent(store: Backend) -> None:
    parent = new_task(store, "parent")
    rec = new_task(store, "child", id="a" * 32, parent=parent.id)
    assert rec.id == "a" * 32
    assert store.get_task("a" * 32).parent == parent.id


def test_create_task_in_progress_sets_started(store: Backend) -> None:
    before = time.time()
    rec = new_task(store, status=TaskStatus.in_progress)
    assert rec.status == TaskStatus.in_progress
    assert rec.started is not None and before <= rec.started <= time.time()
    assert store.get_task(rec.id).started == rec.started


def test_create_task_with_a_taken_id_is_a_conflict(store: Backend) -> None:
    first = new_task(store, "first", id="b" * 32, params=[Param("Args", "x", "1")])
    with pytest.raises(ConflictError) as exc:
        new_task(store, "second", id="b" * 32, params=[Param("Args", "x", "2")])
    assert "b" * 32 in str(exc.value)
    assert store.get_task(first.id) == first
    assert store.get_params(first.id) == [Param("Args", "x", "1")]


def test_failed_create_leaves_nothing_and_the_project_stays_usable(store: Backend) -> None:
    with pytest.raises(ValidationError):
        new_task(store, "bad", project="fresh/sub", params=[Param("a/b", "x", "1")])
    assert found(store, name="^bad$") == set()
    # the project the failed create would have made must not be half-known afterwards
    ok = new_task(store, "good", project="fresh/sub")
    assert store.get_task(ok.id).project == "fresh/sub"
    projects = store.list_projects()
    assert "fresh" in projects and "fresh/sub" in projects
    assert len(projects) == len(set(projects))


def test_get_unknown_task(store: Backend) -> None:
    with pytest.raises(TaskNotFoundError) as exc:
        store.get_task(UNKNOWN)
    assert exc.value.task_id == UNKNOWN
    assert UNKNOWN in str(exc.value)


# -- find_tasks ------------------------------------------------------------------------------


@pytest.fixture
def population(store: Backend) -> dict[str, TaskRecord]:
    """a, b, d in project p1 (d in p1/sub), c in p2; b is a's child; c is archived; d done."""
    a = new_task(store, "train-a", "p1", type=TaskTypes.training, tags=["x", "y"])
    b = new_task(store, "train-b", "p1", type=TaskTypes.testing, tags=["x"], parent=a.id)
    c = new_task(store, "eval-c", "p2", type=TaskTypes.training)
    d = new_task(store, "train-d", "p1/sub", tags=["y"])
    store.update_task(c.id, archived=True)
    store.set_status(d.id, TaskStatus.completed)
    return {"a": store.get_task(a.id), "b": b, "c": c, "d": d}


def ids_of(pop: dict[str, TaskRecord], keys: str) -> set[str]:
    return {pop[k].id for k in keys}


def test_find_returns_full_records(store: Backend, population: dict[str, TaskRecord]) -> None:
    a = population["a"]
    assert store.find_tasks(TaskFilter(ids=[a.id])) == [store.get_task(a.id)]


def test_find_by_ids(store: Backend, population: dict[str, TaskRecord]) -> None:
    p = population
    assert found(store, ids=[p["a"].id, p["c"].id]) == ids_of(p, "ac")
    assert found(store, ids=[p["b"].id, UNKNOWN]) == ids_of(p, "b")
    assert found(store, ids=[]) == set()


def test_find_by_project(store: Backend, population: dict[str, TaskRecord]) -> None:
    assert found(store, project="p1") == ids_of(population, "ab")
    assert found(store, project="p1/sub") == ids_of(population, "d")
    assert found(store, project="p2") == ids_of(population, "c")
    assert found(store, project="nowhere") == set()


def test_find_by_name_regex(store: Backend, population: dict[str, TaskRecord]) -> None:
    assert found(store, name="^train-[ab]$") == ids_of(population, "ab")
    assert found(store, name="eval") == ids_of(population, "c")
    assert found(store, name="-d$") == ids_of(population, "d")
    assert found(store, name="^nothing") == set()


def test_find_by_tags(store: Backend, population: dict[str, TaskRecord]) -> None:
    p = population
    assert found(store, tags=["x"]) == ids_of(p, "ab")
    assert found(store, tags=["x", "y"]) == ids_of(p, "a")
    assert found(store, tags=["x", "-y"]) == ids_of(p, "b")
    assert found(store, tags=["-x"]) == ids_of(p, "cd")
    assert found(store, tags=["-x", "-y"]) == ids_of(p, "c")
    assert found(store, tags=["nope"]) == set()


def test_find_by_status(store: Backend, population: dict[str, TaskRecord]) -> None:
    p = population
    assert found(store, status=[TaskStatus.completed]) == ids_of(p, "d")
    assert found(store, status=[TaskStatus.created]) == ids_of(p, "abc")
    assert found(store, status=[TaskStatus.created, TaskStatus.completed]) == ids_of(p, "abcd")
    assert found(store, status=[TaskStatus.failed]) == set()


def test_find_by_type(store: Backend, population: dict[str, TaskRecord]) -> None:
    p = population
    assert found(store, type=[TaskTypes.training]) == ids_of(p, "ac")
    assert found(store, type=["testing"]) == ids_of(p, "b")
    assert found(store, type=["testing", "custom"]) == ids_of(p, "bd")
    assert found(store, type=["qc"]) == set()


def test_find_by_parent(store: Backend, population: dict[str, TaskRecord]) -> None:
    assert found(store, parent=population["a"].id) == ids_of(population, "b")
    assert found(store, parent=population["b"].id) == set()


def test_find_by_archived(store: Backend, population: dict[str, TaskRecord]) -> None:
    p = population
    assert {r.id for r in store.find_tasks(TaskFilter())} == ids_of(p, "abd")  # default hides
    assert found(store, archived=False) == ids_of(p, "abd")
    assert found(store, archived=True) == ids_of(p, "c")
    assert found(store, archived=None) == ids_of(p, "abcd")


def test_find_with_several_fields_narrows(
    store: Backend, population: dict[str, TaskRecord]
) -> None:
    p = population
    assert found(store, project="p1", tags=["x"], type=["training"]) == ids_of(p, "a")
    assert found(store, project="p1", status=[TaskStatus.completed]) == set()


def test_find_order_by(store: Backend, population: dict[str, TaskRecord]) -> None:
    names = ["eval-c", "train-a", "train-b", "train-d"]

    def names_by(order: str, **kw: Any) -> list[str]:
        return [r.name for r in store.find_tasks(TaskFilter(archived=None, order_by=order, **kw))]

    assert names_by("name") == names
    assert names_by("+name") == names
    assert names_by("-name") == names[::-1]
    assert names_by("name", limit=2) == names[:2]
    assert names_by("-name", limit=1) == names[-1:]
    newest_first = [r.created for r in store.find_tasks(TaskFilter(archived=None))]
    assert len(newest_first) == 4 and newest_first == sorted(newest_first, reverse=True)
    oldest_first = store.find_tasks(TaskFilter(archived=None, order_by="created"))
    assert [r.created for r in oldest_first] == sorted(newest_first)
    statuses = [r.status.value for r in store.find_tasks(TaskFilter(order_by="-status"))]
    assert statuses == sorted(statuses, reverse=True) and "completed" in statuses


@pytest.mark.parametrize("order", ["bogus", "-nope", "id; DROP TABLE tasks", ""])
def test_find_invalid_order_by(
    store: Backend, population: dict[str, TaskRecord], order: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        store.find_tasks(TaskFilter(order_by=order))
    assert repr(order) in str(exc.value)
    assert len(store.find_tasks(TaskFilter(archived=None))) == 4


# -- update_task -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", "renamed", "renamed"),
        ("comment", "a new comment", "a new comment"),
        ("type", TaskTypes.data_processing, "data_processing"),
        (
            "script",
            {"entry_point": "other.py", "argv": []},
            {"entry_point": "other.py", "argv": []},
        ),
        ("archived", True, True),
        ("published", True, True),
        ("parent", "OTHER", "OTHER"),
        ("parent", None, None),
    ],
)
def test_update_task_changes_one_field(
    store: Backend, field: str, value: Any, expected: Any
) -> None:
    other = new_task(store, "other")
    value = other.id if value == "OTHER" else value
    expected = other.id if expected == "OTHER" else expected
    rec = new_task(
        store,
        "orig",
        type=TaskTypes.training,
        comment="c",
        script={"entry_point": "x.py"},
        tags=["t"],
        parent=other.id if value is None else None,
    )
    before = store.get_task(rec.id)
    after = store.update_task(rec.id, **{field: value})
    assert after == dataclasses.replace(before, **{field: expected}, last_update=after.last_update)
    assert after.last_update >= before.last_update
    assert store.get_task(rec.id) == after


def test_update_task_keep_leaves_fields_alone(store: Backend) -> None:
    rec = new_task(store, "orig", comment="c", script={"a": 1}, type="training")
    before = store.get_task(rec.id)
    after = store.update_task(rec.id, name=KEEP, comment="changed", script=KEEP, project=KEEP)
    assert after == dataclasses.replace(before, comment="changed", last_update=after.last_update)
    nothing = store.update_task(rec.id)
    assert nothing == dataclasses.replace(after, last_update=nothing.last_update)


def test_update_task_moves_project_creating_it(store: Backend) -> None:
    rec = new_task(store, "mover", project="old")
    assert "new" not in store.list_projects()
    after = store.update_task(rec.id, project="new/deeper")
    assert after.project == "new/deeper"
    assert after.project_id != rec.project_id
    assert store.get_task(rec.id).project == "new/deeper"
    assert {"new", "new/deeper", "old"} <= set(store.list_projects())
    assert found(store, project="new/deeper") == {rec.id}
    assert found(store, project="old") == set()


def test_update_unknown_task(store: Backend) -> None:
    with pytest.raises(TaskNotFoundError) as exc:
        store.update_task(UNKNOWN, name="x")
    assert UNKNOWN in str(exc.value)


# -- set_status ------------------------------------------------------------------------------


def _task_in(store: Backend, status: TaskStatus, name: str = "t") -> TaskRecord:
    rec = new_task(store, name)
    if status != TaskStatus.created:
        rec = store.set_status(rec.id, status, force=True)
    assert rec.status == status
    return rec


@pytest.mark.parametrize("target", list(ALLOWED_FROM), ids=str)
def test_set_status_follows_allowed_from(store: Backend, target: TaskStatus) -> None:
    allowed = ALLOWED_FROM[target]
    for source in TaskStatus:
        rec = _task_in(store, source, f"{source.value}->{target.value}")
        if source in allowed:
            moved = store.set_status(rec.id, target, message="msg", reason="why")
            assert moved.status == target
            assert (moved.status_message, moved.status_reason) == ("msg", "why")
            assert store.get_task(rec.id) == moved
        else:
            before = store.get_task(rec.id)
            with pytest.raises(InvalidTransitionError) as exc:
                store.set_status(rec.id, target, message="msg")
            err = exc.value
            assert (err.task_id, err.old, err.new) == (rec.id, source.value, target.value)
            assert rec.id in str(err)
            assert store.get_task(rec.id) == before


@pytest.mark.parametrize("target", [s for s in TaskStatus if s not in ALLOWED_FROM], ids=str)
def test_set_status_to_a_flag_status_is_refused(store: Backend, target: TaskStatus) -> None:
    rec = _task_in(store, TaskStatus.in_progress)
    before = store.get_task(rec.id)
    with pytest.raises(ValidationError) as exc:
        store.set_status(rec.id, target)
    assert rec.id in str(exc.value)
    assert store.get_task(rec.id) == before


def test_set_status_force_bypasses_the_check(store: Backend) -> None:
    rec = _task_in(store, TaskStatus.completed)
    assert TaskStatus.completed not in ALLOWED_FROM[TaskStatus.in_progress]
    moved = store.set_status(rec.id, TaskStatus.in_progress, force=True)
    assert moved.status == TaskStatus.in_progress
    assert store.get_task(rec.id).status == TaskStatus.in_progress
    published = store.set_status(rec.id, TaskStatus.published, force=True)
    assert published.status == TaskStatus.published


def test_set_status_timestamps(store: Backend) -> None:
    rec = new_task(store)
    t0 = time.time()
    running = store.set_status(rec.id, TaskStatus.in_progress)
    t1 = time.time()
    assert running.started is not None and t0 <= running.started <= t1
    assert running.completed is None
    done = store.set_status(rec.id, TaskStatus.completed)
    t2 = time.time()
    assert done.started == running.started
    assert done.completed is not None and t1 <= done.completed <= t2
    reset = store.set_status(rec.id, TaskStatus.created)
    assert reset.started is None and reset.completed is None
    assert store.get_task(rec.id) == reset


@pytest.mark.parametrize("final", sorted(FINAL), ids=str)
def test_every_final_status_sets_completed(store: Backend, final: TaskStatus) -> None:
    rec = _task_in(store, TaskStatus.in_progress)
    t0 = time.time()
    done = store.set_status(rec.id, final)
    assert done.completed is not None and t0 <= done.completed <= time.time()
    assert done.started == rec.started


@pytest.mark.parametrize("force", [False, True])
def test_set_status_of_unknown_task(store: Backend, force: bool) -> None:
    with pytest.raises(TaskNotFoundError) as exc:
        store.set_status(UNKNOWN, TaskStatus.in_progress, force=force)
    assert UNKNOWN in str(exc.value)


# -- clone_task ------------------------------------------------------------------------------


def test_clone_copies_inputs_not_outputs(store: Backend, make_file: Callable[..., Path]) -> None:
    src = new_task(
        store,
        "source",
        project="proj",
        type=TaskTypes.training,
        comment="orig comment",
        tags=["t1", "t2"],
        script={"entry_point": "train.py", "argv": ["--x"]},
        params=[Param("Args", "lr", "0.1", "float", "rate"), Param("Args", "n", "2", "int")],
        configs=[ConfigObject("cfg", "a: 1", "yaml")],
    )
    store.set_status(src.id, TaskStatus.in_progress)
    store.put_artifact(artifact(src.id), str(make_file(payload("clone"))))
    store.add_scalars([ScalarPoint(src.id, "loss", "train", 0, 1.0)])
    store.add_log([LogLine(src.id, "hello")])
    store.add_events([Event(src.id, "text", "t", "s", 0, "some text")])
    store.set_status(src.id, TaskStatus.completed)
    source_before = store.get_task(src.id)

    clone = store.clone_task(src.id)
    assert clone.id != src.id
    assert clone.status == TaskStatus.created
    assert clone.started is None and clone.completed is None
    assert (clone.name, clone.project, clone.type, clone.comment) == (
        "source",
        "proj",
        "training",
        "orig comment",
    )
    assert clone.parent == src.id
    assert sorted(clone.tags) == ["t1", "t2"]
    assert clone.script == src.script
    assert store.get_params(clone.id) == store.get_params(src.id)
    assert len(store.get_params(clone.id)) == 2
    assert store.get_configs(clone.id) == [ConfigObject("cfg", "a: 1", "yaml")]
    assert store.get_artifacts(clone.id) == []
    assert store.get_scalars(clone.id) == []
    assert store.get_last_scalars(clone.id) == {}
    assert store.get_log(clone.id) == []
    assert store.get_events(clone.id) == []
    assert store.get_task(clone.id) == clone
    # the source is untouched, and the two are independent from now on
    assert store.get_task(src.id) == source_before
    assert len(store.get_artifacts(src.id)) == 1
    store.set_params(clone.id, [Param("Args", "lr", "0.5", "float")])
    assert Param("Args", "lr", "0.1", "float", "rate") in store.get_params(src.id)


def test_clone_with_overrides(store: Backend) -> None:
    src = new_task(store, "source", project="proj", comment="c")
    other = new_task(store, "other")
    clone = store.clone_task(
        src.id, name="copy", project="elsewhere/deep", comment="cloned", parent=other.id
    )
    assert (clone.name, clone.project, clone.comment, clone.parent) == (
        "copy",
        "elsewhere/deep",
        "cloned",
        other.id,
    )
    assert {"elsewhere", "elsewhere/deep"} <= set(store.list_projects())
    assert store.get_task(clone.id) == clone


def test_clone_unknown_task(store: Backend) -> None:
    with pytest.raises(TaskNotFoundError) as exc:
        store.clone_task(UNKNOWN)
    assert UNKNOWN in str(exc.value)
    assert found(store) == set()


# -- delete_task -----------------------------------------------------------------------------


def _full_task(
    store: Backend, make_file: Callable[..., Path], name: str
) -> tuple[TaskRecord, bytes]:
    data = payload(name)
    rec = new_task(
        store,
        name,
        tags=["t"],
        params=[Param("Args", "x", "1")],
        configs=[ConfigObject("c", "v")],
        runtime={"k": "v"},
    )
    store.put_artifact(artifact(rec.id), str(make_file(data)))
    store.put_artifact(artifact(rec.id, "second"), str(make_file(data + b"2")))
    store.add_scalars([ScalarPoint(rec.id, "loss", "train", i, float(i)) for i in range(3)])
    store.add_log([LogLine(rec.id, f"{name} line")])
    store.add_events([Event(rec.id, "text", "t", "s", 0, "x")])
    store.add_model(ModelRecord(id="", task_id=rec.id, name="m", url="file:///nowhere"))
    return rec, data


def test_delete_task_removes_records_and_files(
    store: Backend, root: Path, make_file: Callable[..., Path]
) -> None:
    gone, gone_data = _full_task(store, make_file, "gone")
    kept, kept_data = _full_task(store, make_file, "kept")
    gone_artifacts = store.get_artifacts(gone.id)
    reads = (
        store.get_task,
        store.get_params,
        store.get_artifacts,
        store.get_scalars,
        store.get_log,
        store.get_events,
        store.get_models,
    )
    kept_before = [read(kept.id) for read in reads]
    assert files_holding(root, gone_data) != []

    store.delete_task(gone.id)

    for call in (store.get_task, store.get_params, store.get_configs, store.get_runtime):
        with pytest.raises(TaskNotFoundError):
            call(gone.id)
    for read in (
        store.get_artifacts,
        store.get_scalars,
        store.get_last_scalars,
        store.get_log,
        store.count_log,
        store.get_events,
        store.get_models,
    ):
        with pytest.raises(TaskNotFoundError, match=gone.id):
            read(gone.id)
    assert found(store) == {kept.id}
    assert files_holding(root, gone_data) == []
    for rec in gone_artifacts:
        with pytest.raises(ArtifactNotFoundError):
            store.artifact_local_path(rec)
    # the other task is untouched, bytes included
    assert kept_before == [read(kept.id) for read in reads]
    kept_art = {a.name: a for a in store.get_artifacts(kept.id)}["data"]
    assert Path(store.artifact_local_path(kept_art, verify=True)).read_bytes() == kept_data


def test_delete_unknown_task(store: Backend) -> None:
    other = new_task(store)
    with pytest.raises(TaskNotFoundError) as exc:
        store.delete_task(UNKNOWN)
    assert UNKNOWN in str(exc.value)
    assert found(store) == {other.id}


# -- tags ------------------------------------------------------------------------------------


def test_set_tags_replaces_them(store: Backend) -> None:
    rec = new_task(store, tags=["old"])
    store.set_tags(rec.id, ["b", "a", "b"])
    tags = store.get_task(rec.id).tags
    assert sorted(tags) == ["a", "b"] and len(tags) == 2
    assert found(store, tags=["old"]) == set()
    assert found(store, tags=["a", "b"]) == {rec.id}
    store.set_tags(rec.id, [])
    assert store.get_task(rec.id).tags == []


# -- parameters, configuration objects, runtime properties -----------------------------------


def _params(store: Backend, task_id: str) -> dict[str, Param]:
    return {p.key: p for p in store.get_params(task_id)}


def test_set_params_upserts(store: Backend) -> None:
    rec = new_task(
        store, params=[Param("Args", "lr", "0.1", "float"), Param("Args", "n", "3", "int")]
    )
    store.set_params(
        rec.id,
        [Param("Args", "lr", "0.2", "float", "now described"), Param("New", "x", "[1, 2]", "list")],
    )
    assert _params(store, rec.id) == {
        "Args/lr": Param("Args", "lr", "0.2", "float", "now described"),
        "Args/n": Param("Args", "n", "3", "int"),
        "New/x": Param("New", "x", "[1, 2]", "list"),
    }


def test_set_params_replace(store: Backend) -> None:
    rec = new_task(store, params=[Param("Args", "lr", "0.1"), Param("Args", "n", "3")])
    store.set_params(rec.id, [Param("Only", "k", "v")], replace=True)
    assert store.get_params(rec.id) == [Param("Only", "k", "v")]
    store.set_params(rec.id, [], replace=True)
    assert store.get_params(rec.id) == []


def test_delete_params(store: Backend) -> None:
    rec = new_task(
        store,
        params=[Param("Args", "lr", "0.1"), Param("Args", "n", "3"), Param("Other", "lr", "9")],
    )
    store.delete_params(rec.id, ["Args/lr", "Missing/key"])
    assert set(_params(store, rec.id)) == {"Args/n", "Other/lr"}


@pytest.mark.parametrize(
    "bad", [Param("a/b", "x", "1"), Param("", "x", "1"), Param("Args", "", "1")], ids=repr
)
def test_bad_params_are_refused_whole(store: Backend, bad: Param) -> None:
    rec = new_task(store, params=[Param("Args", "keep", "1")])
    with pytest.raises(ValidationError) as exc:
        store.set_params(rec.id, [Param("Args", "new", "2"), bad])
    assert rec.id in str(exc.value)
    assert store.get_params(rec.id) == [Param("Args", "keep", "1")]
    with pytest.raises(ValidationError):
        store.set_params(rec.id, [bad], replace=True)
    assert store.get_params(rec.id) == [Param("Args", "keep", "1")]


def test_params_are_per_task(store: Backend) -> None:
    a = new_task(store, "a", params=[Param("Args", "x", "a")])
    b = new_task(store, "b", params=[Param("Args", "x", "b")])
    store.set_params(a.id, [Param("Args", "y", "a")], replace=True)
    assert store.get_params(b.id) == [Param("Args", "x", "b")]


def test_configs_upsert(store: Backend) -> None:
    rec = new_task(store, configs=[ConfigObject("a", "1"), ConfigObject("b", "2", "json")])
    store.set_configs(rec.id, [ConfigObject("a", "changed", "yaml", "d"), ConfigObject("c", "3")])
    assert sorted(store.get_configs(rec.id), key=lambda c: c.name) == [
        ConfigObject("a", "changed", "yaml", "d"),
        ConfigObject("b", "2", "json"),
        ConfigObject("c", "3"),
    ]


def test_runtime_upsert(store: Backend) -> None:
    rec = new_task(store, runtime={"a": "1", "b": "2"})
    store.set_runtime(rec.id, {"a": "changed", "c": "3"})
    assert store.get_runtime(rec.id) == {"a": "changed", "b": "2", "c": "3"}
    other = new_task(store, "other")
    assert store.get_runtime(other.id) == {}


# -- artifacts -------------------------------------------------------------------------------


def test_put_artifact_records_hash_and_size(store: Backend, make_file: Callable[..., Path]) -> None:
    rec = new_task(store)
    data = payload("put")
    src = make_file(data, "data.bin")
    given = artifact(
        rec.id,
        "dataset",
        preview="3 lines",
        metadata={"rows": 3, "cols": ["a"]},
        content_type="application/octet-stream",
        mode="input",
    )
    t0 = time.time()
    stored = store.put_artifact(given, str(src))
    assert stored.hash == sha256(data)
    assert stored.size == len(data)
    assert stored.url != ""
    assert t0 <= stored.created <= time.time()
    assert dataclasses.replace(stored, url="", hash="", size=0, created=0.0) == given
    assert store.get_artifacts(rec.id) == [stored]
    for verify in (None, True, False):
        assert Path(store.artifact_local_path(stored, verify=verify)).read_bytes() == data
    assert src.read_bytes() == data  # move=False leaves the file alone


def test_put_artifact_move_consumes_the_file(
    store: Backend, make_file: Callable[..., Path]
) -> None:
    rec = new_task(store)
    data = payload("move")
    src = make_file(data)
    stored = store.put_artifact(artifact(rec.id), str(src), move=True)
    assert not src.exists()
    assert stored.hash == sha256(data)
    assert Path(store.artifact_local_path(stored)).read_bytes() == data


def test_put_artifact_replaces_and_deletes_the_old_file(
    store: Backend, root: Path, make_file: Callable[..., Path]
) -> None:
    rec = new_task(store)
    old_data, new_data = payload("old"), payload("new-and-longer")
    old = store.put_artifact(artifact(rec.id), str(make_file(old_data)))
    assert len(files_holding(root, old_data)) == 1
    new = store.put_artifact(artifact(rec.id), str(make_file(new_data)))
    assert store.get_artifacts(rec.id) == [new]
    assert new.hash == sha256(new_data) and new.size == len(new_data)
    assert files_holding(root, old_data) == []
    with pytest.raises(ArtifactNotFoundError):
        store.artifact_local_path(old)
    assert Path(store.artifact_local_path(new)).read_bytes() == new_data


def test_artifacts_with_the_same_name_on_two_tasks(
    store: Backend, make_file: Callable[..., Path]
) -> None:
    a, b = new_task(store, "a"), new_task(store, "b")
    da, db = payload("a"), payload("b")
    ra = store.put_artifact(artifact(a.id), str(make_file(da)))
    rb = store.put_artifact(artifact(b.id), str(make_file(db)))
    store.delete_artifact(a.id, "data")
    assert store.get_artifacts(a.id) == []
    assert store.get_artifacts(b.id) == [rb]
    assert Path(store.artifact_local_path(rb)).read_bytes() == db
    with pytest.raises(ArtifactNotFoundError):
        store.artifact_local_path(ra)


@pytest.mark.parametrize(
    "name",
    ["my data é", "x" * 255, "%20 #frag ?q=1", "ü" * 120],
    ids=["spaces-accents", "longest-allowed", "url-specials", "long-multibyte"],
)
def test_artifact_names_that_are_safe_work(
    store: Backend, make_file: Callable[..., Path], name: str
) -> None:
    rec = new_task(store)
    data = payload("safe")
    stored = store.put_artifact(artifact(rec.id, name), str(make_file(data)))
    assert [a.name for a in store.get_artifacts(rec.id)] == [name]
    assert Path(store.artifact_local_path(stored, verify=True)).read_bytes() == data
    replaced = store.put_artifact(artifact(rec.id, name), str(make_file(data + b"v2")))
    assert Path(store.artifact_local_path(replaced)).read_bytes() == data + b"v2"
    with pytest.raises(ArtifactNotFoundError):
        store.artifact_local_path(stored)


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "..", "", ".", "a\\b", " x"])
def test_unsafe_artifact_names_store_nothing(
    store: Backend, root: Path, make_file: Callable[..., Path], name: str
) -> None:
    rec = new_task(store)
    data = payload("unsafe")
    src = make_file(data)
    with pytest.raises(UnsafePathError) as exc:
        store.put_artifact(artifact(rec.id, name), str(src), move=True)
    assert rec.id in str(exc.value)
    assert store.get_artifacts(rec.id) == []
    assert files_holding(root, data) == []
    assert files_holding(root.parent, data) == [src]


def test_put_artifact_of_a_missing_file(store: Backend, root: Path, tmp_path: Path) -> None:
    rec = new_task(store)
    with pytest.raises(ArtifactNotFoundError) as exc:
        store.put_artifact(artifact(rec.id), str(tmp_path / "no-such-file.bin"))
    assert rec.id in str(exc.value)
    assert store.get_artifacts(rec.id) == []


def test_put_artifact_on_unknown_task_leaves_no_file(
    store: Backend, root: Path, make_file: Callable[..., Path]
) -> None:
    data = payload("orphan")
    src = make_file(data)
    with pytest.raises(TaskNotFoundError) as exc:
        store.put_artifact(artifact(UNKNOWN), str(src), move=True)
    assert UNKNOWN in str(exc.value)
    assert files_holding(root, data) == []
    assert src.read_bytes() == data


def test_artifact_whose_file_is_gone(
    store: Backend, root: Path, make_file: Callable[..., Path]
) -> None:
    rec = new_task(store)
    data = payload("gone")
    stored = store.put_artifact(artifact(rec.id), str(make_file(data)))
    store.artifact_local_path(stored)
    for path in files_holding(root, data):  # the stored bytes and any cached copy
        path.unlink()
    with pytest.raises(ArtifactNotFoundError) as exc:
        store.artifact_local_path(stored)
    assert rec.id in str(exc.value)


def _tamper(path: Any, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        data = data[:-5]
    elif how == "appended":
        data = data + b"x"
    else:  # same size, one byte changed
        data = data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]
    path.write_bytes(data)


@pytest.mark.parametrize("how", ["truncated", "appended", "altered"])
def test_corrupt_artifact_is_detected(
    store: Backend, root: Path, make_file: Callable[..., Path], how: str
) -> None:
    rec = new_task(store)
    data = payload("corrupt")
    stored = store.put_artifact(artifact(rec.id), str(make_file(data)))
    store.artifact_local_path(stored)
    copies = files_holding(root, data)  # the stored bytes and any cached copy
    assert copies
    for path in copies:
        _tamper(path, how)
    for verify in (None, True):
        with pytest.raises(ArtifactCorruptError) as exc:
            store.artifact_local_path(stored, verify=verify)
        assert rec.id in str(exc.value)


def test_delete_artifact(store: Backend, root: Path, make_file: Callable[..., Path]) -> None:
    rec = new_task(store)
    data = payload("del")
    keep = store.put_artifact(artifact(rec.id, "keep"), str(make_file(payload("keep"))))
    store.put_artifact(artifact(rec.id, "drop"), str(make_file(data)))
    store.delete_artifact(rec.id, "drop")
    assert store.get_artifacts(rec.id) == [keep]
    assert files_holding(root, data) == []
    with pytest.raises(ArtifactNotFoundError) as exc:
        store.delete_artifact(rec.id, "drop")
    assert rec.id in str(exc.value)


# -- models ----------------------------------------------------------------------------------


def test_models(store: Backend) -> None:
    rec = new_task(store)
    t0 = time.time()
    first = store.add_model(
        ModelRecord(
            id="",
            task_id=rec.id,
            name="net",
            url="s3://bucket/net.pt",
            framework="pytorch",
            metadata={"epochs": 3},
        )
    )
    assert first.id != "" and t0 <= first.created <= time.time()
    given = ModelRecord(
        id="m" * 32, task_id=rec.id, name="in", url="file:///m", mode="input", created=5.0
    )
    second = store.add_model(given)
    assert second == given
    assert store.get_models(rec.id) == [second, first]  # oldest first
    other = new_task(store, "other")
    assert store.get_models(other.id) == []


# -- scalars, events, log --------------------------------------------------------------------


def test_scalars_and_filters(store: Backend) -> None:
    rec, other = new_task(store, "a"), new_task(store, "b")
    points = [
        ScalarPoint(rec.id, "loss", "train", i, v, 1000.0 + i)
        for i, v in enumerate([3.0, 1.0, 4.0, 1.5, 5.0])
    ]
    points += [ScalarPoint(rec.id, "loss", "val", i, 10.0 - i, 2000.0) for i in range(3)]
    points += [ScalarPoint(rec.id, "acc", "train", 7, 0.5, 3000.0)]
    store.add_scalars(points[:4])
    store.add_scalars([ScalarPoint(other.id, "loss", "train", 0, 99.0, 1.0)])
    store.add_scalars(points[4:])

    def key(p: ScalarPoint) -> tuple[str, str, int]:
        return (p.title, p.series, p.iteration)

    assert sorted(store.get_scalars(rec.id), key=key) == sorted(points, key=key)
    loss = [p for p in points if p.title == "loss"]
    assert sorted(store.get_scalars(rec.id, title="loss"), key=key) == sorted(loss, key=key)
    train = [p for p in points if p.series == "train"]
    assert sorted(store.get_scalars(rec.id, series="train"), key=key) == sorted(train, key=key)
    assert store.get_scalars(rec.id, title="loss", series="val") == points[5:8]
    assert store.get_scalars(rec.id, title="nope") == []
    assert store.get_scalars(other.id) == [ScalarPoint(other.id, "loss", "train", 0, 99.0, 1.0)]


def test_scalar_timestamp_defaults_to_now(store: Backend) -> None:
    rec = new_task(store)
    t0 = time.time()
    store.add_scalars([ScalarPoint(rec.id, "t", "s", 0, 1.0)])
    (point,) = store.get_scalars(rec.id)
    assert t0 <= point.timestamp <= time.time()


def test_last_scalars(store: Backend) -> None:
    rec = new_task(store)
    store.add_scalars(
        [ScalarPoint(rec.id, "loss", "train", i, v) for i, v in enumerate([3.0, 1.0, 4.0, 1.5])]
    )
    store.add_scalars([ScalarPoint(rec.id, "loss", "train", 4, 2.5)])
    store.add_scalars([ScalarPoint(rec.id, "loss", "val", i, -float(i)) for i in range(3)])
    store.add_scalars([ScalarPoint(rec.id, "acc", "top1", 10, 0.75)])
    assert store.get_last_scalars(rec.id) == {
        "loss": {
            "train": {"last": 2.5, "min": 1.0, "max": 4.0, "iteration": 4},
            "val": {"last": -2.0, "min": -2.0, "max": 0.0, "iteration": 2},
        },
        "acc": {"top1": {"last": 0.75, "min": 0.75, "max": 0.75, "iteration": 10}},
    }
    assert store.get_last_scalars(new_task(store, "empty").id) == {}


def test_events(store: Backend) -> None:
    rec, other = new_task(store, "a"), new_task(store, "b")
    evs = [
        Event(rec.id, "text", "notes", "s", 0, "hello", 10.0),
        Event(rec.id, "table", "tbl", "s", 1, '{"a": [1, 2]}', 11.0),
        Event(rec.id, "text", "notes", "s", 2, "again", 12.0),
    ]
    store.add_events(evs[:2])
    store.add_events([Event(other.id, "text", "notes", "s", 0, "other", 1.0)])
    store.add_events(evs[2:])
    assert store.get_events(rec.id) == evs
    assert store.get_events(rec.id, kind="text") == [evs[0], evs[2]]
    assert store.get_events(rec.id, kind="plot") == []
    assert [e.payload for e in store.get_events(other.id)] == ["other"]


def test_log_order_after_and_limit(store: Backend) -> None:
    rec, other = new_task(store, "a"), new_task(store, "b")
    texts = [f"line {i}" for i in range(6)]
    for i, text in enumerate(texts):
        level = "error" if i == 3 else "info"
        store.add_log([LogLine(rec.id, text, level, 100.0 + i), LogLine(other.id, f"other {i}")])
    lines = store.get_log(rec.id)
    assert [ln.text for ln in lines] == texts
    assert [ln.level for ln in lines] == ["info"] * 3 + ["error"] + ["info"] * 2
    assert [ln.timestamp for ln in lines] == [100.0 + i for i in range(6)]
    assert {ln.task_id for ln in lines} == {rec.id}
    seqs = [ln.seq for ln in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6 and seqs[0] > 0
    assert [ln.text for ln in store.get_log(rec.id, after=seqs[1])] == texts[2:]
    assert [ln.text for ln in store.get_log(rec.id, limit=2)] == texts[:2]
    assert [ln.text for ln in store.get_log(rec.id, after=seqs[2], limit=2)] == texts[3:5]
    assert store.get_log(rec.id, after=seqs[-1]) == []
    assert store.get_log(rec.id, limit=0) == []
    # one call with many lines keeps their order too
    store.add_log([LogLine(rec.id, f"batch {i}") for i in range(50)])
    assert [ln.text for ln in store.get_log(rec.id, after=seqs[-1])] == [
        f"batch {i}" for i in range(50)
    ]


def test_log_timestamp_defaults_to_now(store: Backend) -> None:
    rec = new_task(store)
    t0 = time.time()
    store.add_log([LogLine(rec.id, "x")])
    (line,) = store.get_log(rec.id)
    assert t0 <= line.timestamp <= time.time()


# -- projects and queues ---------------------------------------------------------------------


def test_nested_project_creates_ancestors(store: Backend) -> None:
    assert store.list_projects() == []
    rec = new_task(store, project="a/b/c")
    assert rec.project == "a/b/c"
    new_task(store, project="a/b")
    new_task(store, project="a/x")
    assert sorted(store.list_projects()) == ["a", "a/b", "a/b/c", "a/x"]
    assert len(store.list_projects()) == 4


SEEDED = {"default", "services"}


def _own(queues: list[QueueRecord]) -> list[QueueRecord]:
    """The queues a test made: every home starts with ``default`` and ``services``."""
    return sorted((q for q in queues if q.name not in SEEDED), key=lambda r: r.name)


def test_queues(store: Backend) -> None:
    assert {q.name for q in store.get_queues()} == SEEDED
    t0 = time.time()
    q = store.create_queue("gpu")
    assert q.name == "gpu" and q.id != "" and t0 <= q.created <= time.time()
    again = store.create_queue("gpu")
    assert again == q
    cpu = store.create_queue("cpu")
    assert _own(store.get_queues()) == [cpu, q]
    store.delete_queue("gpu")
    assert _own(store.get_queues()) == [cpu]
    with pytest.raises(NotFoundError) as exc:
        store.delete_queue("gpu")
    assert "gpu" in str(exc.value)


@pytest.mark.parametrize("name", ["a/b", "..", ""])
def test_unsafe_queue_names(store: Backend, name: str) -> None:
    with pytest.raises(UnsafePathError):
        store.create_queue(name)
    assert _own(store.get_queues()) == []


# -- every call on an unknown task names it -------------------------------------------------

CALLS_ON_UNKNOWN: dict[str, Callable[[Backend, str], Any]] = {
    "get_task": lambda s, i: s.get_task(i),
    "update_task": lambda s, i: s.update_task(i, comment="x"),
    "set_status": lambda s, i: s.set_status(i, TaskStatus.completed),
    "clone_task": lambda s, i: s.clone_task(i),
    "delete_task": lambda s, i: s.delete_task(i),
    "set_tags": lambda s, i: s.set_tags(i, ["x"]),
    "set_params": lambda s, i: s.set_params(i, [Param("A", "b", "c")]),
    "get_params": lambda s, i: s.get_params(i),
    "delete_params": lambda s, i: s.delete_params(i, ["A/b"]),
    "set_configs": lambda s, i: s.set_configs(i, [ConfigObject("a", "b")]),
    "get_configs": lambda s, i: s.get_configs(i),
    "set_runtime": lambda s, i: s.set_runtime(i, {"a": "b"}),
    "get_runtime": lambda s, i: s.get_runtime(i),
    "get_artifacts": lambda s, i: s.get_artifacts(i),
    "add_model": lambda s, i: s.add_model(ModelRecord(id="", task_id=i, name="m", url="u")),
}


@pytest.mark.parametrize("call", list(CALLS_ON_UNKNOWN))
def test_unknown_task_is_named(store: Backend, call: str) -> None:
    with pytest.raises(TaskNotFoundError) as exc:
        CALLS_ON_UNKNOWN[call](store, UNKNOWN)
    assert exc.value.task_id == UNKNOWN
    assert UNKNOWN in str(exc.value)
    assert found(store) == set()


def test_delete_artifact_of_unknown_task_is_named(store: Backend) -> None:
    with pytest.raises(NotFoundError) as exc:
        store.delete_artifact(UNKNOWN, "data")
    assert UNKNOWN in str(exc.value)


# -- SqlBackend only, until the Protocol has a call that enqueues a task --------------------


def test_sql_delete_of_a_queue_holding_tasks_is_refused(tmp_path: Path) -> None:
    import sqlite3

    root = tmp_path / "sql"
    store = sqlite_backend(root)
    try:
        queue = store.create_queue("busy")
        rec = store.create_task(NewTask(name="waiting", project="p"))
        store.set_status(rec.id, TaskStatus.queued)
        db = sqlite3.connect(root / "stepline.db")
        with db:
            db.execute(
                "INSERT INTO queue_entries (task_id, queue_id, priority, enqueued) "
                "VALUES (?, ?, 0, 0.0)",
                (rec.id, queue.id),
            )
        db.close()
        with pytest.raises(ConflictError) as exc:
            store.delete_queue("busy")
        assert "busy" in str(exc.value) and "1 task" in str(exc.value)
        assert _own(store.get_queues()) == [dataclasses.replace(queue, pending=1)]
        # leaving the queued status takes the task off the queue; then the queue can go
        store.set_status(rec.id, TaskStatus.in_progress)
        store.delete_queue("busy")
        assert _own(store.get_queues()) == []
    finally:
        store.close()


def test_batched_reports_for_an_unknown_task_write_nothing(store: Backend) -> None:
    task = store.create_task(NewTask(name="t", project="p"))
    for add, item in (
        (store.add_scalars, lambda tid: ScalarPoint(tid, "m", "s", 0, 1.0)),
        (store.add_log, lambda tid: LogLine(tid, "text")),
        (store.add_events, lambda tid: Event(tid, "text", "t", "s", 0, "x")),
    ):
        with pytest.raises(TaskNotFoundError, match="no-such-task"):
            add([item(task.id), item("no-such-task")])  # type: ignore[operator]
    assert store.get_scalars(task.id) == []
    assert store.get_log(task.id) == []
    assert store.get_events(task.id) == []


def test_log_tail_count_and_id_prefix(store: Backend) -> None:
    task = store.create_task(NewTask(name="t", project="p"))
    store.add_log([LogLine(task.id, f"line {i}") for i in range(10)])
    assert [ln.text for ln in store.get_log(task.id, tail=3)] == ["line 7", "line 8", "line 9"]
    assert store.count_log(task.id) == 10
    first = store.get_log(task.id, limit=2)
    assert [ln.text for ln in store.get_log(task.id, after=first[-1].seq, limit=2)] == [
        "line 2",
        "line 3",
    ]
    other = store.create_task(NewTask(name="o", project="p"))
    found = store.find_tasks(TaskFilter(id_prefix=task.id[:10], archived=None))
    assert [r.id for r in found] == [task.id]
    assert other.id not in {r.id for r in store.find_tasks(TaskFilter(id_prefix=task.id))}
