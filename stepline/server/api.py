"""The routes of ``/api/v1``: one per ``Backend`` call, plus uploads, long polls and a stream
of changes. Plain ``def`` routes run in the server's worker threads (the store is blocking);
the ones that wait (``claim`` with ``wait``, ``watch``, ``stream``) are ``async`` and hold no
thread while they wait.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool

from stepline.backend.http import wire as w
from stepline.backend.protocol import KEEP, Backend
from stepline.backend.storage import file_digest
from stepline.core.errors import (
    ArtifactCorruptError,
    ArtifactNotFoundError,
    NotFoundError,
    ValidationError,
)
from stepline.core.paths import check_name
from stepline.core.records import (
    ArtifactRecord,
    ConfigObject,
    Event,
    LogLine,
    ModelRecord,
    Param,
    ScalarPoint,
    TaskFilter,
)
from stepline.core.status import TaskStatus
from stepline.server.hub import OUTPUT, QUEUES, TASKS, Hub

#: uploads not committed within this many seconds are deleted
UPLOAD_TTL = 24 * 3600.0
#: most task records or log lines sent in one event of the stream
PAGE = 500


def default_upload_dir(backend: Backend) -> Path:
    """Beside the artifact folder when it is local (a commit is then a rename), else in the
    server's cache."""
    storage = getattr(backend, "storage", None)
    root = getattr(storage, "root", None) if getattr(storage, "local", False) else None
    if root is not None:
        return Path(root) / ".uploads"
    home = getattr(backend, "home", None)
    return Path(home or ".") / "cache" / "uploads"


def sweep_uploads(folder: Path) -> None:
    """Delete uploads older than ``UPLOAD_TTL`` (never committed)."""
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - UPLOAD_TTL
    for p in folder.iterdir():
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:
            pass


_SCALARS = (TypeAdapter(list[w.ScalarRow]), TypeAdapter(list[w.ScalarW]))
_LOG = (TypeAdapter(list[w.LogRow]), TypeAdapter(list[w.LogLineW]))


def _parse(adapters: tuple[TypeAdapter[Any], TypeAdapter[Any]], raw: bytes) -> Any:
    """Check a batch: with the TypedDict adapter, or, when the JSON holds an escape that may
    be a lone surrogate, with the model adapter (whose models refuse those)."""
    fast, checked = adapters
    adapter = checked if b"\\ud" in raw.lower() else fast
    try:
        return adapter.validate_json(raw)
    except PydanticValidationError as exc:
        raise ValidationError(w.validation_message(exc.errors())) from None


