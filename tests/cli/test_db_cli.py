"""``stepline db``: reading and upgrading a real database's schema (SQLite and PostgreSQL) made
at the previous revision with a row in every table, and moving a home into another store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, create_engine, insert, select, text
from typer.testing import CliRunner, Result

from stepline import Task
from stepline.backend.sql import migrate
from stepline.backend.sql.store import SqlBackend
from stepline.cli.main import app
from stepline.core.records import TaskFilter
from tests.conftest import TIMEOUT, run_env

PREVIOUS = "0004"  # the revision before HEAD, whose schema the rows below follow


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES"):
        monkeypatch.delenv(var, raising=False)


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


@dataclass
class Database:
    url: str
    env: dict[str, str]  # what points the commands at it
    engine: Engine


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, home: Path) -> Iterator[Database]:
    """An empty database: the home's SQLite file (the default), or PostgreSQL (STEPLINE_DB)."""
    if request.param == "sqlite":
        home.mkdir(parents=True)
        url, env = f"sqlite:///{home / 'stepline.db'}", {}
    else:
        url = str(request.getfixturevalue("pg_cluster").new_database(empty=True))
        env = {"STEPLINE_DB": url}
    engine = create_engine(url)
    yield Database(url, env, engine)
    engine.dispose()


P1, P2, T1, T2, Q1, M1, K1 = (
    "p1" * 16,
    "p2" * 16,
    "t1" * 16,
    "t2" * 16,
    "q1" * 16,
    "m1" * 16,
    "k1" * 16,
)

#: a row in every table, as the schema at PREVIOUS has them
ROWS: dict[str, list[dict[str, Any]]] = {
    "projects": [
        {"id": P1, "name": "vision", "parent_id": None, "created": 1.25},
        {"id": P2, "name": "vision/resnet", "parent_id": P1, "created": 1.5},
    ],
    "tasks": [
        {"id": T1, "project_id": P2, "name": "train", "type": "training", "status": "completed",
         "status_message": "done", "status_reason": "", "comment": "first", "parent_id": None,
         "user": "ana", "script": {"entry": "train.py", "args": ["--lr", 0.1]}, "created": 10.0,
         "started": 11.0, "completed": 12.5, "last_update": 12.5, "archived": True,
         "published": False},
        {"id": T2, "project_id": P1, "name": "wait", "type": "testing", "status": "queued",
         "status_message": "", "status_reason": "", "comment": "", "parent_id": T1, "user": "",
         "script": {}, "created": 20.0, "started": None, "completed": None, "last_update": 20.0,
         "archived": False, "published": True},
    ],
    "task_tags": [{"task_id": T1, "tag": "gpu"}, {"task_id": T1, "tag": "nightly"}],
    "task_params": [{"task_id": T1, "section": "General", "name": "lr", "value": "0.1",
                     "type": "float", "description": "learning rate"}],
    "task_configs": [{"task_id": T1, "name": "net", "value": '{"depth": 50}',
                      "content_type": "json", "description": ""}],
    "task_runtime": [{"task_id": T1, "key": "seed", "value": "7"},
                     {"task_id": T2, "key": "_queue", "value": "gpu"}],
    "artifacts": [{"task_id": T1, "name": "weights", "type": "file", "mode": "output",
                   "url": "file:///data/w.bin", "hash": "ab" * 32, "size": 1234,
                   "preview": "w.bin", "meta": {"k": [1, 2]},
                   "content_type": "application/octet-stream", "created": 12.0}],
    "models": [{"id": M1, "task_id": T1, "name": "best", "url": "file:///data/w.bin",
                "framework": "torch", "mode": "output", "meta": {"acc": 0.9}, "created": 12.25}],
    "scalars": [
        {"id": 10, "task_id": T1, "title": "loss", "series": "train", "iteration": 0,
         "value": 0.75, "timestamp": 11.5},
        {"id": 11, "task_id": T1, "title": "loss", "series": "train", "iteration": 1,
         "value": 0.5, "timestamp": 11.75},
    ],
    "events": [{"id": 5, "task_id": T1, "kind": "text", "title": "note", "series": "s",
                "iteration": 3, "payload": "hello", "timestamp": 12.0}],
    "log": [{"id": 7, "task_id": T1, "level": "info", "text": "epoch 0", "timestamp": 11.5},
            {"id": 8, "task_id": T1, "level": "error", "text": "oops", "timestamp": 11.6}],
    "queues": [{"id": Q1, "name": "gpu", "created": 2.0}],
    "queue_entries": [{"task_id": T2, "queue_id": Q1, "priority": 3, "enqueued": 20.5}],
    "agents": [{"id": "agent-1", "name": "box", "queues": ["gpu"], "host": "gpu1", "pid": 42,
                "started": 3.0, "last_seen": 4.0, "timeout": 30.0, "running": [T1],
                "info": {"gpus": 2}}],
    "api_tokens": [{"id": K1, "name": "ci", "hash": "f" * 64, "created": 5.0, "last_used": None,
                    "revoked": 6.0}],
}  # fmt: skip


