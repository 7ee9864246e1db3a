"""Copying a home (SQLite and an artifact folder) into another store, with its history: a real
pipeline run and tasks with every kind of record, copied into a fresh PostgreSQL database and
into another SQLite file, then read back through the store and compared record by record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from stepline import Task
from stepline.automation.controller import PipelineDecorator
from stepline.backend.sql import migrate
from stepline.backend.sql.store import SqlBackend
from stepline.backend.sql.tokens import SqlTokens
from stepline.backend.sql.transfer import CopyReport, TableCount, copy_store
from stepline.backend.storage import local_path_of
from stepline.core.errors import ArtifactError, ArtifactNotFoundError, ConfigError
from stepline.core.paths import storage_key
from stepline.core.records import (
    AgentRecord,
    ArtifactRecord,
    ConfigObject,
    LogLine,
    ModelRecord,
    NewTask,
    ScalarPoint,
    TaskFilter,
)
from tests.pipeline import deco_data_steps as steps
from tests.s3server import MotoServer


@dataclass
class Source:
    """A home with history, and what the tests look for in its copies."""

    url: str
    storage: Path
    store: SqlBackend
    train: str  # a task with every kind of record
    secret: str  # the secret of its API token


@pytest.fixture
def source(home: Path, backend: SqlBackend, tmp_path: Path) -> Source:
    # a real pipeline run (debug mode: steps in threads of this process)
    PipelineDecorator.debug_pipeline()
    try:
        assert steps.storage_pipeline(n=3) == 14
    finally:
        PipelineDecorator._mode_default = None

    train = Task.create(project_name="vision/resnet", task_name="train", task_type="training")
    train.set_parameters({"General/lr": 0.01, "General/epochs": 3, "Data/path": "/data"})
    train.add_tags(["gpu", "nightly"])
    backend.set_configs(train.id, [ConfigObject("net", json.dumps({"depth": 50}), "json")])
    backend.set_runtime(train.id, {"seed": "7"})
    train.mark_started()
    logger = train.get_logger()
    for i, loss in enumerate((0.9, 0.5, float("nan"), 0.25)):
        logger.report_scalar("loss", "train", loss, i)
    logger.report_table("scores", "val", 0, table_plot=[["a", "b"], [1, 2]])
    logger.report_text("epoch done", print_console=False)
    train.flush()
    # two equal lines are two lines, in the copy too
    backend.add_log(
        [LogLine(train.id, "tick", "info", 5.0), LogLine(train.id, "tick", "info", 5.0)]
    )
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(300_000))
    train.upload_artifact("weights", weights, wait_on_upload=True)
    train.upload_artifact("summary", {"best": 0.25}, wait_on_upload=True)
    art = backend.get_artifacts(train.id)[0]
    backend.add_model(ModelRecord(id="", task_id=train.id, name="best", url=art.url))
    # a model file stored beside the artifacts, and one elsewhere
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"checkpoint" * 1000)
    url = backend.storage.put(str(checkpoint), storage_key(train.id, "models", "ckpt.pt"))
    backend.add_model(ModelRecord(id="", task_id=train.id, name="ckpt", url=url, framework="pt"))
    backend.add_model(ModelRecord(id="", task_id=train.id, name="hub", url="https://hub.example/m"))
    train.mark_completed(status_message="done")

    failed = Task.create(project_name="vision", task_name="eval", task_type="testing")
    failed.mark_started()
    failed.mark_failed(status_reason="ValueError: no checkpoint")
    old = Task.create(project_name="tabular", task_name="prep")
    old.set_archived(True)

    backend.create_queue("gpu")
    waiting = [backend.create_task(NewTask(name=f"wait-{i}", project="vision")) for i in range(3)]
    backend.enqueue(waiting[0].id, "gpu", priority=1)
    backend.enqueue(waiting[1].id, "gpu", priority=9)
    backend.enqueue(waiting[2].id, "default")
    backend.register_agent(
        AgentRecord(id="agent-1", name="gpu-box", queues=["gpu"], host="gpu1", pid=42,
                    timeout=3600.0, info={"gpus": 2})
    )  # fmt: skip
    _, secret = SqlTokens(backend).create("ci")
    backend.wait_for_uploads()
    return Source(
        url=backend.url, storage=home / "artifacts", store=backend, train=train.id, secret=secret
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: the copy creates its schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'team' / 'stepline.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    return str(cluster.new_database(empty=True))


@pytest.fixture
def target_storage(tmp_path: Path) -> Path:
    return tmp_path / "team-files"


@pytest.fixture
def open_target(tmp_path: Path, target_storage: Path) -> Iterator[Any]:
    opened: list[SqlBackend] = []

    def open_(url: str) -> SqlBackend:
        store = SqlBackend(url, str(target_storage), home=tmp_path / "team-home")
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def copy(source: Source, url: str, storage: Path, **kwargs: Any) -> CopyReport:
    return copy_store(source.url, str(source.storage), url, str(storage), source.store.home,
                      **kwargs)  # fmt: skip


# -- reading a store back whole ------------------------------------------------------------------
def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def files_in(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def relative(store: SqlBackend, url: str) -> str:
    """Where in its store's storage the file at ``url`` is."""
    files = store.storage
    if files.local:
        return str(Path(local_path_of(url)).relative_to(files.root))
    assert url.startswith(files.root_url + "/"), url
    return url[len(files.root_url) + 1 :]


