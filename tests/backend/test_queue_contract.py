"""The store's queue and agent calls: enqueue/dequeue/queue_tasks/claim, heartbeats, and what
happens to the tasks of an agent that stops sending them (``reap_agents``).

Every test runs twice: on the real SQLite store of a fresh ``STEPLINE_HOME``, and through the
HTTP client and a real server (on loopback) over that store. The claim race runs in several
real processes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stepline.backend.protocol import Backend
from stepline.core.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    TaskNotFoundError,
)
from stepline.core.records import AgentRecord, NewTask
from stepline.core.status import TaskStatus
from tests.conftest import started_together

UNKNOWN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(params=["sqlite", "http", "postgres"])
def backend(
    request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    """The store of the test's home, directly or through a server (then ``STEPLINE_API``
    points child processes at the server too), or on PostgreSQL (``STEPLINE_DB``)."""
    from stepline.backend import get_backend, reset_backend
    from stepline.backend.http.client import HttpBackend
    from stepline.backend.sql.store import SqlBackend
    from tests.conftest import use_team_store
    from tests.serverproc import serve

    if request.param == "postgres":
        use_team_store(request, s3=False)
    local = get_backend()
    if request.param in ("sqlite", "postgres"):
        yield local
        return
    assert isinstance(local, SqlBackend)
    served = serve(SqlBackend(local.url, str(local.storage.root), home=home))
    monkeypatch.setenv("STEPLINE_API", served.url)
    client = HttpBackend(served.url, home=home / "client")
    reset_backend(client)
    try:
        yield client
    finally:
        reset_backend()
        served.stop()


def wait_until(check: Callable[[], object], timeout: float = 30.0, what: str = "") -> object:
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(0.01)


def new_task(backend: Backend, name: str = "t", **runtime: str) -> str:
    return backend.create_task(NewTask(name=name, project="queues", runtime=runtime)).id


def agent(name: str = "a1", *, timeout: float = 30.0, queues: tuple[str, ...] = ()) -> AgentRecord:
    return AgentRecord(
        id=f"{name}-id",
        name=name,
        queues=list(queues or ("default",)),
        host="testhost",
        pid=4242,
        timeout=timeout,
    )


def status(backend: Backend, task_id: str) -> TaskStatus:
    return backend.get_task(task_id).status


def pending(backend: Backend) -> dict[str, int]:
    return {q.name: q.pending for q in backend.get_queues()}


# -- queues ---------------------------------------------------------------------------------


def test_a_new_home_has_the_default_queues(backend: Backend) -> None:
    assert pending(backend) == {"default": 0, "services": 0}
    assert backend.queue_tasks("default") == []
    assert backend.queue_tasks("services") == []


def test_enqueue_queues_the_task_at_the_end(backend: Backend) -> None:
    first, second = new_task(backend, "first"), new_task(backend, "second")
    rec = backend.enqueue(first, "default")
    assert rec.id == first and rec.status == TaskStatus.queued
    backend.enqueue(second, "default")
    assert backend.queue_tasks("default") == [first, second]
    assert backend.get_runtime(first)["_queue"] == "default"
    assert pending(backend) == {"default": 2, "services": 0}


def test_claim_order_is_priority_then_fifo(backend: Backend) -> None:
    backend.create_queue("work")
    plan = [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 0), ("g", 9)]
    ids = {}
    for name, priority in plan:
        ids[name] = new_task(backend, name)
        backend.enqueue(ids[name], "work", priority=priority)
    expected = [ids[n] for n in "gbdacfe"]
    assert backend.queue_tasks("work") == expected
    backend.register_agent(agent())
    claimed = []
    while (rec := backend.claim(["work"], "a1-id")) is not None:
        claimed.append(rec.id)
    assert claimed == expected
    assert backend.queue_tasks("work") == []


def test_fifo_holds_for_many_quick_enqueues(backend: Backend) -> None:
    ids = [new_task(backend, f"t{i}") for i in range(40)]
    for task_id in ids:
        backend.enqueue(task_id, "default")
    assert backend.queue_tasks("default") == ids


def test_enqueue_to_an_unknown_queue_changes_nothing(backend: Backend) -> None:
    task_id = new_task(backend)
    with pytest.raises(NotFoundError) as exc:
        backend.enqueue(task_id, "nowhere")
    assert "nowhere" in str(exc.value)
    assert status(backend, task_id) == TaskStatus.created
    assert "_queue" not in backend.get_runtime(task_id)
    assert pending(backend) == {"default": 0, "services": 0}


def test_queue_tasks_of_an_unknown_queue(backend: Backend) -> None:
    with pytest.raises(NotFoundError) as exc:
        backend.queue_tasks("nowhere")
    assert "nowhere" in str(exc.value)


def test_enqueue_unknown_task(backend: Backend) -> None:
    with pytest.raises(TaskNotFoundError) as exc:
        backend.enqueue(UNKNOWN, "default")
    assert exc.value.task_id == UNKNOWN
    assert backend.queue_tasks("default") == []


@pytest.mark.parametrize(
    "before", [TaskStatus.queued, TaskStatus.in_progress, TaskStatus.completed]
)
def test_only_a_draft_is_enqueued(backend: Backend, before: TaskStatus) -> None:
    task_id = new_task(backend)
    backend.enqueue(task_id, "default")
    if before != TaskStatus.queued:
        backend.set_status(task_id, TaskStatus.in_progress)
    if before == TaskStatus.completed:
        backend.set_status(task_id, TaskStatus.completed)
    with pytest.raises(InvalidTransitionError) as exc:
        backend.enqueue(task_id, "services")
    assert exc.value.task_id == task_id
    assert status(backend, task_id) == before
    assert backend.queue_tasks("services") == []
    assert backend.queue_tasks("default") == ([task_id] if before == TaskStatus.queued else [])


def test_dequeue_takes_the_task_off_its_queue(backend: Backend) -> None:
    keep, drop = new_task(backend, "keep"), new_task(backend, "drop")
    backend.enqueue(drop, "default")
    backend.enqueue(keep, "default")
    rec = backend.dequeue(drop)
    assert rec.status == TaskStatus.created
    assert backend.queue_tasks("default") == [keep]
    assert pending(backend)["default"] == 1
    backend.register_agent(agent())
    claimed = backend.claim(["default"], "a1-id")
    assert claimed is not None and claimed.id == keep
    assert backend.claim(["default"], "a1-id") is None
    # a dequeued task is a draft again: it can be queued anew
    backend.enqueue(drop, "services")
    assert backend.queue_tasks("services") == [drop]


@pytest.mark.parametrize("final", [TaskStatus.completed, TaskStatus.failed, TaskStatus.stopped])
def test_dequeue_of_a_finished_task_is_refused(backend: Backend, final: TaskStatus) -> None:
    task_id = new_task(backend)
    backend.set_status(task_id, TaskStatus.in_progress)
    backend.set_status(task_id, final)
    with pytest.raises(InvalidTransitionError) as exc:
        backend.dequeue(task_id)
    assert exc.value.task_id == task_id
    assert status(backend, task_id) == final


def test_dequeue_of_a_draft_or_unknown_task(backend: Backend) -> None:
    task_id = new_task(backend)
    with pytest.raises(InvalidTransitionError):
        backend.dequeue(task_id)
    assert status(backend, task_id) == TaskStatus.created
    with pytest.raises(TaskNotFoundError):
        backend.dequeue(UNKNOWN)


def test_dequeue_of_a_running_task_is_refused(backend: Backend) -> None:
    task_id = new_task(backend)
    backend.enqueue(task_id, "default")
    backend.register_agent(agent())
    assert backend.claim(["default"], "a1-id") is not None
    with pytest.raises(InvalidTransitionError):
        backend.dequeue(task_id)
    assert status(backend, task_id) == TaskStatus.in_progress


def test_a_queued_task_stopped_or_failed_leaves_its_queue(backend: Backend) -> None:
    stopped, failed, left = (new_task(backend, n) for n in ("stopped", "failed", "left"))
    for task_id in (stopped, failed, left):
        backend.enqueue(task_id, "default")
    backend.set_status(stopped, TaskStatus.stopped)
    backend.set_status(failed, TaskStatus.failed)
    assert backend.queue_tasks("default") == [left]
    assert pending(backend)["default"] == 1
    backend.register_agent(agent())
    claimed = backend.claim(["default"], "a1-id")
    assert claimed is not None and claimed.id == left
    assert status(backend, stopped) == TaskStatus.stopped


def test_a_queue_holding_tasks_is_not_deleted(backend: Backend) -> None:
    backend.create_queue("busy")
    task_id = new_task(backend)
    backend.enqueue(task_id, "busy")
    with pytest.raises(ConflictError) as exc:
        backend.delete_queue("busy")
    assert "busy" in str(exc.value)
    assert backend.queue_tasks("busy") == [task_id]
    backend.dequeue(task_id)
    backend.delete_queue("busy")
    assert "busy" not in pending(backend)


# -- claim ----------------------------------------------------------------------------------


def test_claim_marks_the_task_as_the_agents(backend: Backend) -> None:
    task_id = new_task(backend)
    backend.enqueue(task_id, "default")
    backend.register_agent(agent())
    rec = backend.claim(["default"], "a1-id")
    assert rec is not None and rec.id == task_id
    assert rec.status == TaskStatus.in_progress and rec.started is not None
    runtime = backend.get_runtime(task_id)
    assert runtime["_agent"] == "a1-id" and runtime["_queue"] == "default"
    (live,) = backend.get_agents()
    assert live.running == [task_id]
    assert backend.queue_tasks("default") == []
    assert backend.claim(["default"], "a1-id") is None


def test_claim_takes_from_the_first_queue_that_has_work(backend: Backend) -> None:
    for q in ("high", "low"):
        backend.create_queue(q)
    lows = [new_task(backend, "low1"), new_task(backend, "low2")]
    high = new_task(backend, "high")
    for task_id in lows:
        backend.enqueue(task_id, "low")
    backend.register_agent(agent(queues=("high", "low")))
    first = backend.claim(["high", "low"], "a1-id")
    assert first is not None and first.id == lows[0]
    backend.enqueue(high, "high")
    second = backend.claim(["high", "low"], "a1-id")
    assert second is not None and second.id == high
    assert backend.get_runtime(high)["_queue"] == "high"
    third = backend.claim(["high", "low"], "a1-id")
    assert third is not None and third.id == lows[1]
    assert backend.get_runtime(lows[1])["_queue"] == "low"
    # a queue not asked for is never claimed from
    other = new_task(backend, "other")
    backend.enqueue(other, "default")
    assert backend.claim(["high", "low"], "a1-id") is None
    assert backend.queue_tasks("default") == [other]


CLAIMER = """
import sys
from stepline.backend import get_backend
from stepline.core.records import AgentRecord

