"""Executors run one stored task and report back; the scheduler decides everything else.

Every executor offers the same three calls: ``submit(task_id, done)``, ``kill(task_id)`` and
``shutdown()``. ``done(task_id, status, detail)`` is called from any thread when the task's run
is over; ``status`` is the task's final status when the executor knows it, else ``None`` (the
scheduler then reads it from the store), and ``detail`` says why when the run failed.

* ``InProcessExecutor`` calls function steps in threads of this process (tests, debug mode).
* ``ProcessExecutor`` runs each step in a child process: forked from a warm fork server where
  ``os.fork`` exists, else ``python -m stepline.runner TASK_ID``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from stepline.backend import Backend
from stepline.core.status import TaskStatus

Done = Callable[[str, "TaskStatus | None", str], None]

#: Seconds between SIGTERM and SIGKILL when a step is killed.
KILL_GRACE = 3.0


class Executor:
    """Runs tasks; see the module docstring."""

    #: True when kill() really ends the step (a process), False when it can only be abandoned.
    can_kill = True

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max(1, int(max_workers or os.cpu_count() or 1))

    def submit(self, task_id: str, done: Done, *, is_function: bool = True) -> None:
        raise NotImplementedError

    def kill(self, task_id: str) -> None:
        """End the task's run (and its whole process tree) as soon as possible."""

    def shutdown(self) -> None:
        """Release workers; running tasks are killed."""


class ProcessExecutor(Executor):
    def __init__(self, max_workers: int | None = None, use_fork_server: bool | None = None):
        super().__init__(max_workers)
        if use_fork_server is None:
            use_fork_server = hasattr(os, "fork") and sys.platform != "win32"
        self._fork = use_fork_server
        self._lock = threading.Lock()
        self._done: dict[str, Done] = {}
        self._pids: dict[str, int] = {}
        self._by_pid: dict[int, str] = {}
        self._kill_pending: set[str] = set()
        self._server: subprocess.Popen[bytes] | None = None
        self._cmd: int | None = None
        self._reader: threading.Thread | None = None
        self._closed = False
        if self._fork:
            # start warming up now, while the controller records the run
            self._ensure_server()

    # -- fork server ------------------------------------------------------------------------
    def _ensure_server(self) -> None:
        if self._server is not None:
            return
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        self._server = subprocess.Popen(
            [sys.executable, "-m", "stepline.runner", "--serve", str(cmd_r), str(evt_w)],
            pass_fds=(cmd_r, evt_w),
            stdin=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._cmd = cmd_w
        self._reader = threading.Thread(
            target=self._read_events, args=(evt_r,), name="stepline-forkserver", daemon=True
        )
        self._reader.start()

    def _read_events(self, fd: int) -> None:
        with os.fdopen(fd, "r") as events:
            for line in events:
                parts = line.split()
                if len(parts) == 3 and parts[0] == "started":
                    task_id, pid = parts[1], int(parts[2])
                    with self._lock:
                        self._pids[task_id] = pid
                        self._by_pid[pid] = task_id
                        kill = task_id in self._kill_pending
                    if kill:
                        self.kill(task_id)
                elif len(parts) == 3 and parts[0] == "exit":
                    pid, code = int(parts[1]), int(parts[2])
                    with self._lock:
                        task_id_or_none = self._by_pid.pop(pid, None)
                        if task_id_or_none is None:
                            continue
                        self._pids.pop(task_id_or_none, None)
                        done = self._done.pop(task_id_or_none, None)
                    if done is not None:
                        done(task_id_or_none, None, _exit_detail(code))
        # the server is gone: whatever it still ran is lost
        with self._lock:
            lost, self._done = self._done, {}
        for task_id, done in lost.items():
            done(task_id, None, "the step's fork server ended unexpectedly")

    # -- executor ---------------------------------------------------------------------------
    def submit(self, task_id: str, done: Done, *, is_function: bool = True) -> None:
        with self._lock:
            self._done[task_id] = done
        if self._fork:
            self._ensure_server()
            assert self._cmd is not None
            os.write(self._cmd, f"run {task_id}\n".encode())
            return
        proc = subprocess.Popen(
            [sys.executable, "-m", "stepline.runner", task_id], start_new_session=True
        )
        with self._lock:
            self._pids[task_id] = proc.pid
        threading.Thread(
            target=self._wait_popen, args=(task_id, proc), name="stepline-step", daemon=True
        ).start()

    def _wait_popen(self, task_id: str, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self._lock:
            self._pids.pop(task_id, None)
            done = self._done.pop(task_id, None)
        if done is not None:
            done(task_id, None, _exit_detail(code))

    def kill(self, task_id: str) -> None:
        with self._lock:
            pid = self._pids.get(task_id)
            if pid is None:
                if task_id in self._done:
                    self._kill_pending.add(task_id)
                return
        _signal_group(pid, signal.SIGTERM)

        def hard_kill() -> None:
            with self._lock:
                still = self._pids.get(task_id) == pid
            if still:
                _signal_group(pid, signal.SIGKILL)

        timer = threading.Timer(KILL_GRACE, hard_kill)
        timer.daemon = True
        timer.start()

    def shutdown(self) -> None:
        with self._lock:
            pids = list(self._pids.values())
            self._closed = True
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)
        if self._cmd is not None:
            with contextlib.suppress(OSError):
                os.close(self._cmd)
            self._cmd = None
        if self._server is not None:
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _exit_detail(code: int) -> str:
    if code == 0:
        return ""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the step's process was killed by {name}"
    return f"the step's process exited with status {code}"


class InProcessExecutor(Executor):
    """Function steps run in a thread pool of this process. A script step (from an existing
    task) cannot share the process, so it runs as a child process as in local mode."""

    can_kill = False

    def __init__(self, max_workers: int | None = None, backend: Backend | None = None) -> None:
        super().__init__(max_workers)
        self._backend = backend
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="stepline-step")
        self._processes: ProcessExecutor | None = None
        self._lock = threading.Lock()
        from stepline.pipeline.runner import capture_thread_consoles

        capture_thread_consoles(True)
        self._consoles = True

    def submit(self, task_id: str, done: Done, *, is_function: bool = True) -> None:
        if not is_function:
            with self._lock:
                if self._processes is None:
                    self._processes = ProcessExecutor(self.max_workers, use_fork_server=False)
            self._processes.submit(task_id, done)
            return
        self._pool.submit(self._run, task_id, done)

    def _run(self, task_id: str, done: Done) -> None:
        from stepline.pipeline.runner import run_in_thread

        try:
            status, detail = run_in_thread(task_id, self._backend)
        except BaseException as exc:
            status, detail = None, f"the step could not be run: {exc}"
        done(task_id, status, detail)

    def kill(self, task_id: str) -> None:
        if self._processes is not None:
            self._processes.kill(task_id)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown()
        if self._consoles:
            from stepline.pipeline.runner import capture_thread_consoles

            capture_thread_consoles(False)
            self._consoles = False
