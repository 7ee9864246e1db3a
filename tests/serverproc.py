"""Real stepline servers for tests: in a thread of the test process (``served``) or as a
``stepline server`` process (``start_server``). Both listen on loopback, on a free port."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from stepline.backend.http.client import HttpBackend
from stepline.backend.protocol import Backend


@dataclass
class Served:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(backend: Backend, **app_kw: Any) -> Served:
    """Serve ``backend`` (``create_app(backend, **app_kw)``) from a thread; returns once it
    accepts connections."""
    from stepline.server.app import create_app

    app = create_app(backend, **app_kw)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="test-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.005)
    return Served(f"http://127.0.0.1:{port}", server, thread)


class ServedBackend(HttpBackend):
    """An ``HttpBackend`` talking to a server (in a thread) over ``inner``; closing it stops
    the server and closes ``inner``."""

    def __init__(self, inner: Backend, home: Path, **app_kw: Any) -> None:
        self.inner = inner
        self.served = serve(inner, **app_kw)
        super().__init__(self.served.url, home=home, token=app_kw.pop("_token", None))

    def close(self) -> None:
        super().close()
        self.served.stop()
        self.inner.close()


@dataclass
class ServerProc:
    url: str
    proc: subprocess.Popen[str]
    home: Path
    reader: threading.Thread | None = None
    output: list[str] | None = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.reader is not None:
            self.reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env.update(STEPLINE_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def start_server(home: Path, *args: str, **env: str) -> ServerProc:
    """``stepline server --port 0 ARGS`` on ``home``; returns once it serves requests."""
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "stepline.cli.main", "server", "--port", "0", *args],
        env=server_env(home, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    match = re.search(r"on (http://\S+)", first)
    if not match:
        rest = first + (proc.stdout.read() if proc.poll() is not None else "")
        proc.kill()
        raise RuntimeError(f"stepline server did not start: {rest}")
    url = match.group(1)
    output = [first]
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: output.extend(stdout), daemon=True)
    reader.start()  # keeps the pipe drained; the lines are kept for failing tests
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("stepline server did not answer /health")
        time.sleep(0.02)
    return ServerProc(url, proc, home, reader, output)


@contextlib.contextmanager
def running_server(home: Path, *args: str, **env: str) -> Iterator[ServerProc]:
    server = start_server(home, *args, **env)
    try:
        yield server
    finally:
        server.stop()
