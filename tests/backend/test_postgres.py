"""What the store does on PostgreSQL beyond the shared contract: waiters woken by notifications
instead of polling, calls that ride out a server restart, and who may change a shared
database's schema. Everything runs on a real server (the ``pg_cluster`` fixture)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from stepline.backend.sql import migrate
from stepline.backend.sql.store import SqlBackend
from stepline.core.errors import StoreError, StoreUnavailableError
from stepline.core.records import AgentRecord, NewTask, ScalarPoint
from stepline.core.status import TaskStatus


def open_store(url: str, root: Path, **kw: Any) -> SqlBackend:
    return SqlBackend(url, str(root / "artifacts"), home=root, **kw)


@pytest.fixture
def store(pg_url: str, tmp_path: Path) -> Iterator[SqlBackend]:
    s = open_store(pg_url, tmp_path)
    yield s
    s.close()


def statements(store: SqlBackend) -> list[str]:
    """A list that fills with every statement ``store`` sends from now on."""
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def count(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    return seen


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    th = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    th.start()
    return th, out


def test_a_waiting_claim_is_woken_by_the_enqueue_not_by_polling(
    store: SqlBackend, pg_url: str, tmp_path: Path
) -> None:
    assert store.pushes_changes
    other = open_store(pg_url, tmp_path / "other")
    task = other.create_task(NewTask(project="p", name="t"))
    store.register_agent(AgentRecord(id="a1", name="a1", queues=["default"]))
    listener = store.changes()
    assert listener is not None
    listener.seq("stepline_queue")  # start listening before the clock runs
    deadline = time.monotonic() + 10
    while not listener.live:
        assert time.monotonic() < deadline, "the listener never connected"
        time.sleep(0.01)
    seen = statements(store)
    th, out = in_thread(lambda: store.claim(["default"], "a1", wait=30))
    time.sleep(1.0)  # the claimer waits; a 20 ms poll would send ~100 statements meanwhile
    waiting = len(seen)
    assert th.is_alive()
    other.enqueue(task.id, "default")
    th.join(10)
    assert not th.is_alive(), "the claim was not woken by the enqueue"
    assert out[0] is not None and out[0].id == task.id
    assert waiting <= 6, seen
    other.close()


def test_watch_is_woken_by_a_status_change_from_another_process(
    store: SqlBackend, pg_url: str, tmp_path: Path
) -> None:
    other = open_store(pg_url, tmp_path / "other")
    task = store.create_task(NewTask(project="p", name="t"))
    th, out = in_thread(lambda: store.watch({task.id: TaskStatus.created}, timeout=30))
    time.sleep(0.3)
    assert th.is_alive()
    other.set_status(task.id, TaskStatus.in_progress)
    th.join(10)
    assert not th.is_alive()
    assert [r.status for r in out[0]] == [TaskStatus.in_progress]
    other.close()


def test_calls_ride_out_a_server_restart(store: SqlBackend, pg_cluster: Any) -> None:
    task = store.create_task(NewTask(project="p", name="t"))
    pg_cluster.stop()
    try:
        th, out = in_thread(lambda: store.create_task(NewTask(project="p", name="during")))
        time.sleep(1.0)
        assert th.is_alive(), "the call did not wait for the database"
    finally:
        pg_cluster.start()
    th.join(30)
    assert out and out[0].name == "during"
    assert store.get_task(task.id).name == "t"
    names = sorted(r.name for r in store.find_tasks(_all()))
    assert names == ["during", "t"]  # written exactly once


def test_a_waiting_claim_survives_a_restart(store: SqlBackend, pg_cluster: Any) -> None:
    task = store.create_task(NewTask(project="p", name="t"))
    store.register_agent(AgentRecord(id="a1", name="a1", queues=["default"]))
    th, out = in_thread(lambda: store.claim(["default"], "a1", wait=60))
    time.sleep(0.3)
    pg_cluster.restart(down_for=0.5)
    store.enqueue(task.id, "default")
    th.join(30)
    assert not th.is_alive()
    assert out[0] is not None and out[0].id == task.id


def test_a_database_down_longer_than_the_timeout_is_a_clear_error(
    pg_cluster: Any, pg_url: str, tmp_path: Path
) -> None:
    store = open_store(pg_url, tmp_path, timeout=1.0)
    store.create_task(NewTask(project="p", name="t"))
    pg_cluster.stop()
    try:
        with pytest.raises(StoreUnavailableError) as exc:
            store.create_task(NewTask(project="p", name="lost"))
    finally:
        pg_cluster.start()
    assert "could not be reached" in str(exc.value)
    assert "STEPLINE_DB_TIMEOUT" in str(exc.value)
    assert "postgres@" in str(exc.value)
    assert [r.name for r in store.find_tasks(_all())] == ["t"]
    store.close()


def test_an_empty_database_is_created_by_the_first_store(pg_cluster: Any, tmp_path: Path) -> None:
    url = pg_cluster.new_database(empty=True)
    results: list[Any] = []

    def open_one(i: int) -> None:
        try:
            results.append(open_store(url, tmp_path / str(i)))
        except Exception as exc:  # collected: every opener must succeed
            results.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert all(isinstance(r, SqlBackend) for r in results), results
    engine = create_engine(url)
    assert migrate.current_revision(engine) == migrate.HEAD
    engine.dispose()
    for r in results:
        r.close()


def test_an_older_shared_database_is_upgraded_only_on_purpose(
    pg_cluster: Any, tmp_path: Path
) -> None:
    url = pg_cluster.new_database(empty=True)
    engine = create_engine(url)
    migrate.upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO queues (id, name, created) VALUES ('q1', 'kept', 1.0)"))
    with pytest.raises(StoreError) as exc:
        open_store(url, tmp_path)
    assert "0004" in str(exc.value) and "stepline db upgrade" in str(exc.value)
    assert migrate.current_revision(engine) == "0004"

    store = open_store(url, tmp_path, upgrade=True)
    assert migrate.current_revision(engine) == migrate.HEAD
    assert "kept" in [q.name for q in store.get_queues()]
    store.close()
    engine.dispose()


def test_a_newer_database_is_refused(pg_cluster: Any, tmp_path: Path) -> None:
    url = pg_cluster.new_database()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this stepline"):
        open_store(url, tmp_path)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_nan_metric_values_are_kept(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("pg_url") if db == "postgres" else f"sqlite:///{tmp_path}/s.db"
    store = open_store(url, tmp_path)
    task = store.create_task(NewTask(project="p", name="t"))
    values = [1.0, math.nan, -2.5, math.inf]
    store.add_scalars([ScalarPoint(task.id, "loss", "train", i, v) for i, v in enumerate(values)])
    got = [p.value for p in store.get_scalars(task.id)]
    assert got[0] == 1.0 and math.isnan(got[1]) and got[2:] == [-2.5, math.inf]
    last = store.get_last_scalars(task.id)["loss"]["train"]
    assert last["last"] == math.inf and last["min"] == -2.5 and last["max"] == math.inf
    store.add_scalars([ScalarPoint(task.id, "loss", "train", 9, math.nan)])
    assert math.isnan(store.get_last_scalars(task.id)["loss"]["train"]["last"])
    store.close()


def _all() -> Any:
    from stepline.core.records import TaskFilter

    return TaskFilter(archived=None)


def test_a_server_long_poll_is_woken_by_another_writer_without_looking(
    store: SqlBackend, pg_url: str, tmp_path: Path
) -> None:
    """A second server (or an embedded client) on the same database changes a task: the
    first server's waiting watch answers at once, and did not poll the store meanwhile."""
    import httpx

    from tests.serverproc import serve

    served = serve(store)
    other = open_store(pg_url, tmp_path / "other")
    try:
        task = other.create_task(NewTask(project="p", name="t"))
        seen = statements(store)
        th, out = in_thread(
            lambda: httpx.post(
                f"{served.url}/api/v1/tasks/watch",
                json={"known": {task.id: "created"}, "timeout": 30},
                timeout=60,
            )
        )
        time.sleep(1.5)  # with the 0.5 s look of a store that does not notify: 3+ looks
        looked = len(seen)
        assert th.is_alive()
        other.set_status(task.id, TaskStatus.in_progress)
        th.join(20)
        assert not th.is_alive()
        assert out[0].status_code == 200, out[0].text
        assert [r["status"] for r in out[0].json()] == ["in_progress"]
        assert looked <= 2, seen
    finally:
        served.stop()
        other.close()


