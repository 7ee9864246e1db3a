"""Copying a whole store into another, with its history: an embedded home (a SQLite file and
an artifact folder) into a team's database (PostgreSQL) and object store.

What it guarantees and how:

* **All or nothing at the target.** The target is brought to the current schema and every row
  is written in one transaction. Artifact files are uploaded before the commit and deleted
  again if anything fails, so a failed copy leaves the target as it was.
* **Safe to run again.** A row whose primary key (or another unique column) is already at the
  target is kept as it is there and counted as skipped; copying the same source twice adds
  nothing the second time, and copying again later adds only what is new.
* **Projects and queues by name.** A project or queue that exists at the target under the same
  name is the same one: it keeps its target id and the tasks and queue entries that refer to it
  are given that id. (Every database has its own ``default`` and ``services`` queues.)
* **Ids the target assigns.** Metric points, events and log lines are numbered by the target:
  copying their ids would collide with its own rows and leave PostgreSQL's sequences behind.
  They are written in the source's order, so their order is kept. As they have no key of their
  own, a source row of a task that had such rows at the target before the copy counts as
  present when an equal row (every column but the id) is there, as many times as it is there.
* **Files follow their rows.** The file of an artifact or model whose url is inside the source
  storage is copied to the same relative place in the target storage (through ``BlobStorage``,
  so any fsspec URL works) and the url rewritten. A file already at that place is not copied
  again: its name holds a random part, so it is the same file. Urls outside the source storage
  (another bucket, a web address, or the target storage itself) are kept as they are.
* **The source is only read,** in one transaction, so the copy is one consistent moment of it.
  A source at an older schema is upgraded inside that transaction, which is rolled back.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from stepline.backend.sql import migrate, schema
from stepline.backend.sql.store import make_engine
from stepline.backend.storage import BlobStorage, is_local_url, local_path_of
from stepline.core.errors import ArtifactError, ArtifactNotFoundError, ConfigError, StoreError
from stepline.core.ids import new_id

#: rows read from the source and written to the target at a time
BATCH = 1000

#: tables whose rows are matched by name: the target's row of that name is kept, and the rows
#: that refer to it (by a foreign key on its id) are given the target's id
BY_NAME = ("projects", "queues")

#: tables whose ``url`` may point into the artifact storage, in the order they are copied
#: (a model often points at an artifact's file, which is then copied once)
WITH_FILES = ("artifacts", "models")


@dataclass
class TableCount:
    copied: int = 0
    skipped: int = 0


@dataclass
class CopyReport:
    """What ``copy_store`` did (or, with ``dry_run``, would do)."""

    source: str  #: the source database's URL, password hidden
    target: str  #: the target database's URL, password hidden
    source_storage: str
    target_storage: str
    dry_run: bool
    source_revision: str | None = None  #: the source's schema (it is read at ``HEAD``)
    target_revision: str | None = None  #: the target's schema before the copy (None: empty)
    tables: dict[str, TableCount] = field(default_factory=dict)
    files: int = 0  #: files copied into the target storage
    bytes: int = 0  #: their total size
    kept_urls: int = 0  #: artifact and model rows whose url was kept as it was

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def database_url(path_or_url: str) -> str:
    """A SQLAlchemy URL for a database URL or the path of a SQLite file."""
    if "://" in path_or_url:
        return path_or_url
    return f"sqlite:///{Path(path_or_url).expanduser().absolute()}"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory ones)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().absolute()


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def copy_store(
    src_url: str,
    src_storage: str,
    dst_url: str,
    dst_storage: str,
    home: Path,
    dry_run: bool = False,
    *,
    timeout: float = 30.0,
) -> CopyReport:
    """Copy every row of the store at ``src_url`` (artifact files in ``src_storage``) into the
    one at ``dst_url`` (files into ``dst_storage``); see the module's docstring for how. With
    ``dry_run`` the same work is done in a transaction that is rolled back, and no file is
    written. ``home`` holds the cache for files read from a remote source storage."""
    src_file, dst_file = sqlite_file(src_url), sqlite_file(dst_url)
    if src_file is not None and not src_file.is_file():
        raise ConfigError(
            f"there is no SQLite database at {src_file} to copy from; give the home's "
            "stepline.db (--from PATH) or set STEPLINE_HOME"
        )
    if src_file is not None and dst_file is not None:
        same = src_file.resolve() == dst_file.resolve()
    else:
        same = _safe(src_url) == _safe(dst_url)
    if same:
        raise ConfigError(
            f"the source and the target are the same database ({_safe(dst_url)}); give the "
            "target with --to URL (or STEPLINE_DB)"
        )
    new_target_file = dst_file is not None and not dst_file.exists()
    report = CopyReport(
        source=_safe(src_url),
        target=_safe(dst_url),
        source_storage=src_storage,
        target_storage=dst_storage,
        dry_run=dry_run,
    )
    src_engine = make_engine(src_url, timeout)
    dst_engine = make_engine(dst_url, timeout).execution_options(stepline_write=True)
    copier = _Copier(
        BlobStorage(src_storage, home / "cache"),
        BlobStorage(dst_storage, home / "cache"),
        report,
    )
    done = False
    try:
        with src_engine.connect() as src, dst_engine.connect() as dst:
            if src.dialect.name == "postgresql":  # one snapshot for every read
                src = src.execution_options(isolation_level="REPEATABLE READ")
            src.begin()
            try:
                copier.stage = "reading the source's schema"
                report.source_revision = _bring_to_head(src, lock=False)
                copier.stage = "bringing the target to the current schema"
                dst.begin()
                report.target_revision = _bring_to_head(dst, lock=True)
                copier.run(src, dst)
                copier.stage = "commit"
                if dry_run:
                    dst.rollback()
                else:
                    dst.commit()
            finally:
                src.rollback()
        done = True
    except DBAPIError as exc:
        orig = exc.orig if exc.orig is not None else exc
        raise StoreError(
            f"copying into {report.target} failed ({copier.stage}): "
            f"{str(orig).strip()}; the target was left as it was"
        ) from exc
    finally:
        if not done:
            copier.remove_uploaded()
        src_engine.dispose()
        dst_engine.dispose()
        if new_target_file and (dry_run or not done):
            _remove_sqlite(dst_file)
    return report


def _remove_sqlite(path: Path | None) -> None:
    """Remove a SQLite file this copy created (and its WAL files)."""
    if path is None:
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass


def _bring_to_head(conn: Connection, *, lock: bool) -> str | None:
    """Upgrade the database of ``conn`` to ``HEAD`` inside its transaction; return the
    revision it was at (None: empty). ``lock`` holds off processes that would create the same
    PostgreSQL schema at once (``migrate.ensure_schema`` takes the same lock)."""
    if lock and conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": migrate.PG_LOCK_KEY})
    revision = None
    if inspect(conn).has_table("alembic_version"):
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if revision == migrate.HEAD:
        return revision
    if revision is not None and revision > migrate.HEAD:
        raise StoreError(migrate.behind_message(conn.engine, revision))
    from alembic import command

    cfg = migrate.alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    return revision


def _insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(table), rows)


def _order() -> list[Table]:
    """Every table, those referred to before those referring to them; files last."""
    tables = schema.metadata.sorted_tables
    return sorted(tables, key=lambda tb: WITH_FILES.index(tb.name) if tb.name in WITH_FILES else -1)


def _parents_first(rows: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    """``rows`` ordered so that a row comes after the row its ``column`` names."""
    by_id = {r["id"]: r for r in rows}

    def depth(row: dict[str, Any]) -> int:
        n, seen, parent = 0, set(), row[column]
        while parent in by_id and parent not in seen:
            seen.add(parent)
            n += 1
            parent = by_id[parent][column]
        return n

    return sorted(rows, key=depth)


class _Copier:
    """The copy of one source into one target, table by table."""

    def __init__(self, src_files: BlobStorage, dst_files: BlobStorage, report: CopyReport) -> None:
        self.src_files = src_files
        self.dst_files = dst_files
        self.report = report
        self.stage = ""  #: what is being done (for error messages)
        #: {table: {source id: target id}} for the tables in BY_NAME
        self.ids: dict[str, dict[str, str]] = {}
        #: {source url: target url} of the files placed so far
        self.urls: dict[str, str] = {}
        self.uploaded: list[str] = []

    def run(self, src: Connection, dst: Connection) -> None:
        for name in schema.metadata.tables:  # reported in the schema's order
            self.report.tables[name] = TableCount()
        for table in _order():
            self.stage = f"table {table.name}"
            count = self.report.tables[table.name]
            if table.name in BY_NAME:
                self._by_name(src, dst, table, count)
            elif table.autoincrement_column is not None:
                self._numbered(src, dst, table, count)
            else:
                self._keyed(src, dst, table, count)

    def remove_uploaded(self) -> None:
        for url in self.uploaded:
            self.dst_files.delete(url)
        self.uploaded.clear()

    # -- rows --------------------------------------------------------------------------------
    @staticmethod
    def _batches(src: Connection, query: Any) -> Iterator[list[dict[str, Any]]]:
        result = src.execute(query.execution_options(yield_per=BATCH))
        for part in result.mappings().partitions():
            yield [dict(row) for row in part]

    def _remap(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with its references to rows matched by name set to the target's ids."""
        for column in table.columns:
            for fk in column.foreign_keys:
                ids = self.ids.get(fk.column.table.name)
                if ids is not None and row[column.name] is not None:
                    row[column.name] = ids.get(row[column.name], row[column.name])
        return row

    def _by_name(self, src: Connection, dst: Connection, table: Table, count: TableCount) -> None:
        """Rows matched by name (small tables: read whole)."""
        c = table.c
        rows = [dict(r) for r in src.execute(select(table).order_by(c.name)).mappings()]
        if "parent_id" in c:
            rows = _parents_first(rows, "parent_id")
        there = {name: id_ for name, id_ in dst.execute(select(c.name, c.id))}
        taken = set(there.values())
        ids = self.ids.setdefault(table.name, {})
        fresh = []
        for row in rows:
            if row["name"] in there:
                ids[row["id"]] = there[row["name"]]
                count.skipped += 1
                continue
            target_id = row["id"] if row["id"] not in taken else new_id()
            ids[row["id"]] = target_id
            taken.add(target_id)
            fresh.append(self._remap(table, {**row, "id": target_id}))
        _insert(dst, table, fresh)
        count.copied += len(fresh)

    def _keyed(self, src: Connection, dst: Connection, table: Table, count: TableCount) -> None:
        """Rows with a primary key of their own: those whose key (or another unique column)
        is at the target already are skipped."""
        key = list(table.primary_key.columns)
        unique = [c for c in table.columns if c.unique and not c.primary_key]
        for batch in self._batches(src, select(table).order_by(*key)):
            rows = [self._remap(table, row) for row in batch]
            firsts = list({row[key[0].name] for row in rows})
            present = {tuple(r) for r in dst.execute(select(*key).where(key[0].in_(firsts)))}
            taken = {
                c.name: set(dst.scalars(select(c).where(c.in_([r[c.name] for r in rows]))))
                for c in unique
            }
            fresh = [
                row
                for row in rows
                if tuple(row[k.name] for k in key) not in present
                and not any(row[name] in values for name, values in taken.items())
            ]
            if table.name in WITH_FILES:
                for row in fresh:
                    what = f"{table.name[:-1]} {row['name']!r} of task {row['task_id']}"
                    row["url"] = self._place(row["url"], what)
            _insert(dst, table, fresh)
            count.copied += len(fresh)
            count.skipped += len(rows) - len(fresh)

    def _numbered(self, src: Connection, dst: Connection, table: Table, count: TableCount) -> None:
        """Rows numbered by the store (metrics, events, log): written without their ids, in
        the source's order. A task's rows that were at the target before are matched by
        content, with multiplicity."""
        serial = table.autoincrement_column
        assert serial is not None
        cols = [c for c in table.columns if c is not serial]
        task = table.c.task_id
        before: dict[str, Counter[tuple[Any, ...]]] = {}
        for batch in self._batches(src, select(*cols).order_by(serial)):
            unseen = list({row["task_id"] for row in batch} - before.keys())
            for tid in unseen:
                before[tid] = Counter()
            for start in range(0, len(unseen), BATCH):
                there = dst.execute(select(*cols).where(task.in_(unseen[start : start + BATCH])))
                for old in there.mappings():
                    before[old["task_id"]][tuple(old.values())] += 1
            fresh = []
            for row in batch:
                seen = before[row["task_id"]]
                content = tuple(row.values())
                if seen[content] > 0:
                    seen[content] -= 1
                else:
                    fresh.append(row)
            _insert(dst, table, fresh)
            count.copied += len(fresh)
            count.skipped += len(batch) - len(fresh)

    # -- files -------------------------------------------------------------------------------
    def _key(self, url: str) -> str:
        """Where ``url`` (inside the source storage) is, relative to its root."""
        files = self.src_files
        if files.local:
            root = os.path.realpath(files.root)
            rel = os.path.relpath(os.path.realpath(local_path_of(url)), root)
            return rel.replace(os.sep, "/")
        return url[len(files.root_url) + 1 :]

    def _exists(self, url: str) -> bool:
        if is_local_url(url):
            return os.path.exists(local_path_of(url))
        return bool(self.dst_files.fs.exists(url))

    def _place(self, url: str, what: str) -> str:
        """The target url of the file at ``url``, copied there if it is not there yet."""
        placed = self.urls.get(url)
        if placed is not None:
            return placed
        if not url or self.dst_files.owns(url) or not self.src_files.owns(url):
            self.report.kept_urls += 1
            return url
        key = self._key(url)
        target = self.dst_files.url_for(key)
        if not self._exists(target):
            try:
                path = self.src_files.local_copy(url)
            except ArtifactNotFoundError as exc:
                raise ArtifactNotFoundError(
                    f"{what}: {exc}; nothing was copied. Put the file back, or delete the "
                    "record at the source (e.g. Task.delete_artifacts), and copy again"
                ) from exc
            size = os.path.getsize(path)
            if not self.report.dry_run:
                try:
                    self.dst_files.put(path, key)
                except (OSError, ArtifactError) as exc:
                    raise ArtifactError(
                        f"{what}: could not write its file to the target storage "
                        f"{self.dst_files.root_url} ({exc}); nothing was copied. Check that "
                        "the storage exists and this user may write to it"
                    ) from exc
                self.uploaded.append(target)
            self.report.files += 1
            self.report.bytes += size
        self.urls[url] = target
        return target
