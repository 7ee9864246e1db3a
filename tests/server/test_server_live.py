"""What the stepline server pushes as it happens: the change stream (``GET /api/v1/stream``,
Server-Sent Events) and the long polls (``claim`` with ``wait``, ``watch``).

* A change made through the server reaches a stream filtered to it (by parent, or by task
  id) without waiting for a poll; a change written straight into the same SQLite store by
  another writer reaches it within the server's external poll.
* ``log=ID`` streams the task's new console lines in order, with their sequence numbers;
  ``once=true`` sends what exists and ends; an unknown ``log`` task is a 404 JSON error.
* A long poll answers as soon as its condition holds and, when it never does, after its
  timeout with nothing.
* Artifacts through the server keep their file extension, and a file handed over with
  ``move=True`` becomes the client's cached copy (no download to read it back).

Each test runs a server in a thread over its own SQLite store and talks to it over loopback.
Waits are bounded by read timeouts and deadlines: a missing event fails the test, it never
hangs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stepline.backend.http.client import HttpBackend
from stepline.backend.sql.store import SqlBackend
from stepline.backend.storage import local_path_of
from stepline.core.errors import ArtifactNotFoundError, NotFoundError
from stepline.core.records import ArtifactRecord, LogLine, NewTask
from stepline.core.status import TaskStatus
from tests.serverproc import Served, serve

API = "/api/v1"
#: longest wait for something the server should do at once (a bound, not an expectation)
PROMPT = 5.0
#: longest wait for a stream woken by a write (the store poll is set to a minute there)
WAKE = 3.0
#: longest wait for an event a poll of the store finds (every 0.5 s)
POLLED = 10.0


@dataclass
class Live:
    """A server in a thread over ``store`` (its own SQLite file) and a client of it; the
    clients' homes go under ``home``."""

    served: Served
    store: SqlBackend
    client: HttpBackend
    home: Path

    @property
    def url(self) -> str:
        return self.served.url

    def requests_in_flight(self) -> int:
        """How many HTTP requests the server is answering now."""
        return len(self.served.server.server_state.tasks)

    def new_client(self, name: str) -> HttpBackend:
        return HttpBackend(self.url, home=self.home / name)


def open_store(home: Path) -> SqlBackend:
    return SqlBackend(f"sqlite:///{home / 'stepline.db'}", str(home / "artifacts"), home=home)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    home = tmp_path / "server"
    store = open_store(home)
    served = serve(store)
    client = HttpBackend(served.url, home=tmp_path / "client")
    try:
        yield Live(served, store, client, tmp_path)
    finally:
        client.close()
        served.stop()
        store.close()


@pytest.fixture
def notify_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the server look at the store for writes it was not told of only once a minute,
    so that within a test's bounds only its own wake-up (the notify of the route that wrote)
    can answer a stream or a long poll."""
    from stepline.server import hub

    monkeypatch.setattr(hub, "EXTERNAL_POLL", 60.0)  # read by each new Hub


class EventStream:
    """``GET /api/v1/stream`` read event by event; each read waits at most ``read_timeout``
    seconds (``httpx.ReadTimeout`` then fails the test)."""

    def __init__(self, url: str, params: dict[str, Any], read_timeout: float) -> None:
        self._http = httpx.Client(timeout=httpx.Timeout(10.0, read=read_timeout))
        self._request = self._http.stream("GET", f"{url}{API}/stream", params=params)
        self.response = self._request.__enter__()
        self._lines = self.response.iter_lines()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._request.__exit__(None, None, None)
        self._http.close()

    def next(self) -> tuple[str, Any]:
        """The next event with data, as ``(event, decoded data)``; ``("end", None)`` when the
        server ended the stream."""
        event, data = "message", list[str]()
        for line in self._lines:
            if not line:
                if data:
                    return event, json.loads("\n".join(data))
                event = "message"
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        return "end", None

    def next_of(self, kind: str) -> Any:
        """The data of the next event of ``kind`` (others are skipped)."""
        while True:
            event, data = self.next()
            assert event != "end", f"the stream ended before a {kind!r} event"
            if event == kind:
                return data


@contextlib.contextmanager
def primed_stream(live: Live, task_id: str, read_timeout: float) -> Iterator[EventStream]:
    """A stream of ``task_id``'s record and log that has looked at the store once: a line
    logged before it opened comes as its first event, so what the caller writes next can
    only reach it by a wake-up or a later look."""
    live.client.add_log([LogLine(task_id=task_id, text="primer")])
    params = {"task": task_id, "log": task_id}
    with EventStream(live.url, params, read_timeout=read_timeout) as stream:
        assert [line["text"] for line in stream.next_of("log")] == ["primer"]
        yield stream


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``fn`` in a thread; the returned function joins it and returns its result (or
    raises what it raised)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the caller by join()
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(60)
        assert not thread.is_alive(), "the thread did not finish within 60 s"
        if "error" in box:
            raise box["error"]
        return box.get("result")

    return join


def after_request_arrives(live: Live, action: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``action`` in a thread once the server is answering a request (the caller's long
    poll, the only one in flight), so the action happens while that request waits."""
    deadline = time.monotonic() + PROMPT
    while live.requests_in_flight():  # the last request's task may outlive its response
        assert time.monotonic() < deadline, "the server never became idle"
        time.sleep(0.005)

    def wait_then_act() -> Any:
        deadline = time.monotonic() + PROMPT
        while live.requests_in_flight() == 0:
            if time.monotonic() > deadline:
                raise AssertionError("the long poll never reached the server")
            time.sleep(0.005)
        return action()

    return in_thread(wait_then_act)


