"""Bringing a database to the current schema.

Opening a store checks one row (``alembic_version``) against ``HEAD``; only when they differ is
Alembic loaded (it costs half a second to import) and the migrations run, under a lock so that
two processes opening a new database at once do not both create it (a file lock beside a SQLite
file, an advisory lock on PostgreSQL).

Who upgrades: an embedded home (SQLite) is upgraded by whichever process opens it first. A shared
database (PostgreSQL) is created by the first process that finds it empty, but an existing one is
upgraded only on purpose, by ``stepline db upgrade`` or a starting ``stepline server``: agents and
scripts of an older and a newer stepline may share it, and none of them should change its schema
under the others.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from stepline.core.errors import StoreError

#: The newest revision in migrations/versions; a test keeps the two equal.
HEAD = "0005"

#: the key of PostgreSQL's advisory lock held while migrating
PG_LOCK_KEY = 0x5E_9_11_4E

MIGRATIONS = Path(__file__).with_name("migrations")


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            return row[0] if row else None
    except (OperationalError, ProgrammingError):
        return None


def ensure_schema(
    engine: Engine, lock_dir: Path | None, *, upgrade_existing: bool = True
) -> str | None:
    """Upgrade the database to ``HEAD`` if it is not there yet. Without ``upgrade_existing``
    only an empty database is created; one at an older revision is refused. Returns the
    revision found before an upgrade ran ("" for an empty database), or None when none ran."""
    revision = current_revision(engine)
    if revision == HEAD:
        return None
    if revision is not None and not upgrade_existing:
        raise StoreError(behind_message(engine, revision))
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            conn.commit()
            try:
                return _upgrade_if_needed(engine, upgrade_existing)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
    lock_file = None
    if lock_dir is not None:
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(lock_dir / ".migrate.lock", "a")  # noqa: SIM115
        fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
        return _upgrade_if_needed(engine, upgrade_existing)
    finally:
        if lock_file is not None:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
            lock_file.close()


def _upgrade_if_needed(engine: Engine, upgrade_existing: bool) -> str | None:
    """Under the migration lock: look again (another process may have done it)."""
    revision = current_revision(engine)
    if revision == HEAD:
        return None
    if revision is not None and not upgrade_existing:
        raise StoreError(behind_message(engine, revision))
    upgrade(engine)
    return revision or ""


def safe_url(engine: Engine) -> str:
    """The database URL with its password hidden."""
    return engine.url.render_as_string(hide_password=True)


def behind_message(engine: Engine, revision: str) -> str:
    if revision > HEAD:
        return (
            f"the database {safe_url(engine)} has schema {revision}, newer than this stepline "
            f"knows ({HEAD}); upgrade stepline"
        )
    return (
        f"the database {safe_url(engine)} has schema {revision}, older than this stepline "
        f"needs ({HEAD}); run `stepline db upgrade` (or start `stepline server`, which "
        "upgrades it)"
    )


def alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    cfg = alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except Exception as exc:  # pragma: no cover - the message is what matters
        raise StoreError(
            f"could not bring the database {safe_url(engine)} to schema {revision}: {exc}; "
            "if it was created by a newer stepline, upgrade stepline"
        ) from exc
