"""The stepline server: ``create_app(backend)`` serves a backend over a REST API (``/api/v1``).

The application is a thin adapter: each route checks its request against a wire schema
(``backend.http.wire``), calls one ``Backend`` method and returns the result; the same
``StepLineError`` a backend raises comes back to the client as JSON (``{"error", "message"}``)
with a fitting HTTP status, and the HTTP client raises it again. Anything else that goes wrong
is logged here and answered with a 500 that says so, never with a stack trace.

While it serves, the server looks for pipeline runs whose controller died (``reap_forever``)
and marks them interrupted, so that a run whose machine went away does not show running for
ever even when no agent is looking.

Guards (``Guard``, a plain ASGI middleware): a token on every request but ``/health`` when
tokens are required; a size limit on request bodies (uploads have their own, larger one).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from stepline.backend.http.wire import ErrorW, error_body, validation_message
from stepline.backend.protocol import Backend
from stepline.backend.sql.notify import OUTPUT, QUEUE, TASK
from stepline.core.errors import (
    ArtifactCorruptError,
    AuthError,
    ConfigError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    RequestTooLargeError,
    StepLineError,
    StoreLockedError,
    ValidationError,
)
from stepline.core.records import ApiToken
from stepline.server.hub import OUTPUT as OUTPUT_TOPIC
from stepline.server.hub import QUEUES, TASKS, Hub

log = logging.getLogger("stepline.server")

#: request bodies (JSON) larger than this are refused with 413
MAX_BODY = 64 << 20
#: uploads (artifact bytes) larger than this are refused with 413
MAX_UPLOAD = 1 << 40
#: longest wait at shutdown for a look for dead controllers that is under way
REAP_STOP = 5.0
#: paths that never need a token
OPEN_PATHS = frozenset({"/health", "/api/v1/health", "/login"})
#: path prefixes that never need a token (the UI's stylesheet, script and icon)
OPEN_PREFIXES = ("/static/",)
#: how long a checked token (or "no token is needed") is remembered
AUTH_TTL = 2.0
#: what the OpenAPI document says of every route's client errors (401, 404, 409, 413, 422):
#: the JSON the handlers below send, in place of FastAPI's own 422 body (``{"detail": [...]}``)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorW, "description": "Refused: {error, message, detail}"}
}


class Tokens(Protocol):
    """What the server needs of a token store (``backend.sql.tokens.SqlTokens``)."""

    def active(self) -> bool: ...

    def check(self, secret: str) -> ApiToken | None: ...


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


STATUS_OF: list[tuple[type[StepLineError], int]] = [
    (AuthError, 401),
    (RequestTooLargeError, 413),
    (NotFoundError, 404),
    (InvalidTransitionError, 409),
    (ConflictError, 409),
    (ArtifactCorruptError, 409),
    (ValidationError, 422),
    (StoreLockedError, 503),
    (ConfigError, 503),
]


def status_of(exc: StepLineError) -> int:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return 500


def error_response(exc: StepLineError) -> JSONResponse:
    code = status_of(exc)
    headers = {"Retry-After": "1"} if code == 503 else None
    return JSONResponse(error_body(exc), status_code=code, headers=headers)


class Guard:
    """Token check and body size limit, before any route runs."""

    def __init__(
        self,
        app: Any,
        *,
        tokens: Tokens | None,
        require: bool,
        max_body: int,
        max_upload: int,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.require = require
        self.max_body = max_body
        self.max_upload = max_upload
        self._known: dict[str, float] = {}
        self._needed: tuple[bool, float] = (require, 0.0)

    async def _ask(self, check: Callable[..., bool], *args: Any) -> bool:
        """``check(*args)``, answered from the caches here when they hold the answer, else in
        a worker thread (it reads the store)."""
        if self.require or self.tokens is None:
            return check(*args)
        now = time.monotonic()
        if check == self._tokens_needed and now < self._needed[1]:
            return self._needed[0]
        if check == self._valid and now < self._known.get(args[0], 0.0):
            return True
        return await asyncio.to_thread(check, *args)

    def _tokens_needed(self) -> bool:
        if self.require:
            return True
        if self.tokens is None:
            return False
        needed, until = self._needed
        now = time.monotonic()
        if now >= until:
            needed = self.tokens.active()
            self._needed = (needed, now + AUTH_TTL)
        return needed

    def _valid(self, secret: str) -> bool:
        now = time.monotonic()
        until = self._known.get(secret)
        if until is not None and now < until:
            return True
        if self.tokens is None or self.tokens.check(secret) is None:
            return False
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[secret] = now + AUTH_TTL
        return True

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if (
            path not in OPEN_PATHS
            and not path.startswith(OPEN_PREFIXES)
            and await self._ask(self._tokens_needed)
        ):
            secret = _secret(headers)
            if not secret or not await self._ask(self._valid, secret):
                if _wants_page(scope, headers):
                    await _to_login(scope, send)
                    return
                what = "has no token" if not secret else "has a token this server does not accept"
                exc = AuthError(
                    f"the request {what}. Send 'Authorization: Bearer TOKEN' (clients: set "
                    "STEPLINE_TOKEN); a token is made on the server with `stepline server token "
                    "create NAME`"
                )
                await error_response(exc)(scope, receive, send)
                return
        limit = self.max_upload if path.endswith("/uploads") else self.max_body
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await error_response(_too_large(limit))(scope, receive, send)
            return
        if (
            length is None
            and limit == self.max_body
            and scope["method"] in ("POST", "PUT", "PATCH")
        ):
            # a chunked JSON body: read it whole (it is parsed whole anyway) so that one over
            # the limit gets its 413 before any route sees it
            chunks: list[bytes] = []
            total = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                total += len(chunks[-1])
                if total > limit:
                    await error_response(_too_large(limit))(scope, receive, send)
                    return
                if not message.get("more_body"):
                    break
            whole = b"".join(chunks)
            receive = _replay(whole, receive)
        seen = 0
        started = False

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except Exception as exc:
            # answered here rather than by Starlette's last handler, which raises the error
            # again once it has answered: the server would then drop the connection, and a
            # client's next request on it would fail too
            if started:
                raise
            await crash_response(scope["method"], path, exc)(scope, receive, send)


def _wants_page(scope: MutableMapping[str, Any], headers: dict[str, str]) -> bool:
    """A browser asking for a page of the UI (not the API, not a script's request)."""
    return (
        scope["method"] == "GET"
        and not scope["path"].startswith("/api/")
        and "text/html" in headers.get("accept", "")
    )


async def _to_login(scope: MutableMapping[str, Any], send: Any) -> None:
    from urllib.parse import quote

    target = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
    location = "/login?next=" + quote(target, safe="")
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def crash_response(method: str, path: str, exc: Exception) -> JSONResponse:
    """A 500 for an error that is no ``StepLineError``: logged here, named to the client
    without a trace."""
    log.error("error in %s %s", method, path, exc_info=exc)
    return JSONResponse(
        {
            "error": "StoreError",
            "message": f"the server failed on {method} {path} ({type(exc).__name__}); its log "
            "has the details",
            "detail": {},
        },
        status_code=500,
    )


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives ``body`` once, then what the client sends next."""
    given = False

    async def replay() -> Any:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"the request body is larger than this server accepts ({limit} bytes); send metrics "
        "and log lines in smaller batches, or raise the limit (`stepline server --max-body-mb`)"
    )


def _secret(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    cookie = headers.get("cookie", "")
    for part in cookie.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "stepline_token":
            return value.strip()
    return ""


#: seconds between two looks for dead controllers when ``STEPLINE_RUN_HEARTBEAT`` is unusable
REAP_FALLBACK = 2.0


def reap_interval() -> float:
    """Seconds between two looks for runs whose controller died: the controllers' heartbeat
    interval (``recovery.heartbeat_interval``)."""
    from stepline.pipeline.recovery import heartbeat_interval

    try:
        return heartbeat_interval()
    except ValidationError as exc:
        log.warning("%s; looking for dead pipeline controllers every %s s", exc, REAP_FALLBACK)
        return REAP_FALLBACK


async def reap_forever(backend: Backend, hub: Hub, stop: asyncio.Event) -> None:
    """Until ``stop`` is set: every ``reap_interval()`` seconds, mark the runs whose controller
    died interrupted (``recovery.reap_runs``, in a worker thread) and wake the pages that
    show tasks. A failed look is logged (once while it fails the same way) and tried again
    at the next one."""
    from stepline.pipeline.recovery import reap_runs

    every = reap_interval()
    failing = ""
    while not stop.is_set():
        try:
            reaped = await asyncio.to_thread(reap_runs, backend)
            failing = ""
        except Exception as exc:  # the store is busy or gone: the next look tries again
            if str(exc) != failing:
                log.warning("could not look for interrupted pipeline runs: %s", exc)
            failing = str(exc)
            reaped = []
        for run_id, why in reaped:
            log.warning("pipeline run %s was interrupted: %s", run_id, why)
        if reaped:
            hub.notify(TASKS, QUEUES)
        with contextlib.suppress(asyncio.TimeoutError):  # the builtin one from Python 3.11
            await asyncio.wait_for(stop.wait(), every)


def create_app(
    backend: Backend,
    *,
    tokens: Tokens | None = None,
    require_token: bool = False,
    max_body: int = MAX_BODY,
    max_upload: int = MAX_UPLOAD,
    upload_dir: Path | None = None,
) -> FastAPI:
    """The server's ASGI application over ``backend``. ``tokens``: where API tokens are
    checked; once one exists (or with ``require_token``) every request but health checks
    needs one. ``upload_dir``: where uploads wait to be committed (default: beside the
    artifacts when they are a local folder, so committing one is a rename)."""
    from starlette.staticfiles import StaticFiles

    from stepline import __version__
    from stepline.server import api, pipelines
    from stepline.server.ui import routes as ui

    hub = Hub()
    uploads = upload_dir or api.default_upload_dir(backend)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        hub.bind(asyncio.get_running_loop())
        changes = getattr(backend, "changes", None)
        listener = changes() if changes is not None else None
        if listener is not None:  # PostgreSQL: other writers' changes wake waiters at once
            topics = {TASK: (TASKS,), QUEUE: (QUEUES,), OUTPUT: (OUTPUT_TOPIC,)}
            listener.subscribe(lambda ch: hub.notify(*topics.get(ch, ())))
            hub.forwarded()
        anyio.to_thread.current_default_thread_limiter().total_tokens = 64
        await asyncio.to_thread(api.sweep_uploads, uploads)
        stop = asyncio.Event()
        reaper = asyncio.create_task(reap_forever(backend, hub, stop), name="stepline-reaper")
        try:
            yield
        finally:
            # a look under way ends first (a few reads), so the store is not closed under it
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reaper, REAP_STOP)

    app = FastAPI(
        title="stepline",
        version=__version__,
        description="Tasks, parameters, artifacts, metrics, logs, queues and agents of a "
        "stepline store.",
        lifespan=lifespan,
        docs_url=None,  # served below, with Swagger UI's files from this server
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.backend = backend
    app.state.uploads = uploads
    #: sha256 of each upload as it arrived, until it is committed
    app.state.upload_hashes = {}
    app.state.auth = require_token or tokens is not None

    @app.exception_handler(StepLineError)
    async def _stepline_error(request: Request, exc: StepLineError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = validation_message(exc.errors())
        return JSONResponse(
            {"error": "ValidationError", "message": message, "detail": {}}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and not request.url.path.startswith("/api/"):
            return ui.not_found(request)
        name = "NotFoundError" if exc.status_code == 404 else "StepLineError"
        message = (
            f"no API route {request.method} {request.url.path}; see /api/docs"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return JSONResponse(
            {"error": name, "message": message, "detail": {}}, status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        return crash_response(request.method, request.url.path, exc)

    app.include_router(api.router(hub), prefix="/api/v1", responses=ERROR_RESPONSES)
    app.include_router(pipelines.router(hub), prefix="/api/v1", responses=ERROR_RESPONSES)

    app.include_router(ui.router(hub))
    # the longer prefix first: Starlette takes the first mount that matches
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is not None and spec.origin:
        docs_files = Path(spec.origin).parent / "static"
        app.mount("/static/docs", StaticFiles(directory=docs_files), name="docs-static")
    app.mount("/static", StaticFiles(directory=ui.STATIC), name="static")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/api/v1/openapi.json",
            title="stepline - Swagger UI",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(
        Guard,
        tokens=tokens,
        require=require_token,
        max_body=max_body,
        max_upload=max_upload,
    )
    return app
