"""A real PostgreSQL server for tests and benchmarks: Debian's binaries (``initdb``,
``pg_ctl``), a cluster in a temporary folder, listening on loopback on a free port.

``PgCluster.find()`` returns None (with the reason in ``PgCluster.missing``) when no binary can
be found; the fixtures then skip with that reason. As root the server runs as the ``postgres``
user, since PostgreSQL refuses to run as root.

Every test gets a database of its own, copied from a template that already holds the current
schema (``CREATE DATABASE ... TEMPLATE`` copies files: ~20 ms instead of running the
migrations).
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


class PgCluster:
    missing = ""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="stepline-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.log = self.dir / "server.log"
        self._n = itertools.count(1)
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
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                cls.missing = "running as root and there is no `postgres` user to run the server"
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
        from sqlalchemy import create_engine

        from stepline.backend.sql.migrate import upgrade

        self.sql(f"CREATE DATABASE {TEMPLATE}")
        engine = create_engine(self.url(TEMPLATE))
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def new_database(self, *, empty: bool = False) -> str:
        """A fresh database (at the current schema unless ``empty``); returns its URL."""
        name = f"t{os.getpid()}_{next(self._n)}"
        self.sql(f"CREATE DATABASE {name}" + ("" if empty else f" TEMPLATE {TEMPLATE}"))
        return self.url(name)


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