def snapshot(store: SqlBackend) -> dict[str, Any]:
    """Everything a store holds, read through its API, with urls told as where in the
    storage their file is (and its sha256), so that two stores can be compared."""
    tasks: dict[str, Any] = {}
    for rec in store.find_tasks(TaskFilter(archived=None)):
        artifacts = store.get_artifacts(rec.id)
        names = {a.url: a.name for a in artifacts}

        def where(url: str, names: dict[str, str] = names) -> str:
            if url in names:
                return f"artifact {names[url]}"
            if store.storage.owns(url):
                return f"file {relative(store, url)} {sha256(store.storage.local_copy(url))}"
            return url

        tasks[rec.id] = {
            "record": dataclasses.replace(rec, project_id=""),
            "params": store.get_params(rec.id),
            "configs": store.get_configs(rec.id),
            "runtime": store.get_runtime(rec.id),
            "scalars": [
                (p.title, p.series, p.iteration, repr(p.value), p.timestamp)
                for p in store.get_scalars(rec.id)
            ],
            "last": json.dumps(store.get_last_scalars(rec.id), sort_keys=True),
            "events": store.get_events(rec.id),
            "log": [(ln.text, ln.level, ln.timestamp) for ln in store.get_log(rec.id)],
            "artifacts": [dataclasses.replace(a, url=relative(store, a.url)) for a in artifacts],
            "bytes": {a.name: sha256(store.artifact_local_path(a, verify=True)) for a in artifacts},
            "models": [dataclasses.replace(m, url=where(m.url)) for m in store.get_models(rec.id)],
        }
    return {
        "projects": store.list_projects(),
        "queues": {q.name: store.queue_tasks(q.name) for q in store.get_queues()},
        "agents": store.get_agents(),
        "tokens": [dataclasses.astuple(t) for t in SqlTokens(store).list()],
        "tasks": tasks,
    }


def rows_of(url: str) -> dict[str, int]:
    """{table: row count} with a plain engine; {} when the database has no tables (or, for
    SQLite, no file: which is then not created)."""
    if url.startswith("sqlite") and not os.path.exists(url.split("///", 1)[1]):
        return {}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            return {
                n: conn.exec_driver_sql(f"SELECT COUNT(*) FROM {n}").scalar() or 0 for n in names
            }
    finally:
        engine.dispose()


# -- copies --------------------------------------------------------------------------------------
def test_copy_holds_every_record_and_file(
    source: Source, target_url: str, target_storage: Path, open_target: Any
) -> None:
    report = copy(source, target_url, target_storage)
    before = snapshot(source.store)
    target = open_target(target_url)
    after = snapshot(target)
    assert after == before
    assert len(before["tasks"]) == 8 and report.tables["tasks"].copied == 8

    # every artifact's file is in the target storage, at the same place, with the same bytes
    for task_id, shot in before["tasks"].items():
        for rec in target.get_artifacts(task_id):
            assert target.storage.owns(rec.url)
            assert sha256(target.artifact_local_path(rec, verify=True)) == rec.hash
        assert [a.url for a in shot["artifacts"]] == [
            relative(target, a.url) for a in target.get_artifacts(task_id)
        ]
    stored = files_in(source.storage)
    assert files_in(target_storage) == stored
    assert report.files == len(stored)
    assert report.bytes == sum((source.storage / f).stat().st_size for f in stored)
    assert report.kept_urls == 1  # the model on the hub

    # the models follow their files; the one elsewhere keeps its url
    models = {m.name: m for m in target.get_models(source.train)}
    weights = next(a for a in target.get_artifacts(source.train) if a.name == "weights")
    assert models["best"].url == weights.url
    assert target.storage.owns(models["ckpt"].url)
    assert models["hub"].url == "https://hub.example/m"

    # queues: the target's own default queue holds the copied entry, in order
    assert target.queue_tasks("gpu") == source.store.queue_tasks("gpu")
    assert SqlTokens(target).check(source.secret) is not None
    counts = {name: (c.copied, c.skipped) for name, c in report.tables.items()}
    assert counts["queues"] == (1, 2)  # default and services: every store has its own
    assert counts["queue_entries"] == (3, 0)
    assert counts["log"][0] == sum(len(t["log"]) for t in before["tasks"].values())

    # new rows get numbers after the copied ones (PostgreSQL's sequences are right)
    target.add_log([LogLine(source.train, "after the move")])
    target.add_scalars([ScalarPoint(source.train, "loss", "train", 9, 0.1)])
    lines = target.get_log(source.train)
    assert lines[-1].text == "after the move" and lines[-1].seq > lines[-2].seq
    assert target.get_last_scalars(source.train)["loss"]["train"]["iteration"] == 9


