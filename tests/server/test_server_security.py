"""What the stepline server guarantees about who may use it and what a request may do.

* API tokens: none needed on loopback until one exists; once one does, every request but
  ``/health`` carries one (``Authorization: Bearer`` or the ``stepline_token`` cookie), a
  revoked one is refused, and the store keeps only their sha256.
* ``stepline server`` refuses to listen beyond loopback, or with ``--require-token``, when no
  token exists.
* Request bodies and uploads have size limits (413, and no partial upload left behind).
* No name, upload id or url in a request reaches outside the artifact storage.
* Errors are JSON ``{"error", "message", "detail"}``, never a stack trace.
* The HTTP client says which server it could not reach, and rides out a server restart.

Servers run as real ``stepline server`` processes where the CLI itself is under test, and in a
thread of the test process (``tests.serverproc.serve``) where only the application is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
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
from stepline.backend.sql.tokens import SqlTokens
from stepline.backend.storage import local_path_of
from stepline.core.errors import AuthError, RequestTooLargeError, StoreError
from stepline.core.records import ArtifactRecord, LogLine, NewTask
from stepline.core.status import TaskStatus
from tests.serverproc import Served, ServerProc, serve, server_env, start_server

API = "/api/v1"
#: how long a test waits for something the server does within a few seconds
DEADLINE = 15.0


# -- helpers ---------------------------------------------------------------------------------
def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``stepline ARGS`` as a child process on ``home``."""
    return subprocess.run(
        [sys.executable, "-m", "stepline.cli.main", *args],
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_token(home: Path, name: str) -> str:
    done = cli(home, "server", "token", "create", name)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("stp_"), done.stdout
    return secret


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def stop(server: ServerProc) -> None:
    """Stop a ``stepline server`` process and close its output pipe (``ServerProc.stop``
    leaves the pipe open, which warns as an unclosed file)."""
    server.stop()
    if server.proc.stdout is not None:
        server.proc.stdout.close()  # waits for the reader thread's last read (EOF)


@contextlib.contextmanager
def running_server(home: Path, *args: str) -> Iterator[ServerProc]:
    """A ``stepline server`` process on ``home`` for the ``with`` block."""
    server = start_server(home, *args)
    try:
        yield server
    finally:
        stop(server)


def refused_with(url: str, headers: dict[str, str]) -> httpx.Response | None:
    """The response to ``GET url`` if it is a 401."""
    r = httpx.get(url, headers=headers, timeout=10)
    return r if r.status_code == 401 else None


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_error(r: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    """``r`` is a JSON error of ``status`` (and class ``error``) without a stack trace."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    assert body["message"] and isinstance(body.get("error"), str), body
    if error is not None:
        assert body["error"] == error, body
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text
    return body


@dataclass
class Local:
    """A server in a thread over a SQLite store under ``home``."""

    served: Served
    store: SqlBackend
    home: Path
    http: httpx.Client

    @property
    def storage_root(self) -> Path:
        return Path(self.store.storage.root)

    @property
    def uploads(self) -> Path:
        return Path(self.served.server.config.app.state.uploads)


def open_store(home: Path) -> SqlBackend:
    return SqlBackend(f"sqlite:///{home / 'stepline.db'}", str(home / "artifacts"), home=home)


@contextlib.contextmanager
def token_store(home: Path) -> Iterator[SqlTokens]:
    """The tokens of the store under ``home``, opened directly (as the CLI does)."""
    store = open_store(home)
    try:
        yield SqlTokens(store)
    finally:
        store.close()


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[Callable[..., Local]]:
    """Start servers in threads (``create_app`` keywords as arguments); all stop at the end."""
    started: list[Local] = []

    def start(**app_kw: Any) -> Local:
        home = tmp_path / f"server{len(started)}"
        store = open_store(home)
        served = serve(store, **app_kw)
        local = Local(served, store, home, httpx.Client(base_url=served.url + API, timeout=30))
        started.append(local)
        return local

    yield start
    for local in started:
        local.http.close()
        local.served.stop()
        local.store.close()


# -- tokens ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_tokens_from_none_to_created_used_listed_and_revoked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_server(home) as server:
        tasks = f"{server.url}{API}/tasks"
        # no token exists: a loopback server is open
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert httpx.get(tasks, timeout=10).status_code == 200
        open_client = HttpBackend(server.url, home=tmp_path / "open", retries=1)
        try:
            task = open_client.create_task(NewTask(name="t", project="p"))
            assert open_client.get_task(task.id).name == "t"

            secret = create_token(home, "ci")
            with token_store(home) as tokens:
                other, _ = tokens.create("agent-gpu1")
            no_token = wait_until(
                lambda: refused_with(tasks, {}),
                "a request without a token is refused once a token exists",
            )
            with pytest.raises(AuthError, match="STEPLINE_TOKEN"):
                open_client.get_task(task.id)
            with pytest.raises(AuthError):
                open_client.create_task(NewTask(name="u", project="p"))
        finally:
            open_client.close()
        body = assert_error(no_token, 401, "AuthError")
        assert "STEPLINE_TOKEN" in body["message"]
        assert "stepline server token create" in body["message"]

        wrong = httpx.get(tasks, headers=bearer("stp_" + "x" * 43), timeout=10)
        body = assert_error(wrong, 401, "AuthError")
        assert "STEPLINE_TOKEN" in body["message"]
        assert_error(httpx.get(tasks, headers=bearer("not-a-token"), timeout=10), 401)

        assert_error(httpx.get(tasks, headers=bearer(other.id), timeout=10), 401)  # not a secret
        assert httpx.get(tasks, headers=bearer(secret), timeout=10).status_code == 200
        cookie = httpx.get(tasks, headers={"Cookie": f"stepline_token={secret}"}, timeout=10)
        assert cookie.status_code == 200
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}

        client = HttpBackend(server.url, home=tmp_path / "client", token=secret)
        try:
            made = client.create_task(NewTask(name="with token", project="p"))
            assert client.get_task(made.id).name == "with token"
            assert client.get_task(task.id).name == "t"
        finally:
            client.close()

        listed = cli(home, "server", "token", "list")
        assert listed.returncode == 0, listed.stderr
        assert "ci" in listed.stdout and "agent-gpu1" in listed.stdout
        assert "active" in listed.stdout and secret not in listed.stdout
        as_json = cli(home, "server", "token", "list", "--json")
        assert as_json.returncode == 0, as_json.stderr
        rows = {row["name"]: row for row in json.loads(as_json.stdout)}
        assert set(rows) == {"ci", "agent-gpu1"}
        assert rows["ci"]["revoked"] is None and rows["ci"]["last_used"] is not None
        assert secret not in as_json.stdout

        # the store keeps the sha256 of a token, never the token
        raw = b"".join(p.read_bytes() for p in sorted(home.glob("stepline.db*")))
        assert hashlib.sha256(secret.encode()).hexdigest().encode() in raw
        assert secret.encode() not in raw and secret[4:].encode() not in raw

        revoked = cli(home, "server", "token", "revoke", "ci")
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked" in revoked.stdout
        refused = wait_until(
            lambda: refused_with(tasks, bearer(secret)),
            "a revoked token is refused (the server remembers a checked token for 2 s)",
        )
        assert_error(refused, 401, "AuthError")
        with token_store(home) as tokens:
            state = {t.name: t.revoked for t in tokens.list()}
        assert state["ci"] is not None and state["agent-gpu1"] is None


@pytest.mark.slow
def test_token_names_are_unique_and_revoking_an_unknown_one_fails(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with token_store(home) as tokens:
        tokens.create("ci")
    again = cli(home, "server", "token", "create", "ci")
    assert again.returncode != 0 and "exists already" in again.stdout + again.stderr
    assert "stp_" not in again.stdout
    missing = cli(home, "server", "token", "revoke", "nobody")
    assert missing.returncode != 0
    assert "token list" in missing.stdout + missing.stderr


@pytest.mark.slow
def test_server_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    refused = cli(home, "server", "--host", "0.0.0.0", "--port", "0")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = refused.stdout + refused.stderr
    assert "token create" in said and "stepline server on" not in said

    with token_store(home) as tokens:
        _, secret = tokens.create("ci")
    with running_server(home, "--host", "0.0.0.0") as server:
        assert server.url.startswith("http://0.0.0.0:")
        port = server.url.rsplit(":", 1)[1]
        tasks = f"http://127.0.0.1:{port}{API}/tasks"
        assert_error(httpx.get(tasks, timeout=10), 401, "AuthError")
        assert httpx.get(tasks, headers=bearer(secret), timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_require_token_on_loopback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    refused = cli(home, "server", "--require-token", "--port", "0")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "token create" in refused.stdout + refused.stderr

    with token_store(home) as tokens:
        _, secret = tokens.create("ci")
    with running_server(home, "--require-token") as server:
        tasks = f"{server.url}{API}/tasks"
        assert_error(httpx.get(tasks, timeout=10), 401, "AuthError")
        assert httpx.get(tasks, headers=bearer(secret), timeout=10).status_code == 200


# -- size limits -----------------------------------------------------------------------------
def test_json_body_over_the_limit_is_413(local_server: Callable[..., Local]) -> None:
    srv = local_server(max_body=4096)
    task = srv.store.create_task(NewTask(name="t", project="p"))
    small = srv.http.post("/log", json=[{"task_id": task.id, "text": "fits"}])
    assert small.status_code == 204, small.text

    big = srv.http.post("/log", json=[{"task_id": task.id, "text": "x" * 5000}])
    body = assert_error(big, 413, "RequestTooLargeError")
    assert "--max-body-mb" in body["message"]

    client = HttpBackend(srv.served.url, home=srv.home / "client")
    try:
        with pytest.raises(RequestTooLargeError):
            client.add_log([LogLine(task_id=task.id, text="y" * 100) for _ in range(100)])
    finally:
        client.close()
    assert [line.text for line in srv.store.get_log(task.id)] == ["fits"]


def test_chunked_json_body_over_the_limit_is_413(local_server: Callable[..., Local]) -> None:
    srv = local_server(max_body=1024)
    task = srv.store.create_task(NewTask(name="t", project="p"))
    line = json.dumps({"task_id": task.id, "text": "x" * 100}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while reading
        yield b"["
        for i in range(20):
            yield (b"," if i else b"") + line
        yield b"]"

    r = srv.http.post("/log", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "RequestTooLargeError")


def test_upload_over_the_limit_is_413_and_leaves_no_file(
    local_server: Callable[..., Local], tmp_path: Path
) -> None:
    srv = local_server(max_upload=4096)
    octets = {"Content-Type": "application/octet-stream"}
    task = srv.store.create_task(NewTask(name="t", project="p"))

    declared = srv.http.post("/uploads", content=b"x" * 5000, headers=octets)
    assert_error(declared, 413, "RequestTooLargeError")

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while streaming to disk
        for _ in range(10):
            yield b"y" * 1000

    streamed = srv.http.post("/uploads", content=chunks(), headers=octets)
    assert_error(streamed, 413, "RequestTooLargeError")
    assert list(srv.uploads.iterdir()) == []

    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * 5000)
    client = HttpBackend(srv.served.url, home=srv.home / "client")
    try:
        with pytest.raises(RequestTooLargeError):
            client.put_artifact(ArtifactRecord(task.id, "big", "bytes", "", "", 0), str(big))
    finally:
        client.close()
    assert list(srv.uploads.iterdir()) == []
    assert srv.store.get_artifacts(task.id) == []
    assert big.read_bytes() == b"z" * 5000

    # the folder checked above is the one uploads go to: one under the limit waits there
    fits = srv.http.post("/uploads", content=b"ok", headers=octets)
    assert fits.status_code == 201, fits.text
    assert [p.name for p in srv.uploads.iterdir()] == [f"{fits.json()['id']}.bin"]


# -- nothing outside the storage -------------------------------------------------------------
def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_names_ids_and_urls_cannot_reach_outside_the_storage(
    local_server: Callable[..., Local], tmp_path: Path
) -> None:
    srv = local_server()
    task = srv.store.create_task(NewTask(name="t", project="p"))
    octets = {"Content-Type": "application/octet-stream"}
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    srv.http.get("/tasks")  # the store's files exist before the snapshot
    before = files_under(tmp_path)

    def upload() -> str:
        r = srv.http.post("/uploads", content=b"payload", headers=octets)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    commits = f"/tasks/{task.id}/artifacts"
    names = [
        "../x",
        "../../../x",
        "..",
        ".",
        "/etc/x",
        str(outside),
        "a/../../x",
        "..\\x",
        "x\0y",
        "",
    ]
    for name in names:
        r = srv.http.post(commits, json={"name": name, "upload": upload()})
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert_error(r, r.status_code)
    for upload_id in ["../../etc/passwd", "..", "/etc/passwd", "../" + "ab" * 16, "a/b"]:
        r = srv.http.post(commits, json={"name": "ok", "upload": upload_id})
        assert_error(r, 422, "ValidationError")
    inside = (srv.storage_root / task.id / "artifacts" / "x.bin").as_uri()
    urls = [
        "file:///etc/passwd",
        outside.as_uri(),
        str(outside),
        inside,
        "http://example.invalid/x",
    ]
    for url in urls:
        r = srv.http.post(commits, json={"name": "ok", "url": url, "sha256": "0" * 64, "size": 6})
        body = assert_error(r, 422, "ValidationError")
        assert "POST /uploads" in body["message"]
    art = f"/tasks/{task.id}/artifacts"
    paths = [
        f"{art}/..%2Fx",
        f"{art}/..%2Fx/content",
        f"{art}/%2E%2E/content",
        f"{art}/..%2F..%2F..%2Fetc%2Fpasswd/content",
        f"{art}/%2Fetc%2Fpasswd/content",
        "/tasks/%2E%2E/artifacts",
        "/tasks/..%2F..%2Fx/artifacts/x/content",
    ]
    for path in paths:
        for method in ("GET", "DELETE"):
            r = srv.http.request(method, path)
            assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
            assert_error(r, r.status_code)
    r = srv.http.post("/tasks/%2E%2E/artifacts", json={"name": "ok", "upload": upload()})
    assert_error(r, 404)

    # the client's file name only lends its extension
    r = srv.http.post(
        commits, json={"name": "ok", "upload": upload(), "filename": "../../../../evil.csv"}
    )
    assert r.status_code == 201, r.text
    stored = Path(local_path_of(r.json()["url"])).resolve()
    assert stored.is_relative_to(srv.storage_root.resolve()) and stored.suffix == ".csv"
    assert stored.read_bytes() == b"payload"

    after = files_under(tmp_path)
    new = after - before
    assert new == {stored}, sorted(map(str, new))
    assert outside.read_bytes() == b"secret"
    assert [a.name for a in srv.store.get_artifacts(task.id)] == ["ok"]
    assert list(srv.uploads.iterdir()) == []


# -- errors ----------------------------------------------------------------------------------
def test_errors_are_json_with_error_and_message_and_no_trace(
    local_server: Callable[..., Local],
) -> None:
    srv = local_server(max_body=1 << 16)
    task = srv.store.create_task(NewTask(name="t", project="p"))
    srv.store.set_status(task.id, TaskStatus.completed, force=True)
    h = srv.http
    as_json = {"Content-Type": "application/json"}
    cases: list[tuple[httpx.Response, int]] = [
        (h.get("/no/such/route"), 404),
        (h.get("/tasks/0123456789abcdef0123456789abcdef"), 404),
        (h.put("/tasks"), 405),
        (h.post("/tasks", content=b"{not json", headers=as_json), 422),
        (h.post("/tasks", json={"name": 1}), 422),
        (h.post("/tasks", json={"name": "x", "project": "p", "status": "bogus"}), 422),
        (h.get("/tasks", params={"limit": -1}), 422),
        (h.get("/tasks", params={"order_by": "bogus"}), 422),
        (h.post(f"/tasks/{task.id}/status", json={"status": "queued"}), 409),
        (h.post("/claim", json={"queues": ["q"], "agent_id": "a", "wait": 1e9}), 422),
        (h.post("/log", json=[{"task_id": task.id, "text": "x" * (1 << 17)}]), 413),
        (h.get("/stream", params={"log": "0123456789abcdef0123456789abcdef"}), 404),
        (h.get(f"/tasks/{task.id}/artifacts/nope/content"), 404),
    ]
    for r, status in cases:
        assert_error(r, status)

    # a store that fails underneath: a 500 that names the failure, still without a trace
    with sqlite3.connect(srv.home / "stepline.db") as con:
        con.execute("DROP TABLE agents")
    crashed = h.get("/agents")
    body = assert_error(crashed, 500)
    assert "agents" in body["message"]


# -- the client and an absent or restarting server -------------------------------------------
def test_client_names_a_server_it_cannot_reach(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = HttpBackend(url, home=tmp_path / "client", retries=1)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            client.get_task("0123456789abcdef0123456789abcdef")
        assert time.monotonic() - started < 10
    finally:
        client.close()
    assert url in str(caught.value) and "stepline server" in str(caught.value)
    assert "STEPLINE_API" in str(caught.value)


@pytest.mark.slow
def test_client_rides_out_a_server_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    first = start_server(home, "--port", str(port))
    client = HttpBackend(first.url, home=tmp_path / "client")
    try:
        task = client.create_task(NewTask(name="before", project="p"))
        stop(first)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{first.url}/health", timeout=5)

        # a write sent while nothing listens is retried until the new server answers
        result: dict[str, Any] = {}

        def write() -> None:
            try:
                result["task"] = client.create_task(NewTask(name="during", project="p"))
            except Exception as exc:  # reported by the assertion below
                result["error"] = exc

        writer = threading.Thread(target=write)
        writer.start()
        second = start_server(home, "--port", str(port))
        try:
            assert second.url == first.url
            writer.join(60)
            assert not writer.is_alive()
            assert "error" not in result, result
            assert client.get_task(result["task"].id).name == "during"
            assert client.get_task(task.id).name == "before"
            assert client.create_task(NewTask(name="after", project="p")).name == "after"
        finally:
            stop(second)
    finally:
        client.close()
        stop(first)