@pytest.fixture
def cut_next_commit(store: SqlBackend, pg_cluster: Any) -> Iterator[list[bool]]:
    """Arm it (``armed[0] = True``) and the server ends the store's connection as its next
    commit is sent: the reply never comes, as when the server stops at that moment."""
    import psycopg

    admin = psycopg.connect(
        f"host=127.0.0.1 port={pg_cluster.port} user=postgres dbname=postgres", autocommit=True
    )
    armed = [False]

    @event.listens_for(store.engine, "commit")
    def cut(conn: Any) -> None:
        if armed[0]:
            armed[0] = False
            pid = conn.connection.dbapi_connection.info.backend_pid
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    yield armed
    admin.close()


def test_a_status_change_whose_commit_is_cut_lands_once(
    store: SqlBackend, cut_next_commit: list[bool]
) -> None:
    task = store.create_task(NewTask(project="p", name="t"))
    store.set_status(task.id, TaskStatus.in_progress)
    cut_next_commit[0] = True
    done = store.set_status(task.id, TaskStatus.completed, message="ok")
    assert not cut_next_commit[0], "the cut did not happen"
    assert done.status == TaskStatus.completed
    assert store.get_task(task.id).status == TaskStatus.completed


def test_a_claim_whose_commit_is_cut_leaves_the_task_claimable(
    store: SqlBackend, cut_next_commit: list[bool]
) -> None:
    store.register_agent(AgentRecord(id="a1", name="a1", queues=["default"]))
    task = store.create_task(NewTask(project="p", name="t"))
    store.enqueue(task.id, "default")
    cut_next_commit[0] = True
    first = store.claim(["default"], "a1")
    assert not cut_next_commit[0], "the cut did not happen"
    rec = store.get_task(task.id)
    if first is None:  # the claim did not land: the task is still waiting for an agent
        assert rec.status == TaskStatus.queued
        assert store.queue_tasks("default") == [task.id]
        first = store.claim(["default"], "a1")
    assert first is not None and first.id == task.id
    assert store.get_task(task.id).status == TaskStatus.in_progress
    assert store.queue_tasks("default") == []
    assert store.claim(["default"], "a1") is None


