"""``stepline db``: the store's schema (``current``, ``upgrade``) and moving an embedded home
into a team's database and object store (``migrate-from-sqlite``).

These commands work on databases directly, never through a server. ``current`` and
``upgrade`` open a plain engine: opening the store itself would refuse a PostgreSQL database
at an older schema, which is what ``upgrade`` is for.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from stepline.cli.render import fmt_size, print_trimmed, stdout_console
from stepline.core.errors import ConfigError, StoreError, ValidationError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from stepline.backend.sql.transfer import CopyReport

app = typer.Typer(
    help="The store's database: its schema revision (`current`), bringing it up to date "
    "(`upgrade`), and moving a home's history into a team's database (`migrate-from-sqlite`).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: exit codes of ``stepline db current``
CURRENT, BEHIND, AHEAD = 0, 1, 2


def _configured() -> str:
    """The configured database's URL: STEPLINE_DB, or the home's SQLite file."""
    from stepline.core.config import load_config

    config = load_config()
    if config.api_url:
        raise ConfigError(
            f"STEPLINE_API={config.api_url} is set: this command works on the database itself. "
            "Run it on the server's machine with STEPLINE_API unset (and STEPLINE_DB set)"
        )
    return config.db_url


def _engine(url: str) -> Engine:
    """A plain engine on an existing database (a missing SQLite file is an error, not created)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from stepline.backend.sql.migrate import safe_url
    from stepline.backend.sql.transfer import sqlite_file

    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise ConfigError(
            f"there is no database at {path}; a home's database is created the first time "
            "stepline uses it. Check STEPLINE_HOME and STEPLINE_DB"
        )
    try:
        engine = create_engine(url)
    except ImportError as exc:
        raise ConfigError(
            f"{make_url(url).drivername}:// needs a database driver that is not installed "
            f"({exc}); for PostgreSQL: pip install 'stepline[postgres]'"
        ) from exc
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        engine.dispose()
        reason = str(exc.orig if exc.orig is not None else exc).strip()
        raise StoreError(f"cannot connect to {safe_url(engine)}: {reason}") from exc
    return engine


def _revisions() -> list[str]:
    """The schema revisions this stepline knows, oldest first."""
    from alembic.script import ScriptDirectory

    from stepline.backend.sql.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def _state(revision: str | None, known: list[str]) -> str:
    from stepline.backend.sql.migrate import HEAD

    if revision == HEAD:
        return "current"
    if revision is None:
        return "empty"
    return "behind" if revision in known else "ahead"