def _json_body(item: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads a JSON list of ``item`` itself."""
    schema = {"type": "array", "items": {"$ref": f"#/components/schemas/{item.__name__}"}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _upload_path(folder: Path, upload_id: str) -> Path:
    if not upload_id.isalnum():
        raise ValidationError(f"upload id {upload_id!r} is not one this server gave out")
    return folder / f"{upload_id}.bin"


def router(hub: Hub) -> APIRouter:
    r = APIRouter()

    def be(request: Request) -> Backend:
        return request.app.state.backend

    # -- service --------------------------------------------------------------------------
    @r.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @r.get("/info", response_model=w.InfoW)
    def info(request: Request) -> dict[str, Any]:
        from stepline import __version__

        storage = getattr(be(request), "storage", None)
        guard_auth = bool(request.app.state.auth)
        return {
            "version": __version__,
            "api": "v1",
            "storage": str(getattr(storage, "root_url", "")),
            "storage_local": bool(getattr(storage, "local", True)),
            "auth": guard_auth,
        }

    # -- tasks ----------------------------------------------------------------------------
    @r.post("/tasks", response_model=w.TaskW, status_code=201)
    def create_task(body: w.NewTaskW, request: Request) -> Any:
        rec = be(request).create_task(w.new_task(body))
        hub.notify(TASKS)
        return w.dump(rec)

    @r.get("/tasks/{task_id}", response_model=w.TaskW)
    def get_task(task_id: str, request: Request) -> Any:
        return w.dump(be(request).get_task(task_id))

    @r.post("/tasks/find", response_model=list[w.TaskW])
    def find_tasks(body: w.TaskFilterW, request: Request) -> Any:
        return w.dump(be(request).find_tasks(w.task_filter(body)))

    @r.get("/tasks", response_model=list[w.TaskW])
    def list_tasks(
        request: Request,
        project: str | None = None,
        status: Annotated[list[TaskStatus] | None, Query()] = None,
        type: Annotated[list[str] | None, Query()] = None,
        parent: str | None = None,
        name: str | None = None,
        order_by: str = "-created",
        limit: Annotated[int, Query(ge=0, le=10_000)] = 100,
    ) -> Any:
        flt = TaskFilter(
            project=project, status=status, type=type, parent=parent, name=name,
            order_by=order_by, limit=limit,
        )  # fmt: skip
        return w.dump(be(request).find_tasks(flt))

    @r.patch("/tasks/{task_id}", response_model=w.TaskW)
    def update_task(task_id: str, body: w.TaskUpdateW, request: Request) -> Any:
        given = body.model_fields_set
        changes: dict[str, Any] = {}
        for field in w.TaskUpdateW.model_fields:
            value = getattr(body, field)
            if field not in given:
                changes[field] = KEEP
            elif value is None and field != "parent":
                raise ValidationError(f"{field} cannot be null; leave it out to keep it")
            else:
                changes[field] = value
        rec = be(request).update_task(task_id, **changes)
        hub.notify(TASKS)
        return w.dump(rec)

    @r.post("/tasks/{task_id}/status", response_model=w.TaskW)
    def set_status(task_id: str, body: w.StatusW, request: Request) -> Any:
        rec = be(request).set_status(
            task_id, body.status, message=body.message, reason=body.reason, force=body.force
        )
        hub.notify(TASKS)
        return w.dump(rec)

    @r.post("/tasks/{task_id}/clone", response_model=w.TaskW, status_code=201)
    def clone_task(task_id: str, body: w.CloneW, request: Request) -> Any:
        rec = be(request).clone_task(
            task_id, name=body.name, project=body.project, comment=body.comment,
            parent=body.parent,
        )  # fmt: skip
        hub.notify(TASKS)
        return w.dump(rec)

    @r.delete("/tasks/{task_id}", status_code=204)
    def delete_task(task_id: str, request: Request) -> None:
        be(request).delete_task(task_id)
        hub.notify(TASKS, QUEUES)

    @r.put("/tasks/{task_id}/tags", status_code=204)
    def set_tags(task_id: str, body: w.TagsW, request: Request) -> None:
        be(request).set_tags(task_id, body.tags)
        hub.notify(TASKS)

    # -- parameters, configuration objects, runtime properties ----------------------------
    @r.get("/tasks/{task_id}/params", response_model=list[w.ParamW])
    def get_params(task_id: str, request: Request) -> Any:
        return w.dump(be(request).get_params(task_id))

    @r.post("/tasks/{task_id}/params", status_code=204)
    def set_params(task_id: str, body: w.ParamsW, request: Request) -> None:
        be(request).set_params(task_id, w.records(Param, body.params), replace=body.replace)

    @r.post("/tasks/{task_id}/params/delete", status_code=204)
    def delete_params(task_id: str, body: w.KeysW, request: Request) -> None:
        be(request).delete_params(task_id, body.keys)

    @r.get("/tasks/{task_id}/configs", response_model=list[w.ConfigW])
    def get_configs(task_id: str, request: Request) -> Any:
        return w.dump(be(request).get_configs(task_id))

    @r.post("/tasks/{task_id}/configs", status_code=204)
    def set_configs(task_id: str, body: w.ConfigsW, request: Request) -> None:
        be(request).set_configs(task_id, w.records(ConfigObject, body.configs))

    @r.get("/tasks/{task_id}/runtime", response_model=dict[str, str])
    def get_runtime(task_id: str, request: Request) -> Any:
        return be(request).get_runtime(task_id)

    @r.post("/tasks/{task_id}/runtime", status_code=204)
    def set_runtime(task_id: str, body: w.RuntimeW, request: Request) -> None:
        be(request).set_runtime(task_id, body.values)
        hub.notify(TASKS)

    # -- artifacts --------------------------------------------------------------------------
    @r.post(
        "/uploads",
        response_model=w.UploadW,
        status_code=201,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def upload(request: Request) -> Any:
        """Receive bytes (streamed to disk, hashed on the way) to commit as an artifact."""
        folder: Path = request.app.state.uploads
        upload_id = uuid.uuid4().hex
        path = _upload_path(folder, upload_id)
        h = hashlib.sha256()
        size = 0
        folder.mkdir(parents=True, exist_ok=True)
        f = open(path, "wb")  # noqa: SIM115 (closed below, also on errors)
        try:
            async for chunk in request.stream():
                if chunk:
                    h.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
            f.close()
        except BaseException:
            f.close()
            path.unlink(missing_ok=True)
            raise
        hashes: dict[str, str] = request.app.state.upload_hashes
        if len(hashes) > 10_000:  # uploads never committed: their files expire on their own
            hashes.clear()
        hashes[upload_id] = digest = h.hexdigest()
        return {"id": upload_id, "sha256": digest, "size": size}

    @r.post("/tasks/{task_id}/artifacts", response_model=w.ArtifactW, status_code=201)
    def put_artifact(task_id: str, body: w.ArtifactCommitW, request: Request) -> Any:
        backend = be(request)
        record = ArtifactRecord(
            task_id=task_id, name=body.name, type=body.type, url="", hash="", size=0,
            mode=body.mode, preview=body.preview, metadata=body.metadata,
            content_type=body.content_type,
        )  # fmt: skip
        if (body.upload is None) == (body.url is None):
            raise ValidationError("give either 'upload' (an id from POST /uploads) or 'url'")
        if body.upload is not None:
            path = _upload_path(request.app.state.uploads, body.upload)
            try:
                if not path.exists():
                    raise NotFoundError(
                        f"upload {body.upload} is not on this server (committed already, or "
                        "expired); upload the bytes again"
                    )
                size = path.stat().st_size
                if body.sha256 and body.size is not None and body.size != size:
                    raise ArtifactCorruptError(
                        f"artifact {body.name!r} of task {task_id}: {size} bytes arrived but "
                        f"{body.size} were sent; upload it again"
                    )
                hashed = request.app.state.upload_hashes.pop(body.upload, None)
                known = hashed if hashed is not None else file_digest(path)[0]
                if body.sha256 and body.sha256 != known:
                    raise ArtifactCorruptError(
                        f"artifact {body.name!r} of task {task_id}: the bytes that arrived do "
                        "not match the sha256 the client sent; upload it again"
                    )
                named = path.with_name(upload_id_ext(body.upload, body.filename))
                os.replace(path, named)
                path = named
                stored = backend.put_artifact(record, str(path), move=True, sha256=known)
            finally:
                path.unlink(missing_ok=True)
        else:
            stored = _commit_url(backend, record, body)
        hub.notify(OUTPUT)
        return w.dump(stored)

    @r.get("/tasks/{task_id}/artifacts", response_model=list[w.ArtifactW])
    def get_artifacts(task_id: str, request: Request) -> Any:
        return w.dump(be(request).get_artifacts(task_id))

    @r.get("/tasks/{task_id}/artifacts/{name}", response_model=w.ArtifactW)
    def get_artifact(task_id: str, name: str, request: Request) -> Any:
        check_name(name, f"artifact name (task {task_id})")
        return w.dump(_artifact(be(request), task_id, name))

    @r.get(
        "/tasks/{task_id}/artifacts/{name}/content",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def artifact_content(
        task_id: str, name: str, request: Request, url: str | None = None
    ) -> FileResponse:
        """The artifact's bytes. With ``url``, only if the artifact still has that url (it
        was not replaced since the caller read its record)."""
        check_name(name, f"artifact name (task {task_id})")
        rec = _artifact(be(request), task_id, name)
        if url is not None and rec.url != url:
            raise ArtifactNotFoundError(
                f"artifact {name!r} of task {task_id} was replaced since its record was read; "
                "read the record again"
            )
        path = be(request).artifact_local_path(rec, verify=False)
        return _BigFileResponse(
            path,
            media_type="application/octet-stream",
            filename=os.path.basename(rec.url) or name,
            headers={"X-Stepline-Sha256": rec.hash},
        )

    @r.delete("/tasks/{task_id}/artifacts/{name}", status_code=204)
    def delete_artifact(task_id: str, name: str, request: Request) -> None:
        be(request).delete_artifact(task_id, name)
        hub.notify(OUTPUT)

    # -- models ---------------------------------------------------------------------------
    @r.post("/models", response_model=w.ModelW, status_code=201)
    def add_model(body: w.ModelW, request: Request) -> Any:
        rec = be(request).add_model(ModelRecord(**body.model_dump()))
        hub.notify(OUTPUT)
        return w.dump(rec)

    @r.get("/tasks/{task_id}/models", response_model=list[w.ModelW])
    def get_models(task_id: str, request: Request) -> Any:
        return w.dump(be(request).get_models(task_id))

    # -- metrics, events, console log -----------------------------------------------------
    @r.post("/scalars", status_code=204, openapi_extra=_json_body(w.ScalarW))
    async def add_scalars(request: Request) -> None:
        """A batch of metric points (checked straight from the raw JSON: the hot path)."""
        points = w.records(ScalarPoint, _parse(_SCALARS, await request.body()))
        await run_in_threadpool(be(request).add_scalars, points)
        hub.notify(OUTPUT)

    @r.get("/tasks/{task_id}/scalars", response_model=list[w.ScalarW])
    def get_scalars(
        task_id: str, request: Request, title: str | None = None, series: str | None = None
    ) -> Any:
        return w.dump(be(request).get_scalars(task_id, title, series))

    @r.get(
        "/tasks/{task_id}/scalars/last",
        response_model=dict[str, dict[str, dict[str, float]]],
    )
    def get_last_scalars(task_id: str, request: Request) -> Any:
        return be(request).get_last_scalars(task_id)

    @r.post("/events", status_code=204)
    def add_events(body: list[w.EventW], request: Request) -> None:
        be(request).add_events(w.records(Event, body))
        hub.notify(OUTPUT)

    @r.get("/tasks/{task_id}/events", response_model=list[w.EventW])
    def get_events(task_id: str, request: Request, kind: str | None = None) -> Any:
        return w.dump(be(request).get_events(task_id, kind))

    @r.post("/log", status_code=204, openapi_extra=_json_body(w.LogLineW))
    async def add_log(request: Request) -> None:
        """A batch of console lines (checked straight from the raw JSON: the hot path)."""
        lines = w.records(LogLine, _parse(_LOG, await request.body()))
        await run_in_threadpool(be(request).add_log, lines)
        hub.notify(OUTPUT)

    @r.get("/tasks/{task_id}/log", response_model=list[w.LogLineW])
    def get_log(
        task_id: str,
        request: Request,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
        tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    ) -> Any:
        return w.dump(be(request).get_log(task_id, after=after, limit=limit, tail=tail))

    @r.get("/tasks/{task_id}/log/count", response_model=int)
    def count_log(task_id: str, request: Request) -> Any:
        return be(request).count_log(task_id)

    # -- projects and queues --------------------------------------------------------------
    @r.get("/projects", response_model=list[str])
    def list_projects(request: Request) -> Any:
        return be(request).list_projects()

    @r.get("/queues", response_model=list[w.QueueW])
    def get_queues(request: Request) -> Any:
        return w.dump(be(request).get_queues())

    @r.post("/queues", response_model=w.QueueW, status_code=201)
    def create_queue(body: w.QueueNameW, request: Request) -> Any:
        return w.dump(be(request).create_queue(body.name))

    @r.delete("/queues/{name}", status_code=204)
    def delete_queue(name: str, request: Request) -> None:
        be(request).delete_queue(name)

    @r.get("/queues/{name}/tasks", response_model=list[str])
    def queue_tasks(name: str, request: Request) -> Any:
        return be(request).queue_tasks(name)

    @r.post("/tasks/{task_id}/enqueue", response_model=w.TaskW)
    def enqueue(task_id: str, body: w.EnqueueW, request: Request) -> Any:
        rec = be(request).enqueue(task_id, body.queue, priority=body.priority)
        hub.notify(TASKS, QUEUES)
        return w.dump(rec)

    @r.post("/tasks/{task_id}/dequeue", response_model=w.TaskW)
    def dequeue(task_id: str, request: Request) -> Any:
        rec = be(request).dequeue(task_id)
        hub.notify(TASKS)
        return w.dump(rec)

    @r.post("/claim", response_model=w.TaskW | None)
    async def claim(body: w.ClaimW, request: Request) -> Any:
        """The next task of the first of ``queues`` that has one, for ``agent_id``; with
        ``wait``, waits up to that many seconds for one to be queued (``null``: none)."""
        backend = be(request)

        def look() -> Any:
            return backend.claim(body.queues, body.agent_id)

        rec = await hub.wait_for((QUEUES,), look, body.wait)
        if rec is None:
            return None
        hub.notify(TASKS)
        return w.dump(rec)

    @r.post("/tasks/watch", response_model=list[w.TaskW])
    async def watch(body: w.WatchW, request: Request) -> Any:
        """The tasks among ``known`` whose status is no longer the one given, waiting up to
        ``timeout`` seconds for there to be one."""
        backend = be(request)

        def look() -> Any:
            return backend.watch(body.known)

        return w.dump(await hub.wait_for((TASKS,), look, body.timeout))

    # -- agents ---------------------------------------------------------------------------
    @r.get("/agents", response_model=list[w.AgentW])
    def get_agents(request: Request) -> Any:
        return w.dump(be(request).get_agents())

    @r.put("/agents/{agent_id}", status_code=204)
    def register_agent(agent_id: str, body: w.AgentW, request: Request) -> None:
        if body.id != agent_id:
            raise ValidationError(f"the agent's id {body.id!r} differs from the path's")
        be(request).register_agent(w.agent_record(body.model_dump()))

    @r.post("/agents/{agent_id}/heartbeat", response_model=list[str])
    def heartbeat(agent_id: str, body: w.HeartbeatW, request: Request) -> Any:
        return be(request).heartbeat(agent_id, body.running, body.info)

    @r.delete("/agents/{agent_id}", status_code=204)
    def remove_agent(agent_id: str, request: Request) -> None:
        be(request).remove_agent(agent_id)

    @r.post("/agents/reap", response_model=list[w.ReapedW])
    def reap_agents(request: Request) -> Any:
        done = be(request).reap_agents()
        if done:
            hub.notify(TASKS, QUEUES, OUTPUT)
        return [{"task_id": tid, "outcome": outcome} for tid, outcome in done]

    # -- live changes ---------------------------------------------------------------------
    @r.get(
        "/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        request: Request,
        project: str | None = None,
        parent: str | None = None,
        task: Annotated[list[str] | None, Query()] = None,
        log: str | None = None,
        since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        once: bool = False,
    ) -> StreamingResponse:
        """Server-Sent Events: ``task`` events (a task record) for each change of a task in
        ``project``, of ``parent``'s steps, or among ``task`` ids (all tasks when none is
        given) since ``since``; ``log`` events (a list of lines) for new lines of task
        ``log`` after sequence number ``after``. ``once``: send what is there and end."""
        backend = be(request)
        if log is not None:
            backend.get_task(log)  # 404 now rather than an empty stream
        start = time.time() if since is None else since
        return StreamingResponse(
            _events(request, backend, hub, project, parent, task, log, start, after, once),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return r


def upload_id_ext(upload_id: str, filename: str) -> str:
    """The upload's file name with the extension(s) of the client's file, when they are
    plain (letters, digits, '_', '-')."""
    suffixes = Path(os.path.basename(filename)).suffixes[-2:]
    ext = "".join(s for s in suffixes if s[1:].replace("_", "").replace("-", "").isalnum())
    return f"{upload_id}{ext[:32]}"


class _BigFileResponse(FileResponse):
    """Sent in 1 MiB reads (Starlette's 64 KiB cost a worker-thread hop each)."""

    chunk_size = 1 << 20


def _artifact(backend: Backend, task_id: str, name: str) -> ArtifactRecord:
    for rec in backend.get_artifacts(task_id):
        if rec.name == name:
            return rec
    raise ArtifactNotFoundError(f"task {task_id} has no artifact {name!r}")


def _commit_url(backend: Backend, record: ArtifactRecord, body: w.ArtifactCommitW) -> Any:
    """An object the client put straight into the (remote) storage: record it."""
    storage = getattr(backend, "storage", None)
    url = body.url or ""
    if storage is None or storage.local or not storage.owns(url):
        raise ValidationError(
            f"url {url!r} is not inside this server's artifact storage; upload the bytes "
            "through POST /uploads instead"
        )
    if not body.sha256 or body.size is None:
        raise ValidationError("an artifact committed by url needs its sha256 and size")
    commit = getattr(backend, "commit_artifact", None)
    if commit is None:
        raise ValidationError("this server's store cannot record artifacts by url")
    return commit(record, url, body.sha256, body.size)


async def _events(
    request: Request,
    backend: Backend,
    hub: Hub,
    project: str | None,
    parent: str | None,
    ids: list[str] | None,
    log_task: str | None,
    since: float,
    after: int,
    once: bool,
) -> Any:
    cursor = since
    seq = after
    last_sent = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        events = hub.snapshot(TASKS, OUTPUT)
        flt = TaskFilter(
            ids=ids, project=project, parent=parent, updated_after=cursor,
            archived=None, order_by="last_update", limit=PAGE,
        )  # fmt: skip
        changed = await run_in_threadpool(backend.find_tasks, flt)
        lines = (
            await run_in_threadpool(backend.get_log, log_task, seq, PAGE)
            if log_task is not None
            else []
        )
        chunks = []
        for rec in changed:
            cursor = max(cursor, rec.last_update)
            chunks.append(_sse("task", w.dump(rec), f"{cursor!r}"))
        if lines:
            seq = lines[-1].seq
            chunks.append(_sse("log", w.dump(lines), str(seq)))
        if chunks:
            last_sent = time.monotonic()
            yield "".join(chunks)
        if once:
            return
        if len(changed) == PAGE or len(lines) == PAGE:
            continue  # a full page: more is waiting
        if await request.is_disconnected():
            return
        if not await hub.sleep(events, hub.external_poll) and time.monotonic() - last_sent > 15:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"


def _sse(event: str, data: Any, event_id: str) -> str:
    return f"event: {event}\nid: {event_id}\ndata: {json.dumps(data)}\n\n"