# -- the change stream -----------------------------------------------------------------------
@pytest.mark.parametrize("by", ["parent", "task"])
def test_stream_sends_a_task_event_when_its_status_changes(live: Live, by: str) -> None:
    run = live.client.create_task(NewTask(name="run", project="p", type="controller"))
    step = live.client.create_task(NewTask(name="step", project="p", parent=run.id))
    other = live.client.create_task(NewTask(name="other", project="p"))
    params = {"parent": run.id} if by == "parent" else {"task": step.id}
    with EventStream(live.url, params, read_timeout=PROMPT) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        live.client.set_status(other.id, TaskStatus.in_progress)  # not in the stream's filter
        live.client.set_status(step.id, TaskStatus.in_progress)
        data = stream.next_of("task")
        assert (data["id"], data["status"]) == (step.id, "in_progress")

        live.client.set_status(step.id, TaskStatus.completed)
        data = stream.next_of("task")
        assert (data["id"], data["status"]) == (step.id, "completed")


def test_stream_sends_new_log_lines_in_order_with_their_seq(live: Live) -> None:
    task = live.client.create_task(NewTask(name="t", project="p"))
    live.client.add_log([LogLine(task_id=task.id, text=f"line {i}") for i in range(2)])
    with EventStream(live.url, {"log": task.id}, read_timeout=PROMPT) as stream:
        got: list[dict[str, Any]] = list(stream.next_of("log"))
        assert [line["text"] for line in got] == ["line 0", "line 1"]
        live.client.add_log([LogLine(task_id=task.id, text="line 2")])
        live.client.add_log([LogLine(task_id=task.id, text=f"line {i}") for i in (3, 4)])
        while len(got) < 5:
            got += stream.next_of("log")
    assert [line["text"] for line in got] == [f"line {i}" for i in range(5)]
    seqs = [line["seq"] for line in got]
    assert all(isinstance(s, int) and s > 0 for s in seqs) and seqs == sorted(set(seqs))
    assert all(line["task_id"] == task.id for line in got)


@pytest.mark.parametrize("what", ["task", "log"])
def test_stream_is_woken_by_a_write_through_the_server(
    live: Live, notify_only: None, what: str
) -> None:
    task = live.client.create_task(NewTask(name="t", project="p"))
    with primed_stream(live, task.id, read_timeout=WAKE) as stream:
        if what == "task":
            live.client.set_status(task.id, TaskStatus.in_progress)
            assert stream.next_of("task")["status"] == "in_progress"
        else:
            live.client.add_log([LogLine(task_id=task.id, text="now")])
            assert [line["text"] for line in stream.next_of("log")] == ["now"]


def test_stream_log_after_skips_the_lines_seen(live: Live) -> None:
    task = live.client.create_task(NewTask(name="t", project="p"))
    live.client.add_log([LogLine(task_id=task.id, text=f"line {i}") for i in range(3)])
    seen = live.client.get_log(task.id)[1].seq
    events = list(live.client.stream(log=task.id, after=seen, once=True))
    texts = [line["text"] for kind, data in events if kind == "log" for line in data]
    assert texts == ["line 2"]


def test_stream_once_sends_what_exists_and_ends(live: Live) -> None:
    run = live.client.create_task(NewTask(name="run", project="p", type="controller"))
    steps = [
        live.client.create_task(NewTask(name=f"s{i}", project="p", parent=run.id)) for i in range(3)
    ]
    live.client.create_task(NewTask(name="other", project="p"))
    live.client.set_status(steps[0].id, TaskStatus.in_progress)
    live.client.add_log([LogLine(task_id=steps[0].id, text="hello")])

    events = list(live.client.stream(parent=run.id, since=0, once=True))  # ends by itself
    tasks = {data["id"]: data["status"] for kind, data in events if kind == "task"}
    assert tasks == {steps[0].id: "in_progress", steps[1].id: "created", steps[2].id: "created"}

    with EventStream(
        live.url, {"log": steps[0].id, "task": steps[0].id, "since": 0, "once": "true"}, PROMPT
    ) as stream:
        kinds: dict[str, Any] = {}
        while (event := stream.next())[0] != "end":
            kinds.setdefault(event[0], event[1])
    assert [line["text"] for line in kinds["log"]] == ["hello"]
    assert kinds["task"]["id"] == steps[0].id


def test_stream_of_an_unknown_task_log_is_404(live: Live) -> None:
    unknown = "0123456789abcdef0123456789abcdef"
    r = httpx.get(f"{live.url}{API}/stream", params={"log": unknown}, timeout=PROMPT)
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "TaskNotFoundError" and unknown in body["message"]
    with pytest.raises(NotFoundError):
        next(live.client.stream(log=unknown))