@app.command("current")
def current(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The configured database's schema revision, and this stepline's.

    Exits 0 when they are equal, 1 when the database needs `stepline db upgrade` (or is
    empty), 2 when it was made by a newer stepline."""
    from stepline.backend.sql.migrate import HEAD, current_revision, safe_url

    url = _configured()
    engine = _engine(url)
    try:
        revision = current_revision(engine)
        shown = safe_url(engine)
    finally:
        engine.dispose()
    state = _state(revision, _revisions())
    if as_json:
        out = {"database": shown, "revision": revision, "head": HEAD, "state": state,
               "upgrade_needed": state in ("behind", "empty")}  # fmt: skip
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        advice = {
            "current": "up to date",
            "behind": "behind: run `stepline db upgrade`",
            "empty": "empty: `stepline db upgrade` creates the schema",
            "ahead": "made by a newer stepline: upgrade stepline",
        }
        typer.echo(f"database  {shown}")
        typer.echo(f"revision  {revision or 'none'}")
        typer.echo(f"head      {HEAD} (this stepline)")
        typer.echo(f"state     {advice[state]}")
    code = {"current": CURRENT, "behind": BEHIND, "empty": BEHIND, "ahead": AHEAD}[state]
    if code:
        raise typer.Exit(code)


@app.command("upgrade")
def upgrade(
    to: Annotated[
        str, typer.Option("--to", help="The revision to upgrade to (default: the newest).")
    ] = "head",
) -> None:
    """Bring the configured database (STEPLINE_DB, or the home's SQLite file) up to date.

    Stop agents and servers of an older stepline first: they may not work with the new
    schema."""
    from stepline.backend.sql import migrate
    from stepline.backend.sql.transfer import sqlite_file

    url = _configured()
    known = _revisions()
    target = migrate.HEAD if to == "head" else to
    if target not in known:
        raise ValidationError(
            f"--to {to}: this stepline knows no such revision; it knows {', '.join(known)}"
        )
    engine = _engine(url)
    try:
        shown = migrate.safe_url(engine)
        before = migrate.current_revision(engine)
        if before is not None and before not in known:
            raise StoreError(migrate.behind_message(engine, before))
        if before == target:
            typer.echo(f"{shown} is at {target} already")
            return
        if before is not None and known.index(before) > known.index(target):
            raise ValidationError(
                f"{shown} is at {before}, past --to {target}; stepline does not downgrade"
            )
        if target == migrate.HEAD:  # under the lock other processes creating it take
            path = sqlite_file(url)
            migrate.ensure_schema(engine, path.parent if path else None)
        else:
            migrate.upgrade(engine, target)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    typer.echo(f"upgraded {shown}: {before or 'empty'} -> {after}")


@app.command("migrate-from-sqlite")
def migrate_from_sqlite(
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="The SQLite file (or a database URL) to copy. Default: the home's stepline.db.",
        ),
    ] = None,
    source_storage: Annotated[
        str | None,
        typer.Option("--from-storage", help="Its artifact folder. Default: the home's artifacts."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--to", help="The database URL to copy into. Default: STEPLINE_DB."),
    ] = None,
    target_storage: Annotated[
        str | None,
        typer.Option(
            "--to-storage",
            help="Where the artifact files go: a folder or a URL such as s3://bucket/prefix. "
            "Default: STEPLINE_STORAGE.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be copied; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Copy a home's whole history into another database and artifact storage.

    Tasks, parameters, metrics, logs, artifacts, models, queues, agents and tokens go into
    the target, e.g. a team's PostgreSQL and object store, which is brought to the current
    schema first. Rows it has already are kept and counted as skipped, so copying again adds
    only what is new. Either everything is copied or nothing is."""
    from stepline.backend.sql.transfer import copy_store, database_url
    from stepline.core.config import load_config

    config = load_config()
    dst = target or os.environ.get("STEPLINE_DB")
    if not dst:
        raise ConfigError(
            "give the database to copy into: --to URL (e.g. "
            "postgresql+psycopg://user@host/stepline) or set STEPLINE_DB"
        )
    dst_storage = target_storage or os.environ.get("STEPLINE_STORAGE")
    if not dst_storage:
        raise ConfigError(
            "give the artifact storage to copy the files into: --to-storage URL (e.g. "
            "s3://bucket/stepline, or a folder) or set STEPLINE_STORAGE"
        )
    report = copy_store(
        database_url(source) if source else database_url(str(config.home / "stepline.db")),
        source_storage or str(config.home / "artifacts"),
        database_url(dst),
        dst_storage,
        config.home,
        dry_run=dry_run,
        timeout=config.db_timeout,
    )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        _print_report(report)


def _print_report(report: CopyReport) -> None:
    from rich.table import Table

    from stepline.backend.sql.migrate import HEAD

    dry = report.dry_run
    typer.echo(f"{'would copy' if dry else 'copied'} {report.source} "
               f"(artifacts {report.source_storage})")  # fmt: skip
    typer.echo(f"  into {report.target} (artifacts {report.target_storage})")
    if report.target_revision != HEAD:
        typer.echo(f"  target schema: {report.target_revision or 'empty'} -> {HEAD}")
    table = Table(box=None, header_style="bold")
    table.add_column("table")
    table.add_column("to copy" if dry else "copied", justify="right")
    table.add_column("to skip" if dry else "skipped", justify="right")
    for name, count in report.tables.items():
        table.add_row(name, str(count.copied), str(count.skipped))
    print_trimmed(stdout_console(), table)
    typer.echo(
        f"files: {report.files} {'to copy' if dry else 'copied'} into the target storage "
        f"({fmt_size(report.bytes)}); {report.kept_urls} url(s) outside the source storage "
        "kept as they were"
    )
    tokens = report.tables["api_tokens"].copied
    if tokens:
        typer.echo(
            f"{tokens} API token(s) {'to copy' if dry else 'copied'}: a server on the target "
            "accepts them, and asks every client for a token; see `stepline server token list`"
        )
    if dry:
        typer.echo("dry run: nothing was written")