def test_log_lines_whose_commit_is_cut_are_not_lost(
    store: SqlBackend, cut_next_commit: list[bool]
) -> None:
    from stepline.core.records import LogLine

    task = store.create_task(NewTask(project="p", name="t"))
    cut_next_commit[0] = True
    store.add_log([LogLine(task.id, "hello"), LogLine(task.id, "world")])
    assert not cut_next_commit[0], "the cut did not happen"
    texts = [line.text for line in store.get_log(task.id)]
    assert texts[:2] == ["hello", "world"]


def test_a_task_created_as_its_commit_is_cut_exists_once(
    store: SqlBackend, cut_next_commit: list[bool]
) -> None:
    cut_next_commit[0] = True
    made = store.create_task(NewTask(project="p", name="only-once"))
    assert not cut_next_commit[0], "the cut did not happen"
    assert [r.id for r in store.find_tasks(_all())] == [made.id]
    assert store.get_task(made.id).name == "only-once"


def test_a_task_enqueued_as_its_commit_is_cut_is_queued_once(
    store: SqlBackend, cut_next_commit: list[bool]
) -> None:
    task = store.create_task(NewTask(project="p", name="t"))
    cut_next_commit[0] = True
    queued = store.enqueue(task.id, "default")
    assert not cut_next_commit[0], "the cut did not happen"
    assert queued.status == TaskStatus.queued
    assert store.queue_tasks("default") == [task.id]
