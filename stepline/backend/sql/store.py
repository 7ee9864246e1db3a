"""The SQL task store (SQLAlchemy 2 Core; SQLite by default, PostgreSQL for teams).

What it guarantees and how:

* **Atomic status changes.** ``set_status`` is one ``UPDATE ... WHERE status IN (allowed)``;
  a zero row count means the transition was not allowed (or the task is gone), so two
  processes racing to move a task cannot both win.
* **Whole artifacts only.** Bytes go to storage first (atomically, see ``backend.storage``),
  then the record is committed; a failed commit deletes the bytes. A replaced artifact's old
  file is deleted only after the new record is committed.
* **Many writers.** SQLite runs in WAL mode; write transactions start with ``BEGIN
  IMMEDIATE`` (so they queue on the busy timeout instead of failing on a lock upgrade) and
  readers never block writers. A lock held longer than the timeout becomes
  ``StoreLockedError`` with what to do, and the transaction is rolled back whole. Threads of
  one process take turns on a lock first, so they never sleep in SQLite's busy handler.
* **Fork safety.** A forked child drops the parent's pooled connections.

On PostgreSQL, besides:

* **Concurrent claims.** The queue claim locks the entry it takes with ``FOR UPDATE SKIP
  LOCKED``: many agents claim at once, none waits for another and no task is claimed twice.
* **Wake-ups.** ``claim(wait=)`` and ``watch`` sleep until PostgreSQL notifies a change
  (``backend.sql.notify``) instead of polling, so ``pushes_changes`` is true.
* **Restarts.** Connections are pooled; a call that finds the server gone (refused, cut,
  shutting down) is run again, with backoff, for up to ``timeout`` seconds: its transaction
  was rolled back, so running it again cannot write twice. When the connection is cut while a
  commit is in flight, the commit may have landed: a status change, a claim, a new task and
  an enqueue read back whether it did, calls that set values or append rows run again
  (``_RERUN_AFTER_LOST_COMMIT``; an appended batch may then be there twice), and the others
  (clone, dequeue, deletes, models) raise ``StoreUnavailableError``.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import inspect
import math
import os
import re
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from stepline.backend.protocol import KEEP
from stepline.backend.sql import schema as t
from stepline.backend.sql.migrate import ensure_schema, safe_url
from stepline.backend.sql.notify import QUEUE, TASK, ChangeListener
from stepline.backend.storage import BlobStorage, file_digest
from stepline.core.errors import (
    ArtifactCorruptError,
    ArtifactNotFoundError,
    ConfigError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
    TaskNotFoundError,
    ValidationError,
)
from stepline.core.ids import new_id
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
from stepline.core.status import ALLOWED_FROM, FINAL, TaskStatus

#: With ``defer_hash``, files at least this large are committed with their size and get their
#: sha256 from a background thread (``wait_for_uploads`` waits for it).
DEFER_HASH_MIN = 8 << 20

#: Artifacts up to this size are checked against their sha256 on every read; larger ones
#: against their size (pass ``verify=True`` to hash them too).
VERIFY_LIMIT = 64 << 20

T = TypeVar("T")

_TASK_COLS = [c for c in t.tasks.c if c.name != "project_id"]
_ORDER = {"created", "last_update", "name", "started", "completed", "status", "type"}


def make_engine(url: str, timeout: float) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": timeout, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("stepline_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                f"STEPLINE_DB={url.split('://')[0]}://... needs the PostgreSQL driver: "
                "pip install 'stepline[postgres]'"
            ) from exc
        return create_engine(
            url,
            # no ping at checkout (a round trip per call): a connection the server dropped
            # fails its first statement, which invalidates the pool and runs the call again
            pool_pre_ping=False,
            pool_size=5,
            max_overflow=20,
            pool_timeout=timeout,
            pool_recycle=3600,
            connect_args={"connect_timeout": max(1, int(min(timeout, 10)))},
        )
    return create_engine(url, pool_pre_ping=True)


#: PostgreSQL error classes after which a call is safely run again: the connection failed or
#: was cut (08), the server is shutting down or starting (57P), a serialization failure or
#: deadlock rolled the transaction back (40)
_TRANSIENT_SQLSTATES = ("08", "57P", "40001", "40P01")


class _Transient(Exception):
    """A call met a database that is gone for now; ``_retried`` runs the call again."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _CommitLost(_Transient):
    """The connection was cut while a commit was in flight: it may or may not have landed."""


#: calls that may simply run again after a lost commit: they set values (running them twice
#: leaves the same state) or append rows (a batch written just before a restart may then be
#: there twice, which beats losing a step's results). ``set_status``, ``create_task``,
#: ``enqueue`` and claims read back whether their commit landed instead.
_RERUN_AFTER_LOST_COMMIT = {
    "set_params", "delete_params", "set_configs", "set_runtime", "update_task", "set_tags",
    "heartbeat", "register_agent", "remove_agent", "reap_agents", "create_queue",
    "add_log", "add_scalars", "add_events", "commit_artifact",
}  # fmt: skip


def _is_transient(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    module = type(orig).__module__ if orig is not None else ""
    if not module.startswith("psycopg"):
        return False
    state = getattr(orig, "sqlstate", None)
    if state is None:  # no answer from a server at all: refused, reset, timed out
        return isinstance(exc, OperationalError)
    return str(state).startswith(_TRANSIENT_SQLSTATES)


_depth = threading.local()


def _retrying(backend: SqlBackend, call: Callable[[], T], *, rerun_lost: bool = False) -> T:
    """``call()``, run again while the database is gone, for up to ``backend.timeout`` s;
    with ``rerun_lost`` also after a lost commit."""
    delay = 0.05
    deadline = 0.0
    outer = getattr(_depth, "n", 0)
    try:
        while True:
            _depth.n = outer + 1
            try:
                return call()
            except _Transient as exc:
                if isinstance(exc, _CommitLost) and not rerun_lost:
                    raise StoreUnavailableError(
                        f"the connection to the task store {backend.safe_url} was lost while "
                        f"a change was being committed ({exc.cause}); it may or may not have "
                        "been written"
                    ) from exc.cause
                now = time.monotonic()
                deadline = deadline or now + backend.timeout
                if now + delay > deadline:
                    raise StoreUnavailableError(
                        f"the task store {backend.safe_url} could not be reached for "
                        f"{backend.timeout:g} s ({exc.cause}); nothing was written. Check that "
                        "the database is up, or raise STEPLINE_DB_TIMEOUT to wait longer"
                    ) from exc.cause
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
    finally:
        _depth.n = outer


def _retried(fn: Callable[..., T]) -> Callable[..., T]:
    """A public store call that is run again while the database is gone (the outermost
    call retries; the calls it makes do not)."""

    @functools.wraps(fn)
    def call(self: SqlBackend, *args: Any, **kwargs: Any) -> T:
        depth: int = getattr(_depth, "n", 0)
        if self.is_sqlite or depth:
            return fn(self, *args, **kwargs)
        return _retrying(self, lambda: fn(self, *args, **kwargs), rerun_lost=rerun)

    rerun = fn.__name__ in _RERUN_AFTER_LOST_COMMIT

    return call


_UPSERTS: dict[tuple[Any, ...], Any] = {}


def _upsert(
    conn: Connection,
    table: Any,
    rows: list[dict[str, Any]],
    keys: list[str],
    *,
    update: bool = True,
) -> None:
    """Insert ``rows``; a row whose ``keys`` exist already updates it (or, without ``update``,
    is skipped: the existing row, its id included, is kept). Statements are built once per
    shape and kept, so SQLAlchemy compiles each only once."""
    if not rows:
        return
    name = conn.dialect.name
    cols = tuple(rows[0])
    memo = (name, table.name, cols, tuple(keys), update)
    stmt = _UPSERTS.get(memo)
    if stmt is None:
        if name == "postgresql":
            from sqlalchemy.dialects import postgresql as dialect
        else:
            from sqlalchemy.dialects import sqlite as dialect  # type: ignore[no-redef]
        stmt = dialect.insert(table)
        update_cols = {c: stmt.excluded[c] for c in cols if c not in keys}
        if update_cols and update:
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=update_cols)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        _UPSERTS[memo] = stmt
    conn.execute(stmt, rows)