def every_row(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (as the database describes its tables), by primary key."""
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            name: [
                dict(r)
                for r in conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            ]
            for name, table in meta.tables.items()
        }


def at_previous_revision(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Create the schema at PREVIOUS, insert ROWS, and return every row then."""
    migrate.upgrade(db.engine, PREVIOUS)
    meta = MetaData()
    meta.reflect(db.engine)
    assert set(ROWS) == set(meta.tables) - {"alembic_version"}, "a table has no row"
    with db.engine.begin() as conn:
        for name, rows in ROWS.items():
            conn.execute(insert(meta.tables[name]), rows)
    return every_row(db.engine)


def set_revision(db: Database, revision: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


# -- db current, db upgrade ----------------------------------------------------------------------
def test_upgrade_from_the_previous_revision_keeps_every_row(database: Database) -> None:
    before = at_previous_revision(database)
    for name, rows in ROWS.items():
        for row in rows:
            assert row in before[name]

    result = cli("db", "current", env=database.env)
    assert result.exit_code == 1, result.output
    assert f"revision  {PREVIOUS}\n" in result.stdout
    assert f"head      {migrate.HEAD} (this stepline)" in result.stdout
    assert "behind: run `stepline db upgrade`" in result.stdout
    state = json.loads(cli("db", "current", "--json", env=database.env).stdout)
    assert state["revision"] == PREVIOUS and state["state"] == "behind"
    assert state["upgrade_needed"] is True

    result = cli("db", "upgrade", env=database.env)
    assert result.exit_code == 0, (result.output, result.exception)
    shown = migrate.safe_url(database.engine)
    assert result.stdout == f"upgraded {shown}: {PREVIOUS} -> {migrate.HEAD}\n"
    assert migrate.current_revision(database.engine) == migrate.HEAD
    after = every_row(database.engine)
    assert after.pop("alembic_version") == [{"version_num": migrate.HEAD}]
    before.pop("alembic_version")
    assert after == before

    result = cli("db", "current", env=database.env)
    assert result.exit_code == 0, result.output
    assert "state     up to date" in result.stdout
    result = cli("db", "upgrade", env=database.env)
    assert result.exit_code == 0 and "already" in result.stdout

    # and the store reads the rows as it wrote them
    store = SqlBackend(database.url, "/nonexistent-storage", home=Path(os.environ["STEPLINE_HOME"]))
    try:
        task = store.get_task(T1)
        assert (task.project, task.user, task.script) == (
            "vision/resnet",
            "ana",
            ROWS["tasks"][0]["script"],
        )
        assert [p.value for p in store.get_scalars(T1)] == [0.75, 0.5]
        assert store.queue_tasks("gpu") == [T2]
    finally:
        store.close()


def test_upgrade_to_a_given_revision_and_no_further_back(database: Database) -> None:
    migrate.upgrade(database.engine, "0003")
    result = cli("db", "upgrade", "--to", PREVIOUS, env=database.env)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f": 0003 -> {PREVIOUS}\n")
    result = cli("db", "upgrade", "--to", "0002", env=database.env)
    assert result.exit_code == 1
    assert "past --to 0002; stepline does not downgrade" in result.stderr
    result = cli("db", "upgrade", "--to", "42", env=database.env)
    assert result.exit_code == 1
    assert "--to 42: this stepline knows no such revision" in result.stderr
    assert migrate.current_revision(database.engine) == PREVIOUS


def test_a_database_from_a_newer_stepline_is_reported_and_not_touched(
    database: Database,
) -> None:
    migrate.upgrade(database.engine)
    set_revision(database, "9999")
    result = cli("db", "current", env=database.env)
    assert result.exit_code == 2
    assert "made by a newer stepline: upgrade stepline" in result.stdout
    result = cli("db", "upgrade", env=database.env)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the database")
    assert "newer than this stepline knows" in result.stderr
    assert migrate.current_revision(database.engine) == "9999"


def test_an_empty_database_is_created_by_upgrade(database: Database) -> None:
    if database.url.startswith("sqlite"):
        database.engine.connect().close()  # an empty file
    result = cli("db", "current", "--json", env=database.env)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["state"] == "empty"
    result = cli("db", "upgrade", env=database.env)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f": empty -> {migrate.HEAD}\n")


