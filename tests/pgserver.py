"""A real PostgreSQL server for tests and benchmarks: Debian's binaries (``initdb``,
``pg_ctl``), a cluster in a temporary folder, listening on loopback on a free port.

``PgCluster.find()`` returns None (with the reason in ``PgCluster.missing``) when no binary can
be found; the fixtures then skip with that reason. As root the server runs as the ``postgres``
user (or ``nobody`` where there is none), since PostgreSQL refuses to run as root.

Every test gets a database of its own at the current schema: one copied from a template that
already holds it (``CREATE DATABASE ... TEMPLATE``: no migrations to run), or one an earlier
test used, emptied again (``recycle``, called after every test, is faster still: a copy takes
0.1-0.5 s on a busy 2-core machine, emptying the tables ~20 ms).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

TEMPLATE = "stepline_template"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin_dir() -> Path | None:
    override = os.environ.get("STEPLINE_TEST_PG_BIN")
    if override:
        return Path(override)
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(versions[0]).parent if versions else None


def _server_user() -> str | None:
    """Who runs the server when we are root: Debian's `postgres` user, else `nobody`."""
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


class PgCluster:
    missing = ""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.user = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="stepline-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.log = self.dir / "server.log"
        self._n = itertools.count(1)
        self._handed: list[str] = []  # databases at the current schema given out since recycle
        self._free: list[str] = []  # emptied ones, given out again
        self._seed: list[tuple[Any, ...]] = []  # the template's queue rows
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    @classmethod
    def find(cls) -> PgCluster | None:
        bin_dir = _bin_dir()
        if bin_dir is None or not (bin_dir / "initdb").exists():
            cls.missing = (
                "no PostgreSQL binaries (initdb, pg_ctl) found on PATH or in "
                "/usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` "
                "(scripts/setup does, as root) or set STEPLINE_TEST_PG_BIN"
            )
            return None
        if os.geteuid() == 0 and _server_user() is None:
            cls.missing = "running as root and there is no `postgres` or `nobody` user to run it"
            return None
        return cls(bin_dir)

    # -- running the binaries ----------------------------------------------------------------
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=self.user,
            cwd=self.dir,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip
        conf = self.data / "postgresql.conf"
        with open(conf, "a") as f:
            f.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "max_connections = 400\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "shared_buffers = 64MB\n"
            )

    def start(self) -> None:
        res = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                        "start", check=False)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {res.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server (its connections are cut), stay down ``down_for`` s, start again."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- databases -----------------------------------------------------------------------------
    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname={db}",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(statement)  # type: ignore[arg-type]

    def make_template(self) -> None:
        """A database at the current schema, copied by ``new_database``."""
        import psycopg
        from sqlalchemy import create_engine

        from stepline.backend.sql.migrate import upgrade

        self.sql(f"CREATE DATABASE {TEMPLATE}")
        engine = create_engine(self.url(TEMPLATE))
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        with psycopg.connect(self._dsn(TEMPLATE)) as conn:
            self._seed = list(conn.execute("SELECT id, name, created FROM queues"))

    def _dsn(self, db: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def new_database(self, *, empty: bool = False) -> str:
        """A fresh database (at the current schema unless ``empty``); returns its URL."""
        if not empty and self._free:
            name = self._free.pop()
        else:
            name = f"t{os.getpid()}_{next(self._n)}"
            self.sql(f"CREATE DATABASE {name}" + ("" if empty else f" TEMPLATE {TEMPLATE}"))
        if not empty:
            self._handed.append(name)
        return self.url(name)

    def recycle(self) -> None:
        """Empty the databases given out since the last call, to give them out again. One
        still in use (a lock held past 2 s) is left alone and not given out again."""
        import psycopg

        from stepline.backend.sql.migrate import HEAD
        from stepline.backend.sql.schema import metadata

        tables = ", ".join(t.name for t in metadata.sorted_tables)
        handed, self._handed = self._handed, []
        for name in handed:
            try:
                with psycopg.connect(self._dsn(name)) as conn:
                    conn.execute("SET lock_timeout = '2s'")
                    conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")  # type: ignore[arg-type]
                    conn.cursor().executemany(
                        "INSERT INTO queues (id, name, created) VALUES (%s, %s, %s)", self._seed
                    )
                    conn.execute("UPDATE alembic_version SET version_num = %s", [HEAD])
            except psycopg.Error:
                continue
            self._free.append(name)


def start_cluster() -> PgCluster | None:
    """A running cluster with the template database, or None when PostgreSQL is missing."""
    cluster = PgCluster.find()
    if cluster is None:
        return None
    try:
        cluster.init()
        cluster.start()
        cluster.make_template()
    except BaseException:
        cluster.cleanup()
        raise
    return cluster
