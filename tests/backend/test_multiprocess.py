"""Many processes, one store: every write kept, a held lock reported clearly and nothing
half-written. Every process here is a real Python process on a real SQLite file."""

from __future__ import annotations

import hashlib
import inspect
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stepline.backend.sql.store import SqlBackend
from stepline.core.errors import StoreLockedError
from stepline.core.records import ArtifactRecord, NewTask, Param, ScalarPoint, TaskFilter
from stepline.core.status import TaskStatus
from tests.conftest import TIMEOUT, started_together


def open_store(home: Path, timeout: float = 30.0) -> SqlBackend:
    return SqlBackend(
        f"sqlite:///{home / 'stepline.db'}", str(home / "artifacts"), home=home, timeout=timeout
    )


# -- the acceptance test: 4 processes writing everything at once -------------------------------

WORKERS = 4
TASKS_PER_WORKER = 250
POINTS = 10


def blob(worker: int, index: int) -> bytes:
    """The artifact bytes of one task: they hold the task's index, and their size varies."""
    return f"worker={worker} task={index};".encode() * (1 + (worker * 7 + index) % 40)


def point_value(worker: int, index: int, iteration: int) -> float:
    return worker * 1e6 + index * 100 + iteration + 0.25


WRITER = (
    "import sys\n"
    + inspect.getsource(blob)
    + inspect.getsource(point_value)
    + textwrap.dedent(
        """
        import json
        from pathlib import Path
        from stepline.backend import get_backend
        from stepline.core.records import ArtifactRecord, LogLine, NewTask, Param, ScalarPoint

        worker, count, points = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        work = Path(sys.argv[4])
        print("ready", flush=True)
        sys.stdin.readline()
        store = get_backend()
        ids = []
        for i in range(count):
            rec = store.create_task(
                NewTask(
                    name=f"w{worker}-t{i:03d}",
                    project="load",
                    tags=[f"worker-{worker}"],
                    params=[
                        Param("Args", "worker", str(worker), "int"),
                        Param("Args", "index", str(i), "int"),
                    ],
                )
            )
            store.add_scalars(
                [
                    ScalarPoint(rec.id, "loss", "train", it, point_value(worker, i, it))
                    for it in range(points)
                ]
            )
            store.add_log([LogLine(rec.id, f"worker {worker} task {i} done")])
            src = work / f"{worker}-{i}.bin"
            src.write_bytes(blob(worker, i))
            record = ArtifactRecord(rec.id, "data", "bytes", "", "", 0)
            store.put_artifact(record, str(src), move=i % 2 == 0)
            ids.append(rec.id)
        store.close()
        print(json.dumps(ids), flush=True)
        """
    )
)


@pytest.mark.slow
def test_four_processes_write_at_once_and_everything_is_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    argvs = [[str(w), str(TASKS_PER_WORKER), str(POINTS), str(work)] for w in range(WORKERS)]
    with started_together(WRITER, argvs, home) as results:
        reported = [json.loads(out) for out, _ in results]

    store = open_store(home)
    try:
        tasks = store.find_tasks(TaskFilter(project="load", order_by="name"))
        assert len(tasks) == WORKERS * TASKS_PER_WORKER
        by_name = {t.name: t for t in tasks}
        seqs: set[int] = set()
        for worker, ids in enumerate(reported):
            assert len(ids) == TASKS_PER_WORKER
            for i, task_id in enumerate(ids):
                task = by_name[f"w{worker}-t{i:03d}"]
                assert task.id == task_id
                assert task.tags == [f"worker-{worker}"]
                assert store.get_params(task_id) == [
                    Param("Args", "index", str(i), "int"),
                    Param("Args", "worker", str(worker), "int"),
                ]
                points = store.get_scalars(task_id)
                assert [(p.title, p.series, p.iteration, p.value) for p in points] == [
                    ("loss", "train", it, point_value(worker, i, it)) for it in range(POINTS)
                ]
                (line,) = store.get_log(task_id)
                assert line.text == f"worker {worker} task {i} done"
                seqs.add(line.seq)
                (art,) = store.get_artifacts(task_id)
                expected = blob(worker, i)
                assert art.hash == hashlib.sha256(expected).hexdigest()
                assert art.size == len(expected)
                path = store.artifact_local_path(art, verify=True)
                assert Path(path).read_bytes() == expected
                # move=True consumed the source; move=False left it
                assert (work / f"{worker}-{i}.bin").exists() == (i % 2 == 1)
        assert len(seqs) == WORKERS * TASKS_PER_WORKER
        stored = [p for p in (home / "artifacts").rglob("*") if p.is_file()]
        assert len(stored) == WORKERS * TASKS_PER_WORKER
        assert not [p for p in stored if p.name.endswith(".part")]
    finally:
        store.close()