def test_copying_again_adds_only_what_is_new(
    source: Source, target_url: str, target_storage: Path, open_target: Any
) -> None:
    first = copy(source, target_url, target_storage)
    again = copy(source, target_url, target_storage)
    assert {n: c.copied for n, c in again.tables.items()} == dict.fromkeys(first.tables, 0)
    assert {n: c.skipped for n, c in again.tables.items()} == {
        n: c.copied + c.skipped for n, c in first.tables.items()
    }
    assert again.files == 0
    assert snapshot(open_target(target_url)) == snapshot(source.store)

    # the home goes on: a new task, and more lines (one equal to an earlier one) and points
    store = source.store
    store.add_log([LogLine(source.train, "tick", "info", 5.0), LogLine(source.train, "late")])
    store.add_scalars([ScalarPoint(source.train, "loss", "train", 4, 0.2)])
    store.create_task(NewTask(name="later", project="vision"))
    third = copy(source, target_url, target_storage)
    copied = {n: c.copied for n, c in third.tables.items() if c.copied}
    assert copied == {"tasks": 1, "log": 2, "scalars": 1}
    assert snapshot(open_target(target_url)) == snapshot(store)


def test_dry_run_counts_and_writes_nothing(
    source: Source, target_url: str, target_storage: Path
) -> None:
    dry = copy(source, target_url, target_storage, dry_run=True)
    assert dry.dry_run and dry.target_revision is None
    assert_untouched(target_url, target_storage)
    real = copy(source, target_url, target_storage)
    assert dataclasses.replace(dry, dry_run=False) == real
    assert real.tables["tasks"].copied == 8


def test_projects_queues_and_tokens_the_target_has_are_kept(
    source: Source, pg_url: str, target_storage: Path, open_target: Any
) -> None:
    team = open_target(pg_url)
    own = team.create_task(NewTask(name="team's own", project="vision/resnet"))
    other = team.create_task(NewTask(name="team's other", project="vision"))
    home_project = source.store.get_task(source.train).project_id
    assert own.project_id != home_project  # so the copied tasks must be given the team's id
    team.create_queue("gpu")
    _, team_secret = SqlTokens(team).create("ci")
    gpu = next(q.id for q in team.get_queues() if q.name == "gpu")

    report = copy(source, pg_url, target_storage)
    assert report.target_revision == migrate.HEAD
    assert report.tables["projects"].skipped == 2  # vision and vision/resnet
    assert report.tables["api_tokens"] == TableCount(copied=0, skipped=1)
    copied = team.get_task(source.train)
    assert copied.project == "vision/resnet"
    assert copied.project_id == own.project_id
    in_vision = team.find_tasks(TaskFilter(project="vision", name="^eval$"))
    assert [t.project_id for t in in_vision] == [other.project_id]
    assert team.get_task(own.id).name == "team's own"
    assert next(q.id for q in team.get_queues() if q.name == "gpu") == gpu
    assert team.queue_tasks("gpu") == source.store.queue_tasks("gpu")
    tokens = SqlTokens(team)
    assert tokens.check(team_secret) is not None and tokens.check(source.secret) is None
    assert sorted(team.list_projects()) == sorted(source.store.list_projects())


def test_a_target_at_an_older_schema_is_upgraded(
    source: Source, pg_cluster: Any, target_storage: Path, open_target: Any
) -> None:
    url = pg_cluster.new_database(empty=True)
    engine = create_engine(url)
    migrate.upgrade(engine, "0004")
    report = copy(source, url, target_storage)
    assert report.target_revision == "0004"
    assert migrate.current_revision(engine) == migrate.HEAD
    engine.dispose()
    assert snapshot(open_target(url)) == snapshot(source.store)