def test_the_password_is_never_shown(pg_cluster: Any) -> None:
    url = pg_cluster.new_database().replace("postgres@", "postgres:s3cret@")  # trust: accepted
    result = cli("db", "current", env={"STEPLINE_DB": url})
    assert result.exit_code == 0, result.output
    assert "postgres:***@" in result.stdout and "s3cret" not in result.output


def test_a_missing_home_database_is_an_error_and_not_created(home: Path) -> None:
    for args in (["db", "current"], ["db", "upgrade"]):
        result = cli(*args)
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: there is no database at {home / 'stepline.db'}")
    assert not (home / "stepline.db").exists()


def test_exit_codes_of_a_real_process(database: Database, home: Path) -> None:
    at_previous_revision(database)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stepline.cli.main", "db", *args],
            env=run_env(home, **database.env),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    assert run("current").returncode == 1
    done = run("upgrade")
    assert done.returncode == 0, done.stderr
    assert run("current").returncode == 0


# -- db migrate-from-sqlite ----------------------------------------------------------------------
def test_migrate_from_sqlite_copies_a_home(home: Path, pg_cluster: Any, tmp_path: Path) -> None:
    task = Task.create(project_name="vision", task_name="train")
    task.set_parameters({"General/lr": 0.5})
    task.upload_artifact("summary", {"best": 1}, wait_on_upload=True)
    task.get_logger().report_text("hello", print_console=False)
    task.flush()
    task.mark_completed()
    team = pg_cluster.new_database(empty=True)
    files = tmp_path / "team-files"
    env = {"STEPLINE_DB": team, "STEPLINE_STORAGE": str(files)}

    result = cli("db", "migrate-from-sqlite", "--dry-run", env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.stdout
    assert out.startswith(f"would copy sqlite:///{home / 'stepline.db'} (artifacts ")
    assert f"target schema: empty -> {migrate.HEAD}" in out
    assert any(line.split() == ["tasks", "1", "0"] for line in out.splitlines())
    assert "files: 1 to copy into the target storage" in out
    assert out.endswith("dry run: nothing was written\n")
    assert not files.exists() or not any(files.rglob("*.json"))

    result = cli("db", "migrate-from-sqlite", env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[3:-1]}
    assert rows["tasks"] == ["1", "0"] and rows["task_params"] == ["1", "0"]
    assert rows["queues"] == ["0", "2"]
    assert "files: 1 copied into the target storage" in result.stdout

    again = json.loads(cli("db", "migrate-from-sqlite", "--json", env=env).stdout)
    assert again["tables"]["tasks"] == {"copied": 0, "skipped": 1}
    assert again["files"] == 0 and again["dry_run"] is False

    store = SqlBackend(team, str(files), home=tmp_path / "team-home")
    try:
        [copied] = store.find_tasks(TaskFilter())
        assert copied.id == task.id and copied.status == "completed"
        [art] = store.get_artifacts(task.id)
        assert json.loads(Path(store.artifact_local_path(art, verify=True)).read_text()) == {
            "best": 1
        }
        assert [ln.text for ln in store.get_log(task.id)] == ["hello"]
    finally:
        store.close()


def test_migrate_from_sqlite_needs_a_target(home: Path) -> None:
    Task.create(project_name="p", task_name="t")
    result = cli("db", "migrate-from-sqlite")
    assert result.exit_code == 1
    assert "--to URL" in result.stderr and "STEPLINE_DB" in result.stderr
    result = cli("db", "migrate-from-sqlite", "--to", "sqlite:///x.db")
    assert result.exit_code == 1
    assert "--to-storage URL" in result.stderr