# -- racing for the same status change ---------------------------------------------------------

CLAIMER = textwrap.dedent(
    """
    import json, sys
    from stepline.backend import get_backend
    from stepline.core.errors import InvalidTransitionError
    from stepline.core.status import TaskStatus

    ids = json.loads(sys.argv[1])
    store = get_backend()
    print("ready", flush=True)
    sys.stdin.readline()
    won = []
    for task_id in ids:
        try:
            store.set_status(task_id, TaskStatus.in_progress, message=sys.argv[2])
            won.append(task_id)
        except InvalidTransitionError:
            pass
    print(json.dumps(won), flush=True)
    """
)


def test_processes_racing_to_start_a_task_never_both_win(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = open_store(home)
    try:
        ids = [store.create_task(NewTask(name=f"t{i}", project="race")).id for i in range(40)]
        argvs = [[json.dumps(ids), f"claimer-{c}"] for c in range(4)]
        with started_together(CLAIMER, argvs, home) as results:
            won = [json.loads(out) for out, _ in results]
        winners = [task_id for w in won for task_id in w]
        assert sorted(winners) == sorted(ids)  # every task started exactly once
        for c, mine in enumerate(won):
            for task_id in mine:
                rec = store.get_task(task_id)
                assert rec.status == TaskStatus.in_progress
                assert rec.status_message == f"claimer-{c}"
    finally:
        store.close()


# -- a lock held by another process ------------------------------------------------------------

LOCKER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    # an uncommitted write of its own, rolled back at the end
    conn.execute("INSERT INTO queues (id, name, created) VALUES ('locker', 'locker', 0)")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    conn.close()
    """
)


def test_a_held_lock_becomes_store_locked_error_and_nothing_half_written(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    setup = open_store(home)
    existing = setup.create_task(NewTask(name="existing", project="p"))
    setup.close()
    src = tmp_path / "artifact.bin"
    data = b"bytes written while the store was locked\n" * 10
    src.write_bytes(data)
    new = NewTask(
        name="blocked",
        project="locked-project",
        id="c" * 32,
        params=[Param("Args", "a", "1"), Param("Args", "b", "2")],
        tags=["t"],
    )
    record = ArtifactRecord(existing.id, "data", "bytes", "", "", 0)

    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(home / "stepline.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = None
    try:
        assert locker.stdout is not None and locker.stdin is not None
        assert locker.stdout.readline().strip() == "locked", locker.communicate(timeout=TIMEOUT)
        store = open_store(home, timeout=0.3)

        t0 = time.monotonic()
        with pytest.raises(StoreLockedError) as exc:
            store.create_task(new)
        waited = time.monotonic() - t0
        assert 0.25 <= waited < 10, waited  # it waited for the timeout, then gave up
        message = str(exc.value)
        for part in ("locked", "0.3 s", "nothing was written", "STEPLINE_DB_TIMEOUT"):
            assert part in message, message

        with pytest.raises(StoreLockedError):
            store.put_artifact(record, str(src))
        with pytest.raises(StoreLockedError):
            store.set_status(existing.id, TaskStatus.in_progress)
        with pytest.raises(StoreLockedError):
            store.add_scalars([ScalarPoint(existing.id, "loss", "train", 0, 1.0)])

        # readers are not blocked, and they see none of the failed writes
        assert store.find_tasks(TaskFilter(name="^blocked$")) == []
        assert "locked-project" not in store.list_projects()
        assert store.get_task(existing.id).status == TaskStatus.created
        assert store.get_artifacts(existing.id) == []
        assert store.get_scalars(existing.id) == []
        assert [p for p in (home / "artifacts").rglob("*") if p.is_file()] == []
        assert src.read_bytes() == data

        locker.stdin.write("release\n")
        locker.stdin.flush()
        _, err = locker.communicate(timeout=TIMEOUT)
        assert locker.returncode == 0, err

        # the very same writes now succeed, once each
        created = store.create_task(new)
        assert store.get_task(new.id or "") == created
        assert [t.id for t in store.find_tasks(TaskFilter(name="^blocked$"))] == [created.id]
        assert store.get_params(created.id) == new.params
        stored = store.put_artifact(record, str(src))
        assert Path(store.artifact_local_path(stored, verify=True)).read_bytes() == data
        assert store.set_status(existing.id, TaskStatus.in_progress).status == "in_progress"
        store.add_scalars([ScalarPoint(existing.id, "loss", "train", 0, 1.0)])
        assert len(store.get_scalars(existing.id)) == 1
        # the locker's own write was rolled back
        assert "locker" not in {q.name for q in store.get_queues()}
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait()
        if store is not None:
            store.close()
