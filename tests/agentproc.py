"""Starting real ``stepline agent`` processes for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.conftest import run_env


class AgentProc:
    """A running ``stepline agent`` (its console goes to ``log``)."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the agent itself (its step processes die with it)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def start_agent(
    home: Path,
    queues: Sequence[str] = ("default",),
    *,
    cwd: Path | None = None,
    extra: Sequence[str] = (),
    name: str | None = None,
    env: dict[str, str] | None = None,
) -> AgentProc:
    """Start ``python -m stepline.cli.main agent -q Q ...`` on ``home`` in ``cwd`` (default:
    an empty folder of its own)."""
    folder = cwd or home.parent / f"agent-{time.monotonic_ns()}"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder.parent / f"{folder.name}.log"
    argv = [sys.executable, "-m", "stepline.cli.main", "agent"]
    for q in queues:
        argv += ["--queue", q]
    if name:
        argv += ["--name", name]
    argv += list(extra)
    out = open(log, "wb")  # noqa: SIM115 - closed when the process is reaped
    proc = subprocess.Popen(
        argv, cwd=folder, env={**run_env(home), **(env or {})}, stdout=out, stderr=out,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out.close()
    return AgentProc(proc, log)


@contextlib.contextmanager
def agents(
    home: Path, *specs: Sequence[str], extra: Sequence[str] = ()
) -> Iterator[list[AgentProc]]:
    """Agents for each list of queues; stopped (SIGTERM) at the end."""
    procs = [start_agent(home, q, extra=extra) for q in specs]
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()
