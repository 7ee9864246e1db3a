"""The SQL store's schema: created by the Alembic migrations, equal to ``schema.metadata``, and
brought up to date exactly once, even when several processes open a new home together."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect

from stepline.backend.sql import migrate, schema
from stepline.backend.sql.store import SqlBackend
from stepline.core.errors import StoreError
from stepline.core.records import NewTask, TaskFilter
from tests.conftest import TIMEOUT, run_env, started_together


def open_store(home: Path) -> SqlBackend:
    return SqlBackend(f"sqlite:///{home / 'stepline.db'}", str(home / "artifacts"), home=home)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A plain engine (none of the store's settings) on the test's database file."""
    e = create_engine(f"sqlite:///{tmp_path / 'home' / 'stepline.db'}")
    yield e
    e.dispose()


def schema_version(db: Path) -> int:
    """SQLite's schema cookie: it changes whenever any table or index is created or altered."""
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA schema_version").fetchone()[0])
    finally:
        conn.close()


def test_head_is_the_newest_migration() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [migrate.HEAD]
    assert script.get_current_head() == migrate.HEAD


def test_fresh_database_is_upgraded_to_head(tmp_path: Path, engine: Engine) -> None:
    home = tmp_path / "home"
    assert not (home / "stepline.db").exists()
    store = open_store(home)
    store.close()
    assert migrate.current_revision(engine) == migrate.HEAD
    tables = set(inspect(engine).get_table_names())
    assert tables == set(schema.metadata.tables) | {"alembic_version"}


def test_migrated_schema_has_no_drift(tmp_path: Path, engine: Engine) -> None:
    open_store(tmp_path / "home").close()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diff == []


def test_downgrade_to_nothing_and_upgrade_again(tmp_path: Path, engine: Engine) -> None:
    open_store(tmp_path / "home").close()
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.HEAD
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []


def test_reopening_a_store_does_not_migrate_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = open_store(home)
    rec = store.create_task(NewTask(name="kept", project="p"))
    store.close()
    cookie = schema_version(home / "stepline.db")
    for _ in range(2):
        store = open_store(home)
        assert store.get_task(rec.id) == rec
        store.close()
        assert schema_version(home / "stepline.db") == cookie


def test_reopening_in_a_new_process_does_not_even_load_alembic(tmp_path: Path) -> None:
    home = tmp_path / "home"
    open_store(home).close()
    cookie = schema_version(home / "stepline.db")
    child = textwrap.dedent(
        """
        import json, sys
        from stepline.backend import get_backend
        from stepline.core.records import NewTask
        store = get_backend()
        store.create_task(NewTask(name="from child", project="p"))
        store.close()
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "alembic")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child],
        env=run_env(home),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    assert schema_version(home / "stepline.db") == cookie
    store = open_store(home)
    try:
        assert [r.name for r in store.find_tasks(TaskFilter())] == ["from child"]
    finally:
        store.close()


def test_a_database_from_a_newer_stepline_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    open_store(home).close()
    db = sqlite3.connect(home / "stepline.db")
    with db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.close()
    with pytest.raises(StoreError) as exc:
        open_store(home)
    assert "9999" in str(exc.value)
    assert "upgrade stepline" in str(exc.value)


OPEN_AT_ONCE = textwrap.dedent(
    """
    import json, sys
    import alembic.command, alembic.config  # loaded now, so that both children race on the schema
    from stepline.backend import get_backend
    from stepline.core.records import NewTask
    print("ready", flush=True)
    sys.stdin.readline()
    store = get_backend()
    rec = store.create_task(NewTask(name=sys.argv[1], project="race"))
    store.close()
    print(json.dumps(rec.id), flush=True)
    """
)


@pytest.mark.parametrize("round_", range(3))
def test_two_processes_open_a_new_home_at_once(tmp_path: Path, round_: int) -> None:
    home = tmp_path / "home"
    assert not home.exists()
    with started_together(OPEN_AT_ONCE, [["child-0"], ["child-1"]], home) as results:
        pass
    ids = {json.loads(out) for out, _ in results}
    store = open_store(home)
    try:
        tasks = store.find_tasks(TaskFilter(project="race"))
        assert {t.id for t in tasks} == ids and len(ids) == 2
        assert sorted(t.name for t in tasks) == ["child-0", "child-1"]
        assert store.list_projects() == ["race"]
    finally:
        store.close()
    engine = create_engine(f"sqlite:///{home / 'stepline.db'}")
    try:
        assert migrate.current_revision(engine) == migrate.HEAD
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        assert [r[0] for r in rows] == [migrate.HEAD]
    finally:
        engine.dispose()