def _stored(value: float) -> float | None:
    """A metric value as stored: NaN becomes NULL (see ``schema.scalars``)."""
    v = float(value)
    return None if math.isnan(v) else v


def _blob_name(name: str, local_path: str) -> str:
    """The stored file's name: the artifact name (cut so the name, and the storage's temporary
    name beside it, stay within the 255 bytes a file name may have), a random part (a
    replacement never overwrites bytes a reader may hold) and the source's extension."""
    path = Path(local_path)
    ext = "".join(path.suffixes[-2:]) if path.suffix else ""
    if len(ext.encode()) > 32 or not ext.isprintable() or any(c in ext for c in " \\"):
        ext = ""
    stem = name.encode()[:160].decode(errors="ignore")
    return f"{stem}.{uuid.uuid4().hex[:8]}{ext}"


def _after_fork(ref: weakref.ref[SqlBackend]) -> None:
    backend = ref()
    if backend is not None:
        backend.engine.dispose(close=False)
        backend._listener = None  # its thread stayed in the parent
        if backend._write_lock is not None:  # no thread of the parent came along
            backend._write_lock = threading.RLock()


class _Statements:
    """Statements built once: SQLAlchemy caches their compiled form, and not rebuilding them
    saves most of the per-call cost on the hot paths (loading a task, changing a status)."""

    def __init__(self) -> None:
        tid: Any = bindparam("tid")
        self.tasks = select(*_TASK_COLS, t.projects.c.name.label("project"), t.tasks.c.project_id)
        self.tasks = self.tasks.join(t.projects, t.projects.c.id == t.tasks.c.project_id)
        self.task_by_id = self.tasks.where(t.tasks.c.id == tid)
        self.tags_of = (
            select(t.task_tags.c.tag)
            .where(t.task_tags.c.task_id == tid)
            .order_by(t.task_tags.c.tag)
        )
        self.task_exists = select(t.tasks.c.id).where(t.tasks.c.id == tid)
        self.status_of = select(t.tasks.c.status).where(t.tasks.c.id == tid)
        self.insert_task = insert(t.tasks)
        self.dequeue = delete(t.queue_entries).where(t.queue_entries.c.task_id == tid)
        self._status: dict[tuple[TaskStatus, bool], Any] = {}
        e = t.queue_entries.c
        first = (
            select(e.task_id)
            .join(t.queues, t.queues.c.id == e.queue_id)
            .where(t.queues.c.name == bindparam("qname"))
            .order_by(e.priority.desc(), e.enqueued, e.task_id)
            .limit(1)
            .with_for_update(skip_locked=True, of=t.queue_entries)
            .scalar_subquery()
        )
        #: (PostgreSQL) take the first entry of queue ``qname`` that nobody else holds
        self.take_first = delete(t.queue_entries).where(e.task_id == first).returning(e.task_id)
        #: (PostgreSQL) append a task to an agent's running list, in place
        self.add_running = sql_text(
            "UPDATE agents SET last_seen = :now, running = CAST("
            "COALESCE(CAST(running AS jsonb), CAST('[]' AS jsonb)) || to_jsonb(CAST(:tid AS text))"
            " AS json) WHERE id = :aid"
        )

    def status_update(self, status: TaskStatus, force: bool) -> Any:
        """UPDATE for moving a task to ``status``, guarded by the allowed previous statuses."""
        key = (status, force)
        stmt = self._status.get(key)
        if stmt is None:
            c = t.tasks.c
            values: dict[str, Any] = {
                "status": bindparam("status"),
                "status_message": bindparam("message"),
                "status_reason": bindparam("reason"),
                "last_update": bindparam("now"),
            }
            if status == TaskStatus.in_progress:
                values.update(started=bindparam("now"), completed=None)
            elif status in FINAL:
                values["completed"] = bindparam("now")
            elif status == TaskStatus.created:
                values.update(started=None, completed=None)
            stmt = update(t.tasks).where(c.id == bindparam("tid")).values(**values)
            if not force:
                allowed = sorted(s.value for s in ALLOWED_FROM[status])
                stmt = stmt.where(or_(*[c.status == literal(v) for v in allowed]))
            self._status[key] = stmt
        return stmt


_Q = _Statements()


