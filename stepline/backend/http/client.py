"""``HttpBackend``: the ``Backend`` Protocol over a stepline server (``STEPLINE_API``).

* One pooled ``httpx.Client`` per process (a forked child opens its own).
* A request that could not reach the server (connection refused or reset before it was sent)
  is retried with backoff, so a server restart is ridden out; so is a 503 (store busy).
  A request that may have reached the server is not repeated unless it is a read.
* Errors come back as the same ``StepLineError`` subclasses the embedded store raises.
* Metrics and log lines are sent in the batches the SDK's logger gathers: one request each.
* Artifacts: uploads stream the file (never read whole) with its sha256 computed on the way,
  and the server checks it; downloads stream into this machine's cache, checked against the
  recorded size and sha256, and are kept there by hash. When the server's storage is an
  object store (not its local folder), bytes go straight to it and only the record goes
  through the server.
* ``claim(wait=...)`` and ``watch`` are long polls: the server answers when something
  changes, so waiting costs no requests in a loop (``pushes_changes``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import httpx

from stepline.backend.http import convert as w
from stepline.backend.protocol import KEEP
from stepline.backend.storage import CHUNK, BlobStorage, file_digest
from stepline.core.errors import (
    ArtifactCorruptError,
    ArtifactNotFoundError,
    AuthError,
    NotFoundError,
    RequestTooLargeError,
    StepLineError,
    StoreError,
    TaskNotFoundError,
)
from stepline.core.paths import check_name, storage_key
from stepline.core.records import (
    AgentRecord,
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
from stepline.core.status import TaskStatus

#: tries for a request that could not reach the server, and the first pause between them
RETRIES = 8
BACKOFF = 0.1
#: artifacts up to this size are checked against their sha256 when read from the cache
VERIFY_LIMIT = 64 << 20
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _task_id(task_id: str) -> str:
    if not isinstance(task_id, str) or not _ID.match(task_id):
        raise TaskNotFoundError(str(task_id))
    return task_id


def _retryable(exc: Exception, method: str) -> bool:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True
    # a kept-alive connection the server closed: a read is safe to send again
    return method == "GET" and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError))


class HttpBackend:
    """``backend.protocol.Backend`` over ``url``'s REST API."""

    pushes_changes = True
    poll_interval = 0.0

    def __init__(
        self,
        url: str,
        *,
        home: Path,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = RETRIES,
    ) -> None:
        self.url = url.rstrip("/")
        self.home = home
        self.cache_dir = home / "cache"
        self.retries = retries
        headers = {"User-Agent": "stepline"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.url + w.API,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._info: dict[str, Any] | None = None
        self._direct: BlobStorage | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpBackend({self.url!r})"

    def close(self) -> None:
        self._client.close()

    # -- requests --------------------------------------------------------------------------
    def _send(
        self, method: str, path: str, *, body: Callable[[], Any] | None = None, **kw: Any
    ) -> httpx.Response:
        """Send a request, trying again while the server cannot be reached. ``body``: makes
        a fresh (streamed) body for each try."""
        pause = BACKOFF
        for attempt in range(self.retries + 1):
            try:
                if body is not None:
                    kw["content"] = body()
                r = self._client.request(method, path, **kw)
            except httpx.TimeoutException as exc:
                if attempt < self.retries and _retryable(exc, method):
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                raise StoreError(
                    f"the stepline server at {self.url} did not answer {method} {path} in "
                    f"time ({type(exc).__name__}); it may be overloaded"
                ) from None
            except httpx.TransportError as exc:
                if attempt < self.retries and _retryable(exc, method):
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                raise StoreError(
                    f"cannot reach the stepline server at {self.url} ({exc}); check that "
                    "`stepline server` runs there and that STEPLINE_API is right"
                ) from None
            if r.status_code == 503 and attempt < self.retries:
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            return r
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self._send(method, path, **kw)
        if r.status_code >= 400:
            raise self._error(r)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def _error(self, r: httpx.Response) -> StepLineError:
        try:
            body = r.json()
        except ValueError:
            body = {"message": r.text[:500] or r.reason_phrase}
        if r.status_code == 401:
            message = body.get("message", "") if isinstance(body, dict) else ""
            return AuthError(
                f"the stepline server at {self.url} refused the request: {message} "
                "(set STEPLINE_TOKEN to a token it knows)"
            )
        if r.status_code == 413:
            return w.error_from(body, RequestTooLargeError)
        return w.error_from(body, StoreError)

    def info(self) -> dict[str, Any]:
        """The server's version, storage and whether it needs a token."""
        if self._info is None:
            self._info = self._call("GET", "/info")
        return self._info

    # -- tasks ----------------------------------------------------------------------------
    def create_task(self, new: NewTask) -> TaskRecord:
        return w.task_record(self._call("POST", "/tasks", json=w.dump(new)))

    def get_task(self, task_id: str) -> TaskRecord:
        return w.task_record(self._call("GET", f"/tasks/{_task_id(task_id)}"))

    def find_tasks(self, flt: TaskFilter) -> list[TaskRecord]:
        body = w.dump(flt)
        return [w.task_record(d) for d in self._call("POST", "/tasks/find", json=body)]

    def update_task(
        self,
        task_id: str,
        *,
        name: str = KEEP,
        comment: str = KEEP,
        parent: str | None = KEEP,
        type: str = KEEP,
        script: dict[str, Any] = KEEP,
        archived: bool = KEEP,
        published: bool = KEEP,
        project: str = KEEP,
    ) -> TaskRecord:
        given = {
            "name": name, "comment": comment, "parent": parent, "type": type,
            "script": script, "archived": archived, "published": published,
            "project": project,
        }  # fmt: skip
        body = {k: v for k, v in given.items() if v is not KEEP}
        return w.task_record(self._call("PATCH", f"/tasks/{_task_id(task_id)}", json=body))

    def set_status(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        message: str = "",
        reason: str = "",
        force: bool = False,
    ) -> TaskRecord:
        body = {"status": TaskStatus(status).value, "message": message, "reason": reason,
                "force": force}  # fmt: skip
        return w.task_record(self._call("POST", f"/tasks/{_task_id(task_id)}/status", json=body))

    def clone_task(
        self,
        task_id: str,
        *,
        name: str | None = None,
        project: str | None = None,
        comment: str | None = None,
        parent: str | None = None,
    ) -> TaskRecord:
        body = {"name": name, "project": project, "comment": comment, "parent": parent}
        return w.task_record(self._call("POST", f"/tasks/{_task_id(task_id)}/clone", json=body))

    def delete_task(self, task_id: str) -> None:
        self._call("DELETE", f"/tasks/{_task_id(task_id)}")
        self._forget(task_id)

    def set_tags(self, task_id: str, tags: Sequence[str]) -> None:
        self._call("PUT", f"/tasks/{_task_id(task_id)}/tags", json={"tags": list(tags)})

    # -- parameters, configuration objects, runtime properties ----------------------------
    def set_params(self, task_id: str, params: Sequence[Param], *, replace: bool = False) -> None:
        body = {"params": w.dump(list(params)), "replace": replace}
        self._call("POST", f"/tasks/{_task_id(task_id)}/params", json=body)

    def get_params(self, task_id: str) -> list[Param]:
        return w.records(Param, self._call("GET", f"/tasks/{_task_id(task_id)}/params"))

    def delete_params(self, task_id: str, keys: Sequence[str]) -> None:
        self._call("POST", f"/tasks/{_task_id(task_id)}/params/delete", json={"keys": list(keys)})

    def set_configs(self, task_id: str, configs: Sequence[ConfigObject]) -> None:
        body = {"configs": w.dump(list(configs))}
        self._call("POST", f"/tasks/{_task_id(task_id)}/configs", json=body)

    def get_configs(self, task_id: str) -> list[ConfigObject]:
        return w.records(ConfigObject, self._call("GET", f"/tasks/{_task_id(task_id)}/configs"))

    def set_runtime(self, task_id: str, values: Mapping[str, str]) -> None:
        body = {"values": {str(k): str(v) for k, v in values.items()}}
        self._call("POST", f"/tasks/{_task_id(task_id)}/runtime", json=body)

    def get_runtime(self, task_id: str) -> dict[str, str]:
        return dict(self._call("GET", f"/tasks/{_task_id(task_id)}/runtime"))

    # -- artifacts --------------------------------------------------------------------------
    def _direct_storage(self) -> BlobStorage | None:
        """The server's storage, when it is an object store this client can write to."""
        info = self.info()
        if info.get("storage_local", True) or not info.get("storage"):
            return None
        with self._lock:
            if self._direct is None:
                self._direct = BlobStorage(str(info["storage"]), self.cache_dir)
        return self._direct

    def put_artifact(
        self,
        record: ArtifactRecord,
        local_path: str,
        *,
        move: bool = False,
        defer_hash: bool = False,
        sha256: str = "",
    ) -> ArtifactRecord:
        check_name(record.name, f"artifact name (task {record.task_id})")
        task_id = _task_id(record.task_id)
        try:
            size = os.path.getsize(local_path)
        except FileNotFoundError:
            raise ArtifactNotFoundError(
                f"artifact {record.name!r} of task {record.task_id}: the file to upload, "
                f"{local_path}, does not exist"
            )
        body: dict[str, Any] = {
            "name": record.name, "type": record.type, "mode": record.mode,
            "preview": record.preview, "metadata": record.metadata,
            "content_type": record.content_type, "filename": os.path.basename(local_path),
        }  # fmt: skip
        direct = self._direct_storage()
        if direct is not None:
            self.get_task(task_id)  # nothing is written for an unknown task
            digest = sha256 or file_digest(local_path)[0]
            ext = "".join(Path(local_path).suffixes[-2:])[:32]
            key = storage_key(task_id, "artifacts", f"{uuid.uuid4().hex}{ext}")
            url = direct.put(local_path, key)
            body.update(url=url, sha256=digest, size=size)
            try:
                stored = w.artifact_record(
                    self._call("POST", f"/tasks/{task_id}/artifacts", json=body)
                )
            except BaseException:
                direct.delete(url)
                raise
        else:
            hashers: list[Any] = []

            def stream() -> Iterator[bytes]:
                hashers.append(hashlib.sha256())
                return _chunks(local_path, hashers[-1])

            sent = self._call(
                "POST",
                "/uploads",
                body=stream,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(size)},
            )  # fmt: skip
            digest = hashers[-1].hexdigest()
            if sent["sha256"] != digest or sent["size"] != size:
                raise ArtifactCorruptError(
                    f"artifact {record.name!r} of task {record.task_id}: {local_path} changed "
                    "while it was being uploaded; upload it again once it is written"
                )
            body.update(upload=sent["id"], sha256=digest, size=size)
            stored = w.artifact_record(self._call("POST", f"/tasks/{task_id}/artifacts", json=body))
        if move:
            self._keep(stored, local_path)
        return stored

    def _cache_path(self, record: ArtifactRecord) -> Path:
        name = unquote(os.path.basename(urlparse(record.url).path)) or "data"
        if len(name.encode()) > 200 or name.startswith("."):
            name = "data" + "".join(Path(name).suffixes[-2:])[:32]
        tag = record.hash or hashlib.sha256(record.url.encode()).hexdigest()
        return self.cache_dir / "artifacts" / record.task_id / tag[:32] / name

    def _keep(self, record: ArtifactRecord, local_path: str) -> None:
        """A moved file becomes this machine's cached copy (readers here need no download)."""
        dest = self._cache_path(record)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local_path, dest)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(local_path)

    def _forget(self, task_id: str) -> None:
        """Drop this machine's cached copies of the task's artifacts."""
        import shutil

        shutil.rmtree(self.cache_dir / "artifacts" / task_id, ignore_errors=True)

    def wait_for_uploads(self) -> None:
        return None  # uploads are whole when put_artifact returns

    def get_artifacts(self, task_id: str) -> list[ArtifactRecord]:
        items = self._call("GET", f"/tasks/{_task_id(task_id)}/artifacts")
        return [w.artifact_record(d) for d in items]

    def artifact_local_path(self, record: ArtifactRecord, *, verify: bool | None = None) -> str:
        what = f"artifact {record.name!r} of task {record.task_id}"
        check_name(record.name, f"artifact name (task {record.task_id})")
        try:
            current = w.artifact_record(
                self._call(
                    "GET",
                    f"/tasks/{_task_id(record.task_id)}/artifacts/{quote(record.name, safe='')}",
                )
            )
        except NotFoundError as exc:  # the artifact, or its task
            raise ArtifactNotFoundError(
                f"{what}: it is gone ({exc}); re-run the task or upload it again"
            ) from None
        if current.url != record.url:
            raise ArtifactNotFoundError(
                f"{what} was replaced after this record of it was read; read it again "
                "(task.artifacts) to get the new one"
            )
        dest = self._cache_path(record)
        if dest.exists() and dest.stat().st_size == record.size:
            if record.hash and (verify or (verify is None and record.size <= VERIFY_LIMIT)):
                if file_digest(dest)[0] == record.hash:
                    return str(dest)
            else:
                return str(dest)
        direct = self._direct_storage()
        if direct is not None and direct.owns(record.url):
            try:
                path = direct.local_copy(record.url)
            except ArtifactNotFoundError as exc:
                raise ArtifactNotFoundError(
                    f"{what}: its file is gone ({exc}); re-run the task or upload it again"
                ) from exc
            self._check(record, path, what)
            return path
        self._download(record, dest, what)
        return str(dest)

    def _check(self, record: ArtifactRecord, path: str, what: str) -> None:
        digest, size = file_digest(path)
        if size != record.size or (record.hash and digest != record.hash):
            raise ArtifactCorruptError(
                f"{what}: the stored bytes ({size} bytes) do not match the recorded size "
                f"({record.size}) or sha256; they were changed after upload. Re-run the task "
                "or upload it again"
            )

    def _download(self, record: ArtifactRecord, dest: Path, what: str) -> None:
        check_name(record.name, f"artifact name (task {record.task_id})")
        path = f"/tasks/{_task_id(record.task_id)}/artifacts/{quote(record.name, safe='')}/content"
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        hasher = hashlib.sha256()
        size = 0
        pause = BACKOFF
        for attempt in range(self.retries + 1):
            try:
                with self._client.stream("GET", path, params={"url": record.url}) as r:
                    if r.status_code >= 400:
                        r.read()
                        exc = self._error(r)
                        if isinstance(exc, NotFoundError):  # the artifact, or its task
                            raise ArtifactNotFoundError(
                                f"{what}: its file is gone ({exc}); re-run the task or upload "
                                "it again"
                            )
                        raise exc
                    with open(part, "wb") as f:
                        for chunk in r.iter_bytes(CHUNK):
                            hasher.update(chunk)
                            f.write(chunk)
                            size += len(chunk)
                break
            except httpx.TransportError as exc:
                part.unlink(missing_ok=True)
                hasher, size = hashlib.sha256(), 0
                if attempt >= self.retries:
                    raise StoreError(
                        f"{what}: the download from {self.url} failed ({exc})"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        if size != record.size or (record.hash and hasher.hexdigest() != record.hash):
            part.unlink(missing_ok=True)
            raise ArtifactCorruptError(
                f"{what}: the server sent {size} bytes that do not match the recorded size "
                f"({record.size}) or sha256; the stored file was changed after upload. Re-run "
                "the task or upload it again"
            )
        os.replace(part, dest)

    def delete_artifact(self, task_id: str, name: str) -> None:
        check_name(name, f"artifact name (task {task_id})")
        self._call("DELETE", f"/tasks/{_task_id(task_id)}/artifacts/{quote(name, safe='')}")
        self._forget(task_id)

    # -- models ---------------------------------------------------------------------------
    def add_model(self, record: ModelRecord) -> ModelRecord:
        return w.model_record(self._call("POST", "/models", json=w.dump(record)))

    def get_models(self, task_id: str) -> list[ModelRecord]:
        items = self._call("GET", f"/tasks/{_task_id(task_id)}/models")
        return [w.model_record(d) for d in items]

    # -- metrics, events, console log -----------------------------------------------------
    def add_scalars(self, points: Sequence[ScalarPoint]) -> None:
        if points:
            self._call("POST", "/scalars", json=w.dump(list(points)))

    def get_scalars(
        self, task_id: str, title: str | None = None, series: str | None = None
    ) -> list[ScalarPoint]:
        params = {k: v for k, v in (("title", title), ("series", series)) if v is not None}
        items = self._call("GET", f"/tasks/{_task_id(task_id)}/scalars", params=params)
        return w.records(ScalarPoint, items)

    def get_last_scalars(self, task_id: str) -> dict[str, dict[str, dict[str, float]]]:
        return dict(self._call("GET", f"/tasks/{_task_id(task_id)}/scalars/last"))

    def add_events(self, events: Sequence[Event]) -> None:
        if events:
            self._call("POST", "/events", json=w.dump(list(events)))

    def get_events(self, task_id: str, kind: str | None = None) -> list[Event]:
        params = {"kind": kind} if kind is not None else {}
        items = self._call("GET", f"/tasks/{_task_id(task_id)}/events", params=params)
        return w.records(Event, items)

    def add_log(self, lines: Sequence[LogLine]) -> None:
        if lines:
            self._call("POST", "/log", json=w.dump(list(lines)))

    def get_log(
        self, task_id: str, after: int = 0, limit: int | None = None, tail: int | None = None
    ) -> list[LogLine]:
        params: dict[str, Any] = {"after": after}
        if limit is not None:
            params["limit"] = limit
        if tail is not None:
            params["tail"] = tail
        items = self._call("GET", f"/tasks/{_task_id(task_id)}/log", params=params)
        return w.records(LogLine, items)

    def count_log(self, task_id: str) -> int:
        return int(self._call("GET", f"/tasks/{_task_id(task_id)}/log/count"))

    # -- projects and queues --------------------------------------------------------------
    def list_projects(self) -> list[str]:
        return list(self._call("GET", "/projects"))

    def create_queue(self, name: str) -> QueueRecord:
        return w.queue_record(self._call("POST", "/queues", json={"name": name}))

    def get_queues(self) -> list[QueueRecord]:
        return [w.queue_record(d) for d in self._call("GET", "/queues")]

    def delete_queue(self, name: str) -> None:
        check_name(name, "queue name")
        self._call("DELETE", f"/queues/{quote(name, safe='')}")

    def enqueue(self, task_id: str, queue: str, *, priority: int = 0) -> TaskRecord:
        body = {"queue": queue, "priority": priority}
        return w.task_record(self._call("POST", f"/tasks/{_task_id(task_id)}/enqueue", json=body))

    def dequeue(self, task_id: str) -> TaskRecord:
        return w.task_record(self._call("POST", f"/tasks/{_task_id(task_id)}/dequeue"))

    def queue_tasks(self, queue: str) -> list[str]:
        check_name(queue, "queue name")
        return list(self._call("GET", f"/queues/{quote(queue, safe='')}/tasks"))

    def claim(
        self, queues: Sequence[str], agent_id: str, *, wait: float = 0.0
    ) -> TaskRecord | None:
        body = {"queues": list(queues), "agent_id": agent_id, "wait": min(max(wait, 0.0), 60.0)}
        d = self._call("POST", "/claim", json=body, timeout=wait + 30.0)
        return None if d is None else w.task_record(d)

    def watch(self, known: Mapping[str, TaskStatus], *, timeout: float = 0.0) -> list[TaskRecord]:
        if not known:
            return []
        body = {
            "known": {k: TaskStatus(v).value for k, v in known.items()},
            "timeout": min(max(timeout, 0.0), 60.0),
        }
        items = self._call("POST", "/tasks/watch", json=body, timeout=timeout + 30.0)
        return [w.task_record(d) for d in items]

    # -- agents ---------------------------------------------------------------------------
    def register_agent(self, agent: AgentRecord) -> None:
        self._call("PUT", f"/agents/{quote(agent.id, safe='')}", json=w.dump(agent))

    def heartbeat(
        self, agent_id: str, running: Sequence[str], info: Mapping[str, Any] | None = None
    ) -> list[str]:
        body = {"running": list(running), "info": dict(info) if info is not None else None}
        return list(self._call("POST", f"/agents/{quote(agent_id, safe='')}/heartbeat", json=body))

    def get_agents(self) -> list[AgentRecord]:
        return [w.agent_record(d) for d in self._call("GET", "/agents")]

    def remove_agent(self, agent_id: str) -> None:
        self._call("DELETE", f"/agents/{quote(agent_id, safe='')}")

    def reap_agents(self) -> list[tuple[str, str]]:
        return [(d["task_id"], d["outcome"]) for d in self._call("POST", "/agents/reap")]

    def stream(self, **params: Any) -> Iterator[tuple[str, Any]]:
        """The server's change stream (``GET /stream``) as ``(event, data)`` pairs."""
        import json

        with self._client.stream(
            "GET", "/stream", params=params, timeout=httpx.Timeout(60.0, read=None)
        ) as r:
            if r.status_code >= 400:
                r.read()
                raise self._error(r)
            event, data = "message", list[str]()
            for line in r.iter_lines():
                if not line:
                    if data:
                        yield event, json.loads("\n".join(data))
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())


def _chunks(path: str, hasher: Any) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            yield chunk
