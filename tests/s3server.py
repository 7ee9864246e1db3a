"""A real S3-compatible server for tests: moto's server mode in a process of its own, on
loopback on a free port. Other processes (agents, steps, ``sys.executable -c`` children) reach
it through the environment users would set for any S3 provider (``MotoServer.env()``):
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and
``AWS_ENDPOINT_URL``, which botocore (and so s3fs) reads by itself.

``start_moto(auth=True)`` starts a server that checks credentials like AWS does (every key is
unknown to it), for tests of a rejected credential.

``FlakyLink`` is a TCP relay in front of a server that cuts every connection once it has
carried a given number of bytes one way: small requests pass, large uploads and downloads
break halfway, every time they are tried again.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ACCESS_KEY = "stepline-test-key"
SECRET_KEY = "stepline-test-secret"
REGION = "us-east-1"
START_TIMEOUT = 60.0  # seconds the server may take to answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.endpoint = f"http://127.0.0.1:{port}"
        self._n = itertools.count(1)

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server as its S3."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server, for tests to look behind the code under test."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def new_bucket(self, prefix: str = "artifacts") -> str:
        """Create a fresh bucket; return the storage root URL ``s3://BUCKET/PREFIX``."""
        bucket = f"stepline-{os.getpid()}-{next(self._n)}"
        self.client().create_bucket(Bucket=bucket)
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.log.unlink()
            self.log.parent.rmdir()


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=5) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return True  # something answered over HTTP: the server is up
    except OSError:
        return False


def start_moto(*, auth: bool = False) -> MotoServer:
    """A running moto server (see the module's docstring)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    last = ""
    for _ in range(3):  # the free port may be taken before the server binds it
        port = free_port()
        log = Path(tempfile.mkdtemp(prefix="stepline-moto-")) / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        server = MotoServer(proc, port, log)
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(server.endpoint):
                return server
            time.sleep(0.05)
        last = server.log_tail()
        server.stop()
    raise RuntimeError(f"moto's S3 server did not start:\n{last}")


class FlakyLink:
    """A relay from ``127.0.0.1:<port>`` to ``upstream`` (host, port). A connection that has
    carried more than ``cut_after`` bytes one way is reset (as by a broken network), or with
    ``stall`` held (nothing more is forwarded) until the link is closed. ``tripped`` is set the
    first time either happens."""

    def __init__(self, upstream: tuple[str, int], cut_after: int, *, stall: bool = False) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.stall = stall
        self.cuts = 0
        self.tripped = threading.Event()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                if self._closing.is_set():
                    return
                continue
            with self._lock:
                self._open.update((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        carried = 0
        try:
            while data := src.recv(1 << 16):
                carried += len(data)
                if carried > self.cut_after:
                    with self._lock:
                        self.cuts += 1
                    self.tripped.set()
                    if self.stall:
                        self._closing.wait()
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._reset(src, dst)

    def _reset(self, *socks: socket.socket) -> None:
        for s in socks:
            with self._lock:
                self._open.discard(s)
            with contextlib.suppress(OSError):
                # end with RST, as a broken network does (shutdown also wakes the thread
                # reading the other way)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            socks = list(self._open)
        self._reset(*socks)