class _Hasher:
    """One background thread (per process) that records the sha256 of artifacts committed
    with ``defer_hash``; ``wait`` returns when all submitted ones are recorded."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def submit(self, backend: SqlBackend, rec: ArtifactRecord) -> None:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="stepline-hash")
                self._pid = os.getpid()
                self._pending = set()
                atexit.register(self.wait)
            fut = self._pool.submit(backend._record_hash, rec)
            self._pending.add(fut)
            fut.add_done_callback(self._pending.discard)

    def wait(self) -> None:
        if self._pid != os.getpid():
            return
        with self._lock:
            pending = list(self._pending)
        for fut in pending:
            exc = fut.exception()
            if exc is not None:
                stream = sys.__stderr__
                if stream is not None:
                    stream.write(f"stepline: could not record an artifact's sha256: {exc}\n")


class SqlBackend:
    """``backend.protocol.Backend`` on a SQL database."""

    def __init__(
        self,
        url: str,
        storage_url: str,
        *,
        home: Path,
        timeout: float = 30.0,
        upgrade: bool | None = None,
    ) -> None:
        """``upgrade``: bring a database at an older schema to the current one. By default
        a SQLite file is upgraded and a PostgreSQL database only created when empty (see
        ``migrate``)."""
        self.url = url
        self.timeout = timeout
        self.engine = make_engine(url, timeout)
        self.safe_url = safe_url(self.engine)
        self._write_engine = self.engine.execution_options(stepline_write=True)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        #: the schema revision this store upgraded the database from ("" : it was empty)
        self.upgraded_from: str | None = None
        try:
            self.upgraded_from = ensure_schema(
                self.engine,
                home if self.is_sqlite else None,
                upgrade_existing=self.is_sqlite if upgrade is None else upgrade,
            )
        except DBAPIError as exc:
            self.engine.dispose()
            raise self._translate(exc) from exc
        except BaseException:
            self.engine.dispose()
            raise
        self.storage = BlobStorage(storage_url, home / "cache")
        #: SQLite cannot tell a waiter about a change: ``claim(wait=...)`` and ``watch`` look
        #: again every ``poll_interval`` seconds. PostgreSQL notifies them.
        self.pushes_changes = not self.is_sqlite
        self.poll_interval = 0.02
        self._listener: ChangeListener | None = None
        self.home = home
        self._projects: dict[str, str] = {}
        self._hasher = _Hasher()
        self._ph = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        # SQLite allows one writer: threads of this process queue here, where the next one
        # starts the moment the last commits, instead of in SQLite's busy handler, which
        # sleeps 1, 2, 5, 10, 15, ... ms between tries (other processes still wait there)
        self._write_lock: threading.RLock | None = threading.RLock() if self.is_sqlite else None
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def __repr__(self) -> str:
        return f"SqlBackend({self.safe_url!r}, storage={self.storage.root_url!r})"

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.engine.dispose()

    def changes(self) -> ChangeListener | None:
        """The process's listener for change notifications (PostgreSQL), or None."""
        if self.is_sqlite:
            return None
        if self._listener is None:
            dsn = self.engine.url.set(drivername="postgresql")
            self._listener = ChangeListener(dsn.render_as_string(hide_password=False))
        return self._listener

    # -- transactions ----------------------------------------------------------------------
    def _translate(self, exc: DBAPIError) -> StoreError:
        text = str(exc.orig) if exc.orig is not None else str(exc)
        if self.is_sqlite and ("locked" in text or "busy" in text):
            return StoreLockedError(
                f"the task store {self.safe_url} stayed locked by another process for "
                f"{self.timeout:g} s; nothing was written. Retry, or raise STEPLINE_DB_TIMEOUT "
                "if many processes write at once"
            )
        if not self.is_sqlite and _is_transient(exc):
            return StoreUnavailableError(
                f"the task store {self.safe_url} could not be reached ({text.strip()}); check "
                "that the database is up"
            )
        return StoreError(f"the task store {self.safe_url} failed: {text}")

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        lock = self._write_lock
        if lock is None:
            body_done = False
            try:
                with self._write_engine.begin() as conn:
                    yield conn
                    body_done = True
            except DBAPIError as exc:
                # before the commit was sent the transaction is rolled back: safe to run again
                if _is_transient(exc):
                    raise (_CommitLost(exc) if body_done else _Transient(exc)) from exc
                if isinstance(exc, OperationalError):
                    raise self._translate(exc) from exc
                raise
            return
        try:
            if not lock.acquire(timeout=self.timeout):
                raise StoreLockedError(
                    f"another thread of this process kept the task store {self.safe_url} "
                    f"busy for {self.timeout:g} s; nothing was written"
                )
            try:
                with self._write_engine.begin() as conn:
                    yield conn
            finally:
                lock.release()
        except OperationalError as exc:
            raise self._translate(exc) from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except DBAPIError as exc:
            if not self.is_sqlite and _is_transient(exc):
                raise _Transient(exc) from exc
            if isinstance(exc, OperationalError):
                raise self._translate(exc) from exc
            raise

    # -- projects --------------------------------------------------------------------------
    def _project_id(self, conn: Connection, name: str) -> str:
        name = name.strip("/")
        if not name:
            raise ValidationError("a project name must not be empty")
        pid = self._projects.get(name)
        if pid is not None:
            return pid
        parent_id = None
        created = False
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            row = conn.execute(select(t.projects.c.id).where(t.projects.c.name == sub)).first()
            if row is None:
                created = True
                _upsert(
                    conn,
                    t.projects,
                    [{"id": new_id(), "name": sub, "parent_id": parent_id, "created": time.time()}],
                    ["name"],
                    update=False,
                )
                row = conn.execute(select(t.projects.c.id).where(t.projects.c.name == sub)).first()
            assert row is not None
            parent_id = row[0]
        assert parent_id is not None
        if not created:  # a project made in this transaction is gone if it rolls back
            self._projects[name] = parent_id
        return parent_id

    def list_projects(self) -> list[str]:
        with self._read() as conn:
            return list(conn.scalars(select(t.projects.c.name).order_by(t.projects.c.name)))

    # -- tasks -----------------------------------------------------------------------------
    @staticmethod
    def _record(row: Any, tags: list[str]) -> TaskRecord:
        m = row._mapping
        return TaskRecord(
            id=m["id"],
            name=m["name"],
            project=m["project"],
            project_id=m["project_id"],
            type=m["type"],
            status=TaskStatus(m["status"]),
            created=m["created"],
            last_update=m["last_update"],
            status_message=m["status_message"],
            status_reason=m["status_reason"],
            comment=m["comment"],
            parent=m["parent_id"],
            tags=tags,
            script=m["script"] or {},
            user=m["user"],
            started=m["started"],
            completed=m["completed"],
            archived=bool(m["archived"]),
            published=bool(m["published"]),
        )

    def _load(self, conn: Connection, task_id: str) -> TaskRecord:
        row = conn.execute(_Q.task_by_id, {"tid": task_id}).first()
        if row is None:
            raise TaskNotFoundError(task_id)
        return self._record(row, list(conn.scalars(_Q.tags_of, {"tid": task_id})))

    def _require_all(self, conn: Connection, task_ids: set[str]) -> None:
        """``TaskNotFoundError`` unless every id names a task (one query)."""
        ids = list(task_ids)
        found = set(conn.scalars(select(t.tasks.c.id).where(t.tasks.c.id.in_(ids))))
        missing = sorted(task_ids - found)
        if missing:
            raise TaskNotFoundError(missing[0], "nothing of this batch of reports was written")

    def _require(self, conn: Connection, task_id: str) -> None:
        if conn.execute(_Q.task_exists, {"tid": task_id}).first() is None:
            raise TaskNotFoundError(task_id)

    def create_task(self, new: NewTask) -> TaskRecord:
        now = time.time()
        task_id = new.id or new_id()
        status = TaskStatus(new.status)
        row: dict[str, Any] = {
            "id": task_id,
            "name": new.name,
            "type": str(new.type),
            "status": status.value,
            "status_message": "",
            "status_reason": "",
            "comment": new.comment,
            "parent_id": new.parent,
            "user": new.user,
            "script": new.script,
            "created": now,
            "started": now if status == TaskStatus.in_progress else None,
            "completed": None,
            "last_update": now,
            "archived": False,
            "published": False,
        }
        tags = sorted(set(new.tags))
        try:
            with self._write() as conn:
                row["project_id"] = self._project_id(conn, new.project)
                conn.execute(_Q.insert_task, row)
                self._insert_children(conn, task_id, new.params, new.configs, new.runtime, tags)
        except IntegrityError as exc:
            raise ConflictError(f"task {task_id} could not be created: {exc.orig}") from exc
        except _CommitLost as exc:  # landed if the task is there, made at this very time
            if _retrying(self, lambda: self._created_at(task_id)) != now:
                raise _Transient(exc.cause) from exc  # it is not: run the call again
        return TaskRecord(
            id=task_id,
            name=new.name,
            project=new.project.strip("/"),
            project_id=row["project_id"],
            type=row["type"],
            status=status,
            created=now,
            last_update=now,
            comment=new.comment,
            parent=new.parent,
            tags=tags,
            script=new.script,
            user=new.user,
            started=row["started"],
        )

    def _created_at(self, task_id: str) -> float | None:
        with self._read() as conn:
            return conn.execute(select(t.tasks.c.created).where(t.tasks.c.id == task_id)).scalar()

    def _insert_children(
        self,
        conn: Connection,
        task_id: str,
        params: Sequence[Param],
        configs: Sequence[ConfigObject],
        runtime: Mapping[str, str],
        tags: Sequence[str],
    ) -> None:
        if params:
            conn.execute(insert(t.task_params), [self._param_row(task_id, p) for p in params])
        if configs:
            conn.execute(insert(t.task_configs), [self._config_row(task_id, c) for c in configs])
        if runtime:
            conn.execute(
                insert(t.task_runtime),
                [{"task_id": task_id, "key": k, "value": str(v)} for k, v in runtime.items()],
            )
        if tags:
            conn.execute(insert(t.task_tags), [{"task_id": task_id, "tag": g} for g in tags])

    def get_task(self, task_id: str) -> TaskRecord:
        with self._read() as conn:
            return self._load(conn, task_id)

    def find_tasks(self, flt: TaskFilter) -> list[TaskRecord]:
        q = _Q.tasks
        c = t.tasks.c
        if flt.ids is not None:
            q = q.where(c.id.in_(list(flt.ids)))
        if flt.id_prefix:
            q = q.where(c.id.startswith(flt.id_prefix, autoescape=True))
        if flt.project is not None:
            q = q.where(t.projects.c.name == flt.project.strip("/"))
        if flt.name:
            try:
                re.compile(flt.name)
            except re.error as exc:
                raise ValidationError(
                    f"task name filter {flt.name!r} is not a regular expression ({exc}); "
                    "escape special characters, e.g. re.escape(name)"
                ) from None
            q = q.where(c.name.regexp_match(flt.name))
        if flt.status:
            q = q.where(c.status.in_([TaskStatus(s).value for s in flt.status]))
        if flt.type:
            q = q.where(c.type.in_([str(x) for x in flt.type]))
        if flt.parent is not None:
            q = q.where(c.parent_id == flt.parent)
        if flt.archived is not None:
            q = q.where(c.archived == flt.archived)
        if flt.updated_after is not None:
            q = q.where(c.last_update > flt.updated_after)
        for key, value in (flt.runtime or {}).items():
            rt = t.task_runtime.c
            q = q.where(
                exists().where(and_(rt.task_id == c.id, rt.key == key, rt.value == str(value)))
            )
        for tag in flt.tags or ():
            has = exists().where(
                and_(t.task_tags.c.task_id == c.id, t.task_tags.c.tag == tag.lstrip("-"))
            )
            q = q.where(~has if tag.startswith("-") else has)
        key = flt.order_by.lstrip("-+")
        if key not in _ORDER:
            raise ValidationError(
                f"cannot order tasks by {flt.order_by!r}; use one of {sorted(_ORDER)}"
            )
        col = c[key]
        q = q.order_by(col.desc() if flt.order_by.startswith("-") else col.asc(), c.id)
        if flt.limit is not None:
            q = q.limit(flt.limit)
        with self._read() as conn:
            rows = conn.execute(q).all()
            tags: dict[str, list[str]] = {}
            ids = [r._mapping["id"] for r in rows]
            for i in range(0, len(ids), 500):
                for tid, tag in conn.execute(
                    select(t.task_tags.c.task_id, t.task_tags.c.tag)
                    .where(t.task_tags.c.task_id.in_(ids[i : i + 500]))
                    .order_by(t.task_tags.c.tag)
                ):
                    tags.setdefault(tid, []).append(tag)
        return [self._record(r, tags.get(r._mapping["id"], [])) for r in rows]

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
        values: dict[str, Any] = {"last_update": time.time()}
        given = {
            "name": name,
            "comment": comment,
            "parent_id": parent,
            "type": type,
            "script": script,
            "archived": archived,
            "published": published,
        }
        values.update(
            {k: (str(v) if k == "type" else v) for k, v in given.items() if v is not KEEP}
        )
        with self._write() as conn:
            if project is not KEEP:
                values["project_id"] = self._project_id(conn, project)
            res = conn.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(**values))
            if res.rowcount == 0:
                raise TaskNotFoundError(task_id)
            return self._load(conn, task_id)

    def set_status(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        message: str = "",
        reason: str = "",
        force: bool = False,
    ) -> TaskRecord:
        status = TaskStatus(status)
        if not force and status not in ALLOWED_FROM:
            raise ValidationError(
                f"task {task_id}: {status.value!r} is not a status a task can be moved to"
            )
        now = time.time()
        params: dict[str, Any] = {
            "tid": task_id,
            "status": status.value,
            "message": message,
            "reason": reason,
            "now": now,
        }
        try:
            with self._write() as conn:
                res = conn.execute(_Q.status_update(status, force), params)
                if res.rowcount == 0:
                    old = conn.execute(_Q.status_of, {"tid": task_id}).scalar()
                    if old is None:
                        raise TaskNotFoundError(task_id)
                    raise InvalidTransitionError(task_id, old, status.value)
                if status != TaskStatus.queued and (
                    force or TaskStatus.queued in ALLOWED_FROM[status]
                ):
                    conn.execute(_Q.dequeue, {"tid": task_id})
                return self._load(conn, task_id)
        except _CommitLost as exc:  # landed if the task shows this very change
            landed = _retrying(self, lambda: self._read_back(task_id, status, now))
            if landed is not None:
                return landed
            raise _Transient(exc.cause) from exc  # it did not: run the call again

    def _read_back(self, task_id: str, status: TaskStatus, when: float) -> TaskRecord | None:
        """The task if its status is ``status`` set at ``when`` (by a commit that was cut)."""
        with self._read() as conn:
            rec = self._load(conn, task_id)
        if rec.status != status:
            return None
        if status in FINAL:  # the times a status change sets, which nothing else touches
            stamp = rec.completed
        elif status == TaskStatus.in_progress:
            stamp = rec.started
        else:
            stamp = rec.last_update
        return rec if stamp == when else None

    def clone_task(
        self,
        task_id: str,
        *,
        name: str | None = None,
        project: str | None = None,
        comment: str | None = None,
        parent: str | None = None,
    ) -> TaskRecord:
        with self._write() as conn:
            src = self._load(conn, task_id)
            params = self._params(conn, task_id)
            configs = self._configs(conn, task_id)
            now = time.time()
            new_task_id = new_id()
            project_id = self._project_id(conn, project) if project else src.project_id
            conn.execute(
                insert(t.tasks),
                [
                    {
                        "id": new_task_id,
                        "project_id": project_id,
                        "name": name if name is not None else src.name,
                        "type": src.type,
                        "status": TaskStatus.created.value,
                        "status_message": "",
                        "status_reason": "",
                        "comment": comment if comment is not None else src.comment,
                        "parent_id": parent if parent is not None else src.id,
                        "user": src.user,
                        "script": src.script,
                        "created": now,
                        "started": None,
                        "completed": None,
                        "last_update": now,
                        "archived": False,
                        "published": False,
                    }
                ],
            )
            self._insert_children(conn, new_task_id, params, configs, {}, src.tags)
            return self._load(conn, new_task_id)

    def delete_task(self, task_id: str) -> None:
        with self._write() as conn:
            self._require(conn, task_id)
            for table in (
                t.scalars,
                t.events,
                t.log,
                t.models,
                t.artifacts,
                t.task_params,
                t.task_configs,
                t.task_runtime,
                t.task_tags,
                t.queue_entries,
            ):
                conn.execute(delete(table).where(table.c.task_id == task_id))
            conn.execute(delete(t.tasks).where(t.tasks.c.id == task_id))
        try:
            self.storage.delete_prefix(storage_key(task_id))
        except Exception as exc:  # the task is gone: say what was left, do not fail the call
            stream = sys.__stderr__
            if stream is not None:
                stream.write(
                    f"stepline: task {task_id} was deleted but its files under "
                    f"{self.storage.url_for(storage_key(task_id))} were not ({exc}); "
                    "delete them by hand\n"
                )

    def set_tags(self, task_id: str, tags: Sequence[str]) -> None:
        with self._write() as conn:
            self._require(conn, task_id)
            conn.execute(delete(t.task_tags).where(t.task_tags.c.task_id == task_id))
            rows = [{"task_id": task_id, "tag": g} for g in sorted(set(tags))]
            if rows:
                conn.execute(insert(t.task_tags), rows)

    # -- parameters, configuration, runtime ------------------------------------------------
    @staticmethod
    def _param_row(task_id: str, p: Param) -> dict[str, Any]:
        if not p.section or "/" in p.section:
            raise ValidationError(
                f"task {task_id}: parameter section {p.section!r} must be a non-empty name "
                "without '/' (write keys as 'Section/name')"
            )
        if not p.name:
            raise ValidationError(f"task {task_id}: parameter name in {p.section!r} is empty")
        return {
            "task_id": task_id,
            "section": p.section,
            "name": p.name,
            "value": p.value,
            "type": p.type,
            "description": p.description,
        }

    @staticmethod
    def _config_row(task_id: str, c: ConfigObject) -> dict[str, Any]:
        return {
            "task_id": task_id,
            "name": c.name,
            "value": c.value,
            "content_type": c.content_type,
            "description": c.description,
        }

    def set_params(self, task_id: str, params: Sequence[Param], *, replace: bool = False) -> None:
        rows = [self._param_row(task_id, p) for p in params]
        with self._write() as conn:
            self._require(conn, task_id)
            if replace:
                conn.execute(delete(t.task_params).where(t.task_params.c.task_id == task_id))
            _upsert(conn, t.task_params, rows, ["task_id", "section", "name"])

    def _params(self, conn: Connection, task_id: str) -> list[Param]:
        c = t.task_params.c
        rows = conn.execute(
            select(c.section, c.name, c.value, c.type, c.description)
            .where(c.task_id == task_id)
            .order_by(c.section, c.name)
        )
        return [Param(*r) for r in rows]

    def get_params(self, task_id: str) -> list[Param]:
        with self._read() as conn:
            params = self._params(conn, task_id)
            if not params:
                self._require(conn, task_id)
            return params

    def delete_params(self, task_id: str, keys: Sequence[str]) -> None:
        c = t.task_params.c
        with self._write() as conn:
            self._require(conn, task_id)
            for key in keys:
                section, _, name = key.partition("/")
                conn.execute(
                    delete(t.task_params).where(
                        c.task_id == task_id, c.section == section, c.name == name
                    )
                )

    def set_configs(self, task_id: str, configs: Sequence[ConfigObject]) -> None:
        with self._write() as conn:
            self._require(conn, task_id)
            _upsert(
                conn,
                t.task_configs,
                [self._config_row(task_id, c) for c in configs],
                ["task_id", "name"],
            )

    def _configs(self, conn: Connection, task_id: str) -> list[ConfigObject]:
        c = t.task_configs.c
        rows = conn.execute(
            select(c.name, c.value, c.content_type, c.description)
            .where(c.task_id == task_id)
            .order_by(c.name)
        )
        return [ConfigObject(*r) for r in rows]

    def get_configs(self, task_id: str) -> list[ConfigObject]:
        with self._read() as conn:
            self._require(conn, task_id)
            return self._configs(conn, task_id)

    def set_runtime(self, task_id: str, values: Mapping[str, str]) -> None:
        rows = [{"task_id": task_id, "key": k, "value": str(v)} for k, v in values.items()]
        with self._write() as conn:
            self._require(conn, task_id)
            _upsert(conn, t.task_runtime, rows, ["task_id", "key"])

    def get_runtime(self, task_id: str) -> dict[str, str]:
        c = t.task_runtime.c
        with self._read() as conn:
            rows = conn.execute(select(c.key, c.value).where(c.task_id == task_id)).all()
            if not rows:
                self._require(conn, task_id)
            return {k: v for k, v in rows}

    def get_runtimes(
        self, task_ids: Sequence[str], keys: Sequence[str] | None = None
    ) -> dict[str, dict[str, str]]:
        """The runtime properties of many tasks in one read (only ``keys`` when given);
        unknown ids are left out. Not part of the Backend protocol: the server's pages use it
        when the store has it."""
        c = t.task_runtime.c
        out: dict[str, dict[str, str]] = {i: {} for i in task_ids}
        ids = list(out)
        with self._read() as conn:
            for start in range(0, len(ids), 500):
                query = select(c.task_id, c.key, c.value).where(
                    c.task_id.in_(ids[start : start + 500])
                )
                if keys is not None:
                    query = query.where(c.key.in_(list(keys)))
                for task_id, key, value in conn.execute(query):
                    out[task_id][key] = value
        return out

    # -- artifacts -------------------------------------------------------------------------
    @staticmethod
    def _artifact(row: Any) -> ArtifactRecord:
        m = row._mapping
        return ArtifactRecord(
            task_id=m["task_id"],
            name=m["name"],
            type=m["type"],
            url=m["url"],
            hash=m["hash"],
            size=m["size"],
            mode=m["mode"],
            preview=m["preview"],
            metadata=m["meta"] or {},
            content_type=m["content_type"],
            created=m["created"],
        )

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
        with self._read() as conn:
            self._require(conn, record.task_id)
        try:
            size = os.path.getsize(local_path)
            deferred = not sha256 and defer_hash and self.storage.local and size >= DEFER_HASH_MIN
            digest = sha256 or ("" if deferred else file_digest(local_path)[0])
        except FileNotFoundError:
            raise ArtifactNotFoundError(
                f"artifact {record.name!r} of task {record.task_id}: the file to upload, "
                f"{local_path}, does not exist"
            )
        key = storage_key(record.task_id, "artifacts", _blob_name(record.name, local_path))
        url = self.storage.put(local_path, key, move=move)
        stored = ArtifactRecord(
            task_id=record.task_id,
            name=record.name,
            type=record.type,
            url=url,
            hash=digest,
            size=size,
            mode=record.mode,
            preview=record.preview,
            metadata=dict(record.metadata),
            content_type=record.content_type,
            created=time.time(),
        )
        try:  # retried here: the bytes, perhaps moved from local_path, are kept meanwhile
            _retrying(self, lambda: self._commit_artifact(stored), rerun_lost=True)
        except BaseException:
            self.storage.delete(url)
            raise
        if deferred:
            self._hasher.submit(self, stored)
        return stored

    def commit_artifact(
        self, record: ArtifactRecord, url: str, sha256: str, size: int
    ) -> ArtifactRecord:
        """Record an artifact whose bytes a client put into this store's (remote) storage
        itself, at ``url``."""
        check_name(record.name, f"artifact name (task {record.task_id})")
        if not self.storage.owns(url):
            raise ValidationError(f"{url!r} is not inside the artifact storage")
        with self._read() as conn:
            self._require(conn, record.task_id)
        stored = dataclasses.replace(record, url=url, hash=sha256, size=size, created=time.time())
        self._commit_artifact(stored)
        return stored

    def _commit_artifact(self, stored: ArtifactRecord) -> None:
        """Insert or replace the record; the replaced one's file is deleted after commit."""
        c = t.artifacts.c
        with self._write() as conn:
            old = conn.execute(
                select(c.url).where(c.task_id == stored.task_id, c.name == stored.name)
            ).scalar()
            _upsert(
                conn,
                t.artifacts,
                [
                    {
                        "task_id": stored.task_id,
                        "name": stored.name,
                        "type": stored.type,
                        "mode": stored.mode,
                        "url": stored.url,
                        "hash": stored.hash,
                        "size": stored.size,
                        "preview": stored.preview,
                        "meta": stored.metadata,
                        "content_type": stored.content_type,
                        "created": stored.created,
                    }
                ],
                ["task_id", "name"],
            )
        if old and old != stored.url:
            self.storage.delete(old)

    def _record_hash(self, rec: ArtifactRecord) -> None:
        """Compute and record the sha256 of an artifact committed without it."""
        digest, _ = file_digest(self.storage.local_copy(rec.url))
        c = t.artifacts.c
        with self._write() as conn:
            conn.execute(
                update(t.artifacts)
                .where(c.task_id == rec.task_id, c.name == rec.name, c.url == rec.url, c.hash == "")
                .values(hash=digest)
            )

    def wait_for_uploads(self) -> None:
        self._hasher.wait()

    def get_artifacts(self, task_id: str) -> list[ArtifactRecord]:
        c = t.artifacts.c
        with self._read() as conn:
            rows = conn.execute(
                select(t.artifacts).where(c.task_id == task_id).order_by(c.created, c.name)
            ).all()
            if not rows:
                self._require(conn, task_id)
            return [self._artifact(r) for r in rows]

    def artifact_local_path(self, record: ArtifactRecord, *, verify: bool | None = None) -> str:
        what = f"artifact {record.name!r} of task {record.task_id}"
        if not self.storage.local:  # a cached download outlives the object: ask the records
            c = t.artifacts.c
            with self._read() as conn:
                current = conn.execute(
                    select(c.url).where(c.task_id == record.task_id, c.name == record.name)
                ).scalar()
            if current != record.url:
                raise ArtifactNotFoundError(
                    f"{what}: it was replaced or deleted; get the task's artifacts again"
                )
        try:
            path = self.storage.local_copy(record.url)
        except ArtifactNotFoundError as exc:
            raise ArtifactNotFoundError(
                f"{what}: its file is gone ({exc}); re-run the task or upload it again"
            ) from exc
        size = os.path.getsize(path)
        if size != record.size:
            raise ArtifactCorruptError(
                f"{what}: the stored file {path} has {size} bytes but {record.size} were "
                "recorded; it was changed or truncated after upload. Re-run the task or "
                "upload it again"
            )
        if record.hash and (verify or (verify is None and size <= VERIFY_LIMIT)):
            digest, _ = file_digest(path)
            if digest != record.hash:
                raise ArtifactCorruptError(
                    f"{what}: the stored file {path} does not match its recorded sha256 "
                    f"({record.hash[:12]}...); it was changed after upload. Re-run the task "
                    "or upload it again"
                )
        return path

    def delete_artifact(self, task_id: str, name: str) -> None:
        c = t.artifacts.c
        with self._write() as conn:
            url = conn.execute(select(c.url).where(c.task_id == task_id, c.name == name)).scalar()
            if url is None:
                raise ArtifactNotFoundError(f"task {task_id} has no artifact {name!r}")
            conn.execute(delete(t.artifacts).where(c.task_id == task_id, c.name == name))
        self.storage.delete(url)

    # -- models ----------------------------------------------------------------------------
    def add_model(self, record: ModelRecord) -> ModelRecord:
        rec = ModelRecord(
            id=record.id or new_id(),
            task_id=record.task_id,
            name=record.name,
            url=record.url,
            framework=record.framework,
            mode=record.mode,
            created=record.created or time.time(),
            metadata=dict(record.metadata),
        )
        with self._write() as conn:
            self._require(conn, rec.task_id)
            taken = conn.execute(select(t.models.c.id).where(t.models.c.id == rec.id)).first()
            if taken is not None:
                raise ConflictError(
                    f"a model with id {rec.id!r} exists already; leave the id empty to get a "
                    "new one"
                )
            conn.execute(
                insert(t.models),
                [
                    {
                        "id": rec.id,
                        "task_id": rec.task_id,
                        "name": rec.name,
                        "url": rec.url,
                        "framework": rec.framework,
                        "mode": rec.mode,
                        "meta": rec.metadata,
                        "created": rec.created,
                    }
                ],
            )
        return rec

    def get_models(self, task_id: str) -> list[ModelRecord]:
        c = t.models.c
        with self._read() as conn:
            rows = conn.execute(
                select(t.models).where(c.task_id == task_id).order_by(c.created, c.id)
            ).all()
            if not rows:
                self._require(conn, task_id)
        return [
            ModelRecord(
                id=r.id,
                task_id=r.task_id,
                name=r.name,
                url=r.url,
                framework=r.framework,
                mode=r.mode,
                created=r.created,
                metadata=r.meta or {},
            )
            for r in rows
        ]

    # -- metrics, events, log --------------------------------------------------------------
    def _insert_rows(self, table: str, cols: str, rows: list[tuple[Any, ...]]) -> None:
        """Many rows of one table through the driver's executemany (metric and log batches:
        SQLAlchemy's per-row parameter processing would double their cost). Every row's
        first value is its task id, which must exist."""
        if not rows:
            return
        sql = f"INSERT INTO {table} ({cols}) VALUES ({', '.join([self._ph] * len(rows[0]))})"
        with self._write() as conn:
            self._require_all(conn, {str(r[0]) for r in rows})
            conn.exec_driver_sql(sql, rows)

    def add_scalars(self, points: Sequence[ScalarPoint]) -> None:
        now = time.time()
        self._insert_rows(
            "scalars",
            "task_id, title, series, iteration, value, timestamp",
            [
                (
                    p.task_id,
                    p.title,
                    p.series,
                    int(p.iteration),
                    _stored(p.value),
                    p.timestamp or now,
                )
                for p in points
            ],
        )

    def get_scalars(
        self, task_id: str, title: str | None = None, series: str | None = None
    ) -> list[ScalarPoint]:
        c = t.scalars.c
        q = select(c.task_id, c.title, c.series, c.iteration, c.value, c.timestamp).where(
            c.task_id == task_id
        )
        if title is not None:
            q = q.where(c.title == title)
        if series is not None:
            q = q.where(c.series == series)
        with self._read() as conn:
            rows = conn.execute(q.order_by(c.title, c.series, c.iteration, c.id)).all()
            if not rows:
                self._require(conn, task_id)
        return [
            ScalarPoint(r[0], r[1], r[2], r[3], math.nan if r[4] is None else r[4], r[5])
            for r in rows
        ]

    def get_last_scalars(self, task_id: str) -> dict[str, dict[str, dict[str, float]]]:
        c = t.scalars.c
        agg = (
            select(
                c.title,
                c.series,
                func.max(c.id).label("last_id"),
                func.min(c.value).label("min"),
                func.max(c.value).label("max"),
            )
            .where(c.task_id == task_id)
            .group_by(c.title, c.series)
            .subquery()
        )
        q = select(agg.c.title, agg.c.series, c.value, c.iteration, agg.c.min, agg.c.max).join(
            agg, c.id == agg.c.last_id
        )
        out: dict[str, dict[str, dict[str, float]]] = {}
        with self._read() as conn:
            for title, series, value, iteration, mn, mx in conn.execute(q):
                out.setdefault(title, {})[series] = {
                    "last": math.nan if value is None else value,
                    "min": math.nan if mn is None else mn,
                    "max": math.nan if mx is None else mx,
                    "iteration": iteration,
                }
            if not out:
                self._require(conn, task_id)
        return out

    def add_events(self, events: Sequence[Event]) -> None:
        now = time.time()
        self._insert_rows(
            "events",
            "task_id, kind, title, series, iteration, payload, timestamp",
            [
                (
                    e.task_id,
                    e.kind,
                    e.title,
                    e.series,
                    int(e.iteration),
                    e.payload,
                    e.timestamp or now,
                )
                for e in events
            ],
        )

    def get_events(self, task_id: str, kind: str | None = None) -> list[Event]:
        c = t.events.c
        q = select(c.task_id, c.kind, c.title, c.series, c.iteration, c.payload, c.timestamp).where(
            c.task_id == task_id
        )
        if kind is not None:
            q = q.where(c.kind == kind)
        with self._read() as conn:
            events = [Event(*r) for r in conn.execute(q.order_by(c.id))]
            if not events:
                self._require(conn, task_id)
            return events

    def add_log(self, lines: Sequence[LogLine]) -> None:
        now = time.time()
        self._insert_rows(
            "log",
            "task_id, level, text, timestamp",
            [(ln.task_id, ln.level, ln.text, ln.timestamp or now) for ln in lines],
        )

    def get_log(
        self, task_id: str, after: int = 0, limit: int | None = None, tail: int | None = None
    ) -> list[LogLine]:
        c = t.log.c
        q = select(c.task_id, c.text, c.level, c.timestamp, c.id).where(
            c.task_id == task_id, c.id > after
        )
        if tail is not None:
            q = q.order_by(c.id.desc()).limit(max(0, tail))
        else:
            q = q.order_by(c.id)
            if limit is not None:
                q = q.limit(limit)
        with self._read() as conn:
            lines = [LogLine(*r) for r in conn.execute(q)]
            if not lines:
                self._require(conn, task_id)
        if tail is not None:
            lines.reverse()
            if limit is not None:
                lines = lines[:limit]
        return lines

    def count_log(self, task_id: str) -> int:
        c = t.log.c
        with self._read() as conn:
            n = conn.execute(select(func.count()).where(c.task_id == task_id)).scalar() or 0
            if not n:
                self._require(conn, task_id)
            return int(n)

    # -- queues ----------------------------------------------------------------------------
    def create_queue(self, name: str) -> QueueRecord:
        check_name(name, "queue name")
        with self._write() as conn:
            _upsert(
                conn,
                t.queues,
                [{"id": new_id(), "name": name, "created": time.time()}],
                ["name"],
                update=False,
            )
            row = conn.execute(select(t.queues).where(t.queues.c.name == name)).one()
        return QueueRecord(id=row.id, name=row.name, created=row.created)

    def get_queues(self) -> list[QueueRecord]:
        with self._read() as conn:
            rows = conn.execute(select(t.queues).order_by(t.queues.c.name)).all()
            counts: dict[str, int] = dict(
                conn.execute(
                    select(t.queue_entries.c.queue_id, func.count()).group_by(
                        t.queue_entries.c.queue_id
                    )
                ).all()
            )
        return [
            QueueRecord(id=r.id, name=r.name, created=r.created, pending=int(counts.get(r.id, 0)))
            for r in rows
        ]

    def delete_queue(self, name: str) -> None:
        with self._write() as conn:
            qid = conn.execute(select(t.queues.c.id).where(t.queues.c.name == name)).scalar()
            if qid is None:
                raise NotFoundError(
                    f"queue {name!r} does not exist; see the queues with `stepline queues list`"
                )
            waiting = conn.execute(
                select(func.count()).where(t.queue_entries.c.queue_id == qid)
            ).scalar()
            if waiting:
                raise ConflictError(
                    f"queue {name!r} still holds {waiting} task(s); dequeue them first"
                )
            conn.execute(delete(t.queues).where(t.queues.c.id == qid))

    def _queue_id(self, conn: Connection, name: str) -> str:
        qid = conn.execute(select(t.queues.c.id).where(t.queues.c.name == name)).scalar()
        if qid is None:
            raise NotFoundError(
                f"queue {name!r} does not exist; create it with `stepline queues create {name}` "
                f"or start an agent for it: `stepline agent --queue {name}`"
            )
        return str(qid)

    def enqueue(self, task_id: str, queue: str, *, priority: int = 0) -> TaskRecord:
        now = time.time()
        try:
            return self._enqueue(task_id, queue, priority, now)
        except _CommitLost as exc:  # landed if the task shows it, or was claimed since
            landed = _retrying(self, lambda: self._enqueued_back(task_id, now))
            if landed is not None:
                return landed
            raise _Transient(exc.cause) from exc  # it did not: run the call again

    def _enqueued_back(self, task_id: str, when: float) -> TaskRecord | None:
        rec = self._read_back(task_id, TaskStatus.queued, when)
        if rec is None:
            rec = self.get_task(task_id)
            if rec.started is None or rec.started < when:
                return None
        return rec

    def _enqueue(self, task_id: str, queue: str, priority: int, now: float) -> TaskRecord:
        with self._write() as conn:
            qid = self._queue_id(conn, queue)
            res = conn.execute(
                _Q.status_update(TaskStatus.queued, False),
                {"tid": task_id, "status": "queued", "message": "", "reason": "", "now": now},
            )
            if res.rowcount == 0:
                old = conn.execute(_Q.status_of, {"tid": task_id}).scalar()
                if old is None:
                    raise TaskNotFoundError(task_id)
                raise InvalidTransitionError(task_id, old, TaskStatus.queued.value)
            conn.execute(
                insert(t.queue_entries),
                {"task_id": task_id, "queue_id": qid, "priority": int(priority), "enqueued": now},
            )
            rows = [{"task_id": task_id, "key": "_queue", "value": queue}]
            # kept for a re-queue after its agent dies
            rows.append({"task_id": task_id, "key": "_priority", "value": str(int(priority))})
            _upsert(conn, t.task_runtime, rows, ["task_id", "key"])
            return self._load(conn, task_id)

    def dequeue(self, task_id: str) -> TaskRecord:
        params = {"tid": task_id, "status": "created", "message": "dequeued", "reason": "",
                  "now": time.time()}  # fmt: skip
        with self._write() as conn:
            res = conn.execute(
                _Q.status_update(TaskStatus.created, True).where(
                    t.tasks.c.status == literal(TaskStatus.queued.value)
                ),
                params,
            )
            if res.rowcount == 0:
                old = conn.execute(_Q.status_of, {"tid": task_id}).scalar()
                if old is None:
                    raise TaskNotFoundError(task_id)
                raise InvalidTransitionError(task_id, old, "created (dequeued)")
            conn.execute(_Q.dequeue, {"tid": task_id})
            return self._load(conn, task_id)

    def _entries(self, queue_ids: Any) -> Any:
        e = t.queue_entries.c
        return (
            select(e.task_id)
            .where(e.queue_id == queue_ids)
            .order_by(e.priority.desc(), e.enqueued, e.task_id)
        )

    def queue_tasks(self, queue: str) -> list[str]:
        with self._read() as conn:
            qid = self._queue_id(conn, queue)
            return [str(r[0]) for r in conn.execute(self._entries(qid)).all()]

    def claim(
        self, queues: Sequence[str], agent_id: str, *, wait: float = 0.0
    ) -> TaskRecord | None:
        deadline = time.monotonic() + wait
        listener = self.changes() if wait > 0 else None
        while True:
            seq = listener.seq(QUEUE) if listener is not None else 0
            record = self._claim(queues, agent_id)
            left = deadline - time.monotonic()
            if record is not None or left <= 0:
                return record
            self._sleep(listener, QUEUE, seq, left)

    def watch(self, known: Mapping[str, TaskStatus], *, timeout: float = 0.0) -> list[TaskRecord]:
        deadline = time.monotonic() + timeout
        ids = list(known)
        listener = self.changes() if timeout > 0 else None
        while True:
            seq = listener.seq(TASK) if listener is not None else 0
            changed = [
                r
                for r in self.find_tasks(TaskFilter(ids=ids, archived=None))
                if r.status != known[r.id]
            ]
            left = deadline - time.monotonic()
            if changed or left <= 0 or not ids:
                return changed
            self._sleep(listener, TASK, seq, left)

    #: with notifications, a waiter still looks again this often (a notification is not
    #: guaranteed to arrive, e.g. while the listener reconnects)
    RECHECK = 2.0

    def _sleep(self, listener: ChangeListener | None, channel: str, seq: int, left: float) -> None:
        if listener is not None and listener.live:
            listener.wait(channel, seq, min(left, self.RECHECK))
        else:
            time.sleep(min(self.poll_interval, left))

    def _claim(self, queues: Sequence[str], agent_id: str) -> TaskRecord | None:
        """One claim. If the connection is cut while its commit is in flight, whether the
        claim landed is read back afterwards (the task's ``started`` is the claim's own
        time): a landed claim is returned, so no task is left claimed with nobody running
        it, and one that did not land left the task queued."""
        attempt: dict[str, Any] = {}
        try:
            return self._claim_once(queues, agent_id, attempt)
        except _CommitLost:
            if "task" not in attempt:
                raise
        status = TaskStatus.in_progress
        return _retrying(self, lambda: self._read_back(attempt["task"], status, attempt["now"]))

    def _claim_once(
        self, queues: Sequence[str], agent_id: str, attempt: dict[str, Any]
    ) -> TaskRecord | None:
        names = list(dict.fromkeys(queues))
        if not names:
            return None
        queue_ids: dict[str, str] = {}
        if self.is_sqlite:  # the idle case: no write transaction, no lock
            with self._read() as conn:
                rows = conn.execute(
                    select(t.queues.c.id, t.queues.c.name).where(t.queues.c.name.in_(names))
                ).all()
                queue_ids = {r.name: r.id for r in rows}
                waiting = conn.execute(
                    select(t.queue_entries.c.queue_id)
                    .where(t.queue_entries.c.queue_id.in_(list(queue_ids.values())))
                    .limit(1)
                ).first()
            if waiting is None:
                return None
        now = time.time()
        with self._write() as conn:
            for name in names:
                while (task_id := self._take_entry(conn, name, queue_ids)) is not None:
                    res = conn.execute(
                        _Q.status_update(TaskStatus.in_progress, False).where(
                            t.tasks.c.status == literal(TaskStatus.queued.value)
                        ),
                        {"tid": task_id, "status": "in_progress", "message": "",
                         "reason": "", "now": now},
                    )  # fmt: skip
                    if res.rowcount == 0:  # an entry whose task is no longer queued
                        continue
                    _upsert(
                        conn,
                        t.task_runtime,
                        [
                            {"task_id": task_id, "key": "_agent", "value": agent_id},
                            {"task_id": task_id, "key": "_queue", "value": name},
                        ],
                        ["task_id", "key"],
                    )
                    self._add_running(conn, agent_id, task_id, now)
                    record = self._load(conn, task_id)
                    attempt.update(task=task_id, now=now)  # the commit comes next
                    return record
        return None

    def _take_entry(self, conn: Connection, name: str, queue_ids: dict[str, str]) -> str | None:
        """Take the first entry of queue ``name`` off it; its task id, or None when empty.
        On PostgreSQL one statement locks and deletes the first entry no other claimer holds
        (``SKIP LOCKED``); SQLite's write transaction already excludes other claimers."""
        if not self.is_sqlite:
            return conn.execute(_Q.take_first, {"qname": name}).scalar()
        qid = queue_ids.get(name)
        if qid is None:
            return None
        task_id = conn.execute(self._entries(qid).limit(1)).scalar()
        if task_id is not None:
            conn.execute(_Q.dequeue, {"tid": task_id})
        return task_id

    def _add_running(self, conn: Connection, agent_id: str, task_id: str, now: float) -> None:
        """Append the task to the agent's running list (in place on PostgreSQL)."""
        if not self.is_sqlite:
            conn.execute(_Q.add_running, {"aid": agent_id, "tid": task_id, "now": now})
            return
        row = conn.execute(select(t.agents.c.running).where(t.agents.c.id == agent_id)).first()
        if row is not None:
            conn.execute(
                update(t.agents)
                .where(t.agents.c.id == agent_id)
                .values(running=[*(row.running or []), task_id], last_seen=now)
            )

    # -- agents ----------------------------------------------------------------------------
    @staticmethod
    def _agent(row: Any) -> AgentRecord:
        return AgentRecord(
            id=row.id,
            name=row.name,
            queues=list(row.queues or []),
            host=row.host,
            pid=int(row.pid),
            started=row.started,
            last_seen=row.last_seen,
            timeout=row.timeout,
            running=list(row.running or []),
            info=dict(row.info or {}),
        )

    def register_agent(self, agent: AgentRecord) -> None:
        now = time.time()
        row = {
            "id": agent.id,
            "name": agent.name,
            "queues": list(agent.queues),
            "host": agent.host,
            "pid": int(agent.pid),
            "started": agent.started or now,
            "last_seen": now,
            "timeout": float(agent.timeout),
            "running": list(agent.running),
            "info": dict(agent.info),
        }
        with self._write() as conn:
            _upsert(conn, t.agents, [row], ["id"])

    def heartbeat(
        self, agent_id: str, running: Sequence[str], info: Mapping[str, Any] | None = None
    ) -> list[str]:
        values: dict[str, Any] = {"last_seen": time.time(), "running": list(running)}
        if info is not None:
            values["info"] = dict(info)
        with self._write() as conn:
            res = conn.execute(update(t.agents).where(t.agents.c.id == agent_id).values(**values))
            if res.rowcount == 0:
                raise NotFoundError(
                    f"agent {agent_id} is not registered (it was taken for dead after missing "
                    "its heartbeats); register it again"
                )
        if not running:
            return []
        with self._read() as conn:
            rows = conn.execute(
                select(t.tasks.c.id, t.tasks.c.status).where(t.tasks.c.id.in_(list(running)))
            ).all()
        states = {r.id: r.status for r in rows}
        return [tid for tid in running if states.get(tid) != TaskStatus.in_progress.value]

    def get_agents(self) -> list[AgentRecord]:
        with self._read() as conn:
            rows = conn.execute(select(t.agents).order_by(t.agents.c.name, t.agents.c.id)).all()
        return [self._agent(r) for r in rows]

    def remove_agent(self, agent_id: str) -> None:
        with self._write() as conn:
            conn.execute(delete(t.agents).where(t.agents.c.id == agent_id))

    def reap_agents(self) -> list[tuple[str, str]]:
        now = time.time()
        a = t.agents.c
        with self._read() as conn:
            dead = conn.execute(select(a.id).where(a.last_seen + a.timeout < now)).first()
        if dead is None:
            return []
        done: list[tuple[str, str]] = []
        with self._write() as conn:
            rows = conn.execute(select(t.agents).where(a.last_seen + a.timeout < now)).all()
            for agent in rows:
                rt = t.task_runtime.c
                orphans = conn.execute(
                    select(t.tasks.c.id)
                    .join(t.task_runtime, rt.task_id == t.tasks.c.id)
                    .where(
                        rt.key == "_agent",
                        rt.value == agent.id,
                        t.tasks.c.status == TaskStatus.in_progress.value,
                    )
                ).all()
                for (task_id,) in orphans:
                    done.append((task_id, self._orphan(conn, task_id, agent, now)))
                conn.execute(delete(t.agents).where(a.id == agent.id))
        return done

    def _orphan(self, conn: Connection, task_id: str, agent: Any, now: float) -> str:
        """Requeue (once, if asked) or fail a task whose agent died."""
        runtime = dict(
            conn.execute(
                select(t.task_runtime.c.key, t.task_runtime.c.value).where(
                    t.task_runtime.c.task_id == task_id,
                    t.task_runtime.c.key.in_(
                        ["_queue", "_priority", "_requeue_on_agent_loss", "_agent_losses"]
                    ),
                )
            ).all()
        )
        seconds = now - agent.last_seen
        why = (
            f"agent {agent.name} ({agent.host}, pid {agent.pid}) sent no heartbeat for "
            f"{seconds:.0f} s while running this task"
        )
        losses = int(runtime.get("_agent_losses") or 0)
        allowed = int(runtime.get("_requeue_on_agent_loss") or 0)
        queue = runtime.get("_queue") or ""
        qid = conn.execute(select(t.queues.c.id).where(t.queues.c.name == queue)).scalar()
        requeue = qid is not None and losses < allowed
        if requeue:
            conn.execute(
                update(t.tasks)
                .where(t.tasks.c.id == task_id)
                .values(status=TaskStatus.queued.value, status_message="re-queued",
                        status_reason=why, started=None, last_update=now)
            )  # fmt: skip
            conn.execute(
                insert(t.queue_entries),
                {"task_id": task_id, "queue_id": qid,
                 "priority": int(runtime.get("_priority") or 0), "enqueued": now},
            )  # fmt: skip
            _upsert(
                conn,
                t.task_runtime,
                [{"task_id": task_id, "key": "_agent_losses", "value": str(losses + 1)}],
                ["task_id", "key"],
            )
            text = f"{why}; put back on queue {queue!r}"
        else:
            conn.execute(
                update(t.tasks)
                .where(t.tasks.c.id == task_id)
                .values(status=TaskStatus.failed.value, status_message="agent lost",
                        status_reason=why, completed=now, last_update=now)
            )  # fmt: skip
            text = f"{why}; marked failed"
        conn.execute(
            insert(t.log),
            {"task_id": task_id, "level": "error", "text": f"stepline: {text}", "timestamp": now},
        )
        return "requeued" if requeue else "failed"


for _name, _fn in list(vars(SqlBackend).items()):
    if inspect.isfunction(_fn) and not _name.startswith("_") and _name not in ("close", "changes"):
        setattr(SqlBackend, _name, _retried(_fn))