def test_a_source_at_an_older_schema_is_read_and_left_as_it_is(
    home: Path, backend: SqlBackend, tmp_path: Path, target_storage: Path, open_target: Any
) -> None:
    rec = backend.create_task(NewTask(name="old", project="p"))
    backend.add_scalars([ScalarPoint(rec.id, "m", "s", 0, 1.5)])
    backend.close()
    engine = create_engine(backend.url)
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    source = Source(backend.url, home / "artifacts", backend, rec.id, "")
    target = f"sqlite:///{tmp_path / 'team.db'}"
    report = copy(source, target, target_storage)
    assert report.source_revision == "0004"
    assert migrate.current_revision(engine) == "0004"
    engine.dispose()
    copied = open_target(target)
    assert copied.get_task(rec.id).name == "old"
    assert [p.value for p in copied.get_scalars(rec.id)] == [1.5]


# -- failures leave the target as it was ---------------------------------------------------------
def last_artifact(source: Source) -> ArtifactRecord:
    """The artifact copied last (artifacts are copied by task id, then name)."""
    store = source.store
    found = [
        a for t in store.find_tasks(TaskFilter(archived=None)) for a in store.get_artifacts(t.id)
    ]
    found.sort(key=lambda a: (a.task_id, a.name))
    assert found[0].task_id != found[-1].task_id, "some files must be copied before it"
    return found[-1]


def assert_untouched(url: str, storage: Path, allowed: list[str] | None = None) -> None:
    if url.startswith("sqlite"):  # a file the copy made is removed again
        assert not os.path.exists(url.split("///", 1)[1])
    assert rows_of(url) == {}  # not even the schema
    assert files_in(storage) == (allowed or [])


def test_a_missing_source_file_fails_the_whole_copy(
    source: Source, target_url: str, target_storage: Path
) -> None:
    gone = last_artifact(source)
    os.unlink(local_path_of(gone.url))
    with pytest.raises(ArtifactNotFoundError) as exc:
        copy(source, target_url, target_storage)
    assert f"artifact {gone.name!r} of task {gone.task_id}" in str(exc.value)
    assert "nothing was copied" in str(exc.value)
    assert_untouched(target_url, target_storage)
    with pytest.raises(ArtifactNotFoundError):  # a dry run finds it too
        copy(source, target_url, target_storage, dry_run=True)


def test_a_storage_that_refuses_a_file_fails_the_whole_copy(
    source: Source, target_url: str, target_storage: Path
) -> None:
    blocked = last_artifact(source).task_id
    target_storage.mkdir()
    (target_storage / blocked).write_text("a file where the task's folder would go")
    with pytest.raises(ArtifactError) as exc:
        copy(source, target_url, target_storage)
    assert "could not write its file to the target storage" in str(exc.value)
    assert_untouched(target_url, target_storage, allowed=[blocked])


def test_a_source_that_is_not_there_or_is_the_target_is_refused(
    source: Source, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="no SQLite database"):
        copy_store(f"sqlite:///{tmp_path / 'nope.db'}", str(tmp_path), source.url,
                   str(tmp_path / "x"), tmp_path)  # fmt: skip
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(ConfigError, match="the same database"):
        copy(source, source.url, tmp_path / "x")


# -- an object store -----------------------------------------------------------------------------
def test_copy_into_postgresql_and_an_object_store(
    source: Source, pg_cluster: Any, s3_server: MotoServer, tmp_path: Path
) -> None:
    def objects(root: str) -> list[str]:
        bucket, prefix = root.removeprefix("s3://").split("/", 1)
        found = s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(o["Key"].removeprefix(prefix + "/") for o in found)

    # a failing copy takes back the objects it put
    gone = last_artifact(source)
    path = local_path_of(gone.url)
    os.rename(path, path + ".away")
    failed_url, failed_root = pg_cluster.new_database(empty=True), s3_server.new_bucket()
    with pytest.raises(ArtifactNotFoundError):
        copy_store(source.url, str(source.storage), failed_url, failed_root, tmp_path)
    assert rows_of(failed_url) == {}
    assert objects(failed_root) == []
    os.rename(path + ".away", path)

    url, root = pg_cluster.new_database(empty=True), s3_server.new_bucket()
    report = copy_store(source.url, str(source.storage), url, root, tmp_path)
    assert report.files == len(files_in(source.storage))
    assert objects(root) == files_in(source.storage)
    target = SqlBackend(url, root, home=tmp_path / "team-home")
    try:
        assert snapshot(target) == snapshot(source.store)
        for rec in target.get_artifacts(source.train):
            assert rec.url.startswith(root + "/")
    finally:
        target.close()