backend = get_backend()
me = sys.argv[1]
backend.register_agent(AgentRecord(id=me, name=me, queues=["default"]))
print("ready", flush=True)
sys.stdin.readline()
got = []
while (rec := backend.claim(["default"], me)) is not None:
    got.append(rec.id)
print(" ".join(got))
"""


@pytest.mark.slow
def test_each_task_is_claimed_by_exactly_one_process(backend: Backend, home: Path) -> None:
    ids = [new_task(backend, f"t{i}") for i in range(90)]
    for task_id in ids:
        backend.enqueue(task_id, "default")
    api = {"STEPLINE_API": url} if (url := getattr(backend, "url", "")).startswith("http") else {}
    with started_together(CLAIMER, [["p1"], ["p2"], ["p3"]], home, **api) as outputs:
        per_process = [out.split() for out, _ in outputs]
    counts = Counter(tid for got in per_process for tid in got)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    for who, got in zip(("p1", "p2", "p3"), per_process, strict=True):
        # each claimer sees the tasks in queue order
        assert got == sorted(got, key=ids.index)
        for task_id in got:
            assert backend.get_runtime(task_id)["_agent"] == who
    assert all(status(backend, t) == TaskStatus.in_progress for t in ids)
    assert pending(backend)["default"] == 0


# -- agents ---------------------------------------------------------------------------------


def test_register_get_and_remove_agents(backend: Backend) -> None:
    assert backend.get_agents() == []
    t0 = time.time()
    backend.register_agent(agent("a1", queues=("default", "cpu")))
    backend.register_agent(agent("a2"))
    a1, a2 = backend.get_agents()
    assert (a1.id, a1.name, a1.queues, a1.host, a1.pid) == (
        "a1-id", "a1", ["default", "cpu"], "testhost", 4242,
    )  # fmt: skip
    assert t0 <= a1.last_seen <= time.time() and a1.started >= t0 and a1.running == []
    assert a2.name == "a2"
    # registering again refreshes the record instead of adding one
    backend.register_agent(agent("a1", queues=("gpu",)))
    assert [(a.name, a.queues) for a in backend.get_agents()] == [
        ("a1", ["gpu"]),
        ("a2", ["default"]),
    ]
    backend.remove_agent("a1-id")
    assert [a.id for a in backend.get_agents()] == ["a2-id"]
    backend.remove_agent("a1-id")  # removing twice is harmless
    assert [a.id for a in backend.get_agents()] == ["a2-id"]


def test_heartbeat_records_and_reports_stopped_tasks(backend: Backend) -> None:
    backend.register_agent(agent())
    ids = [new_task(backend, f"t{i}") for i in range(3)]
    for task_id in ids:
        backend.enqueue(task_id, "default")
        assert backend.claim(["default"], "a1-id") is not None
    before = backend.get_agents()[0].last_seen
    assert backend.heartbeat("a1-id", ids, {"cpu": 12.5}) == []
    (rec,) = backend.get_agents()
    assert rec.running == ids and rec.info == {"cpu": 12.5} and rec.last_seen >= before
    backend.set_status(ids[0], TaskStatus.stopped)
    backend.set_status(ids[2], TaskStatus.completed)
    assert backend.heartbeat("a1-id", ids) == [ids[0], ids[2]]
    assert backend.get_agents()[0].info == {"cpu": 12.5}  # no info given: kept
    assert backend.heartbeat("a1-id", [ids[1]]) == []
    assert backend.get_agents()[0].running == [ids[1]]


def test_heartbeat_of_an_unknown_agent(backend: Backend) -> None:
    with pytest.raises(NotFoundError) as exc:
        backend.heartbeat("ghost", [])
    assert "ghost" in str(exc.value)
    assert backend.get_agents() == []


def claimed_by_dead_agent(backend: Backend, name: str = "dying", **runtime: str) -> str:
    """A task claimed by an agent whose timeout has already passed."""
    task_id = new_task(backend, "orphan", **runtime)
    backend.enqueue(task_id, "default")
    backend.register_agent(agent(name, timeout=0.0))
    rec = backend.claim(["default"], f"{name}-id")
    assert rec is not None and rec.id == task_id
    return task_id


def test_reap_fails_the_tasks_of_a_silent_agent(backend: Backend) -> None:
    backend.register_agent(agent("alive", timeout=3600))
    task_id = claimed_by_dead_agent(backend)
    reaped = wait_until(backend.reap_agents, what="the dead agent to be reaped")
    assert reaped == [(task_id, "failed")]
    rec = backend.get_task(task_id)
    assert rec.status == TaskStatus.failed
    assert "agent dying" in rec.status_reason and "heartbeat" in rec.status_reason
    lines = [ln for ln in backend.get_log(task_id) if ln.text.startswith("stepline:")]
    assert len(lines) == 1 and lines[0].level == "error" and "dying" in lines[0].text
    assert [a.name for a in backend.get_agents()] == ["alive"]
    assert backend.reap_agents() == []
    assert backend.queue_tasks("default") == []


def test_reap_leaves_live_agents_and_finished_tasks_alone(backend: Backend) -> None:
    backend.register_agent(agent("alive", timeout=3600))
    task_id = new_task(backend)
    backend.enqueue(task_id, "default")
    assert backend.claim(["default"], "alive-id") is not None
    done = claimed_by_dead_agent(backend)
    backend.set_status(done, TaskStatus.completed)

    def dying_is_gone() -> bool:
        assert backend.reap_agents() == []  # its only task had ended
        return all(a.name != "dying" for a in backend.get_agents())

    wait_until(dying_is_gone, what="the dead agent to be forgotten")
    assert status(backend, done) == TaskStatus.completed
    assert status(backend, task_id) == TaskStatus.in_progress
    assert [a.name for a in backend.get_agents()] == ["alive"]


def test_reap_requeues_once_when_asked(backend: Backend) -> None:
    task_id = claimed_by_dead_agent(backend, "first", _requeue_on_agent_loss="1")
    assert wait_until(backend.reap_agents) == [(task_id, "requeued")]
    rec = backend.get_task(task_id)
    assert rec.status == TaskStatus.queued and "agent first" in rec.status_reason
    assert backend.queue_tasks("default") == [task_id]
    runtime = backend.get_runtime(task_id)
    assert runtime["_agent_losses"] == "1"
    assert any("put back on queue 'default'" in ln.text for ln in backend.get_log(task_id))
    # the second loss is one too many
    backend.register_agent(agent("second", timeout=0.0))
    assert backend.claim(["default"], "second-id") is not None
    assert backend.get_runtime(task_id)["_agent"] == "second-id"
    assert wait_until(backend.reap_agents) == [(task_id, "failed")]
    rec = backend.get_task(task_id)
    assert rec.status == TaskStatus.failed and "agent second" in rec.status_reason
    assert backend.queue_tasks("default") == []


def test_a_reaped_agent_heartbeat_is_refused(backend: Backend) -> None:
    claimed_by_dead_agent(backend)
    wait_until(backend.reap_agents)
    with pytest.raises(NotFoundError):
        backend.heartbeat("dying-id", [])


def test_a_requeued_task_keeps_its_priority(backend: Backend) -> None:
    task_id = new_task(backend, "urgent", _requeue_on_agent_loss="1")
    backend.enqueue(task_id, "default", priority=5)
    backend.register_agent(agent("lost", timeout=0.0))
    assert backend.claim(["default"], "lost-id") is not None
    waiting = [new_task(backend, f"w{i}") for i in range(3)]
    for other in waiting:
        backend.enqueue(other, "default")
    assert wait_until(backend.reap_agents) == [(task_id, "requeued")]
    assert backend.queue_tasks("default") == [task_id, *waiting]