def test_stream_sees_writes_made_straight_to_the_store(live: Live) -> None:
    """Another writer on the same SQLite file (an embedded client, another server) does not
    notify this server; its poll of the store finds the change."""
    task = live.client.create_task(NewTask(name="t", project="p"))
    writer = open_store(Path(live.store.home))
    try:
        with primed_stream(live, task.id, read_timeout=POLLED) as stream:
            writer.set_status(task.id, TaskStatus.in_progress)
            data = stream.next_of("task")
            assert (data["id"], data["status"]) == (task.id, "in_progress")
            writer.add_log([LogLine(task_id=task.id, text="from elsewhere")])
            lines = stream.next_of("log")
            assert [line["text"] for line in lines] == ["from elsewhere"]
    finally:
        writer.close()


# -- long polls ------------------------------------------------------------------------------
def test_claim_with_wait_returns_once_a_task_is_queued(live: Live, notify_only: None) -> None:
    live.client.create_queue("q")
    task = live.client.create_task(NewTask(name="job", project="p"))
    producer = live.new_client("producer")
    try:
        enqueued = after_request_arrives(live, lambda: producer.enqueue(task.id, "q"))
        started = time.monotonic()
        claimed = live.client.claim(["q"], "agent-1", wait=10)
        took = time.monotonic() - started
        enqueued()
    finally:
        producer.close()
    assert claimed is not None and claimed.id == task.id
    assert claimed.status == TaskStatus.in_progress
    assert took < PROMPT, f"claim took {took:.2f}s of its 10 s wait"
    assert live.client.queue_tasks("q") == []


def test_claim_with_wait_on_an_empty_queue_returns_none_after_the_wait(live: Live) -> None:
    live.client.create_queue("q")
    started = time.monotonic()
    assert live.client.claim(["q"], "agent-1", wait=0.3) is None
    took = time.monotonic() - started
    assert 0.3 <= took < PROMPT, took


def test_watch_returns_as_soon_as_a_status_changes(live: Live, notify_only: None) -> None:
    task = live.client.create_task(NewTask(name="t", project="p"))
    writer = live.new_client("writer")
    try:
        changed = after_request_arrives(
            live, lambda: writer.set_status(task.id, TaskStatus.in_progress)
        )
        started = time.monotonic()
        seen = live.client.watch({task.id: TaskStatus.created}, timeout=10)
        took = time.monotonic() - started
        changed()
    finally:
        writer.close()
    assert [(rec.id, rec.status) for rec in seen] == [(task.id, TaskStatus.in_progress)]
    assert took < PROMPT, f"watch took {took:.2f}s of its 10 s timeout"


def test_watch_returns_nothing_after_its_timeout(live: Live) -> None:
    task = live.client.create_task(NewTask(name="t", project="p"))
    started = time.monotonic()
    assert live.client.watch({task.id: TaskStatus.created}, timeout=0.3) == []
    took = time.monotonic() - started
    assert 0.3 <= took < PROMPT, took
    # and a status that differs already is answered at once
    assert [r.id for r in live.client.watch({task.id: TaskStatus.queued}, timeout=10)] == [task.id]


# -- artifacts through the server ------------------------------------------------------------
@pytest.mark.parametrize("filename", ["table.csv", "bundle.tar.gz"])
def test_uploaded_artifact_keeps_its_extension(live: Live, tmp_path: Path, filename: str) -> None:
    task = live.client.create_task(NewTask(name="t", project="p"))
    src = tmp_path / filename
    src.write_bytes(b"a,b\n1,2\n")
    record = ArtifactRecord(task.id, "data", "file", "", "", 0)
    stored = live.client.put_artifact(record, str(src))
    ext = filename[filename.index(".") :]
    assert stored.url.endswith(ext), stored.url
    assert live.client.get_artifacts(task.id)[0].url == stored.url
    reader = live.new_client("reader")
    try:
        path = reader.artifact_local_path(stored)
    finally:
        reader.close()
    assert path.endswith(ext) and Path(path).read_bytes() == b"a,b\n1,2\n"


def test_moved_artifact_is_read_from_the_client_cache(live: Live, tmp_path: Path) -> None:
    task = live.client.create_task(NewTask(name="t", project="p"))
    payload = os.urandom(100_000)
    src = tmp_path / "weights.bin"
    src.write_bytes(payload)
    stored = live.client.put_artifact(
        ArtifactRecord(task.id, "weights", "bytes", "", "", 0), str(src), move=True
    )
    assert not src.exists()
    assert stored.size == len(payload)

    # with the server's copy gone, only a read that needs no download can succeed
    os.unlink(local_path_of(stored.url))
    path = live.client.artifact_local_path(stored)
    assert Path(path).read_bytes() == payload
    assert Path(path).is_relative_to(live.client.cache_dir)
    elsewhere = live.new_client("elsewhere")  # an empty cache must download, and cannot
    try:
        with pytest.raises(ArtifactNotFoundError):
            elsewhere.artifact_local_path(stored)
    finally:
        elsewhere.close()
