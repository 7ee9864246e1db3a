"""Executors run one stored task and report back; the scheduler decides everything else.

Every executor offers the same three calls: ``submit(task_id, done)``, ``kill(task_id)`` and
``shutdown()``. ``done(task_id, status, detail)`` is called from any thread when the task's run
is over; ``status`` is the task's final status when the executor knows it, else ``None`` (the
scheduler then reads it from the store), and ``detail`` says why when the run failed.

* ``InProcessExecutor`` calls function steps in threads of this process (tests, debug mode).
* ``ProcessExecutor`` runs each step in a child process: forked from a warm fork server where
  ``os.fork`` exists, else ``python -m stepline.runner TASK_ID``.
* ``QueueExecutor`` puts each step on a queue (the node's, else the pipeline's default); agents
  run it, and one watcher thread follows the statuses of all the steps it sent.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stepline.backend import Backend
from stepline.core.errors import StepLineError
from stepline.core.records import TaskFilter
from stepline.core.status import FINAL, TaskStatus

Done = Callable[[str, "TaskStatus | None", str], None]

#: Seconds between SIGTERM and SIGKILL when a step is killed.
KILL_GRACE = 3.0


class Executor:
    """Runs tasks; see the module docstring."""

    #: True when kill() really ends the step (a process), False when it can only be abandoned.
    can_kill = True
    #: True when a submitted task waits in a queue before it runs (``on_started`` tells when).
    queues = False
    #: Set by the scheduler: called with a task id when a queued task starts running.
    on_started: Callable[[str], None] | None = None

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max(1, int(max_workers or os.cpu_count() or 1))

    def submit(
        self,
        task_id: str,
        done: Done,
        *,
        is_function: bool = True,
        queue: str | None = None,
        adopt: bool = False,
    ) -> None:
        """Run the task; ``done`` is called when its run is over. ``adopt``: the task was
        started by someone else and is queued or running already; follow it to its end (only
        an executor that ``queues`` can)."""
        raise NotImplementedError

    def kill(self, task_id: str) -> None:
        """End the task's run (and its whole process tree) as soon as possible."""

    def hint(self, source: str) -> None:
        """A function step with this code will run (maybe later): get ready for it."""

    def shutdown(self) -> None:
        """Release workers; running tasks are killed."""


class ForkServer:
    """A running fork server (see ``forkserver``) and the steps it runs for this process.

    One server is shared by every pipeline run of this process that has the same environment
    and working directory, so only the first run pays for its start-up; it ends when this
    process does (it reads EOF)."""

    _shared: ForkServer | None = None
    _shared_lock = threading.Lock()

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.key = _env_key()
        self._lock = threading.Lock()
        self._done: dict[str, Done] = {}
        self._pids: dict[str, int] = {}
        self._by_pid: dict[int, str] = {}
        self._kill_pending: set[str] = set()
        self._hinted: set[int] = set()  #: step code already looked at
        self._sent: set[str] = set()  #: modules the server was asked to import
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "stepline.runner", "--serve", str(cmd_r), str(evt_w)],
            pass_fds=(cmd_r, evt_w),
            stdin=subprocess.DEVNULL,
            env=env,
            # not in this process's group: when this process is killed with its group (an
            # agent ending an aborted pipeline), the server outlives it and ends its steps
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._cmd: int | None = cmd_w
        self._reader = threading.Thread(
            target=self._read_events, args=(evt_r,), name="stepline-forkserver", daemon=True
        )
        self._reader.start()

    @classmethod
    def shared(cls) -> ForkServer:
        """The server for this process's current environment, started if needed."""
        with cls._shared_lock:
            current = cls._shared
            if current is not None and current.key == _env_key() and current.alive:
                return current
            if current is not None and current.idle:
                current.close()
            cls._shared = cls()
            return cls._shared

    @property
    def alive(self) -> bool:
        return self._cmd is not None and self._proc.poll() is None

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._done

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
                        found = self._by_pid.pop(pid, None)
                        if found is None:
                            continue
                        self._pids.pop(found, None)
                        self._kill_pending.discard(found)
                        done = self._done.pop(found, None)
                    if done is not None:
                        done(found, None, _exit_detail(code))
        # the server is gone: whatever it still ran is lost
        with self._lock:
            lost, self._done = self._done, {}
            self._cmd = None
        for task_id, done in lost.items():
            done(task_id, None, "the step's fork server ended unexpectedly")

    def submit(self, task_id: str, done: Done) -> None:
        with self._lock:
            if self._cmd is None:
                raise OSError("the fork server has ended")
            self._done[task_id] = done
            os.write(self._cmd, f"run {task_id}\n".encode())

    def preload(self, source: str) -> None:
        """Have the server import the heavy libraries this step code uses (see forkserver)."""
        from stepline.pipeline.forkserver import modules_to_preload, preload_allowed

        with self._lock:
            digest = hash(source)
            if self._cmd is None or digest in self._hinted:
                return
            self._hinted.add(digest)
            names = [
                m for m in modules_to_preload(source, preload_allowed()) if m not in self._sent
            ]
            if names:
                self._sent.update(names)
                os.write(self._cmd, f"preload {' '.join(names)}\n".encode())

    def pid(self, task_id: str) -> int | None:
        with self._lock:
            return self._pids.get(task_id)

    def kill(self, task_id: str) -> None:
        with self._lock:
            pid = self._pids.get(task_id)
            if pid is None:
                if task_id in self._done:
                    self._kill_pending.add(task_id)
                return
        _kill_tree(pid, lambda: self._pids.get(task_id) == pid)

    def close(self) -> None:
        with self._lock:
            cmd, self._cmd = self._cmd, None
        if cmd is not None:
            with contextlib.suppress(OSError):
                os.close(cmd)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)


def _env_key() -> tuple[object, ...]:
    return (sys.executable, os.getcwd(), tuple(sorted(os.environ.items())))


@atexit.register
def _close_shared() -> None:
    server = ForkServer._shared
    if server is not None:
        ForkServer._shared = None
        server.close()


def _kill_tree(pid: int, still_running: Callable[[], bool]) -> None:
    """SIGTERM the process group of ``pid`` and every descendant of ``pid`` (one that started
    a session of its own included); ``KILL_GRACE`` seconds later SIGKILL the group if
    ``still_running()``, and each of those descendants still alive."""
    descendants = _descendants(pid)
    _signal_group(pid, signal.SIGTERM)
    for proc in descendants:
        with contextlib.suppress(Exception):
            proc.terminate()

    def hard_kill() -> None:
        if still_running():
            _signal_group(pid, signal.SIGKILL)
        for proc in descendants:
            with contextlib.suppress(Exception):
                if proc.is_running():  # the same process (psutil checks its start time)
                    proc.kill()

    timer = threading.Timer(KILL_GRACE, hard_kill)
    timer.daemon = True
    timer.start()


def _descendants(pid: int) -> list[Any]:
    """The processes below ``pid`` now (psutil objects; empty if it cannot tell)."""
    try:
        import psutil

        return list(psutil.Process(pid).children(recursive=True))
    except Exception:
        return []


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child get ``sig`` when the thread that started it ends
    (Linux; elsewhere None): a step, or an agent's task, does not run on as an orphan once
    the process that watched it was killed."""
    if not sys.platform.startswith("linux"):
        return None
    try:  # loaded here: the child, forked from a process with threads, only makes the call
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(1, int(sig))  # PR_SET_PDEATHSIG

    return arm


class ProcessExecutor(Executor):
    def __init__(self, max_workers: int | None = None, use_fork_server: bool | None = None):
        super().__init__(max_workers)
        if use_fork_server is None:
            use_fork_server = hasattr(os, "fork") and sys.platform != "win32"
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        # start warming up now, while the controller records the run
        self._server = ForkServer.shared() if use_fork_server else None

    def submit(
        self,
        task_id: str,
        done: Done,
        *,
        is_function: bool = True,
        queue: str | None = None,
        adopt: bool = False,
    ) -> None:
        def finished(tid: str, status: TaskStatus | None, detail: str) -> None:
            with self._lock:
                self._running.discard(tid)
                self._popen.pop(tid, None)
            done(tid, status, detail)

        with self._lock:
            self._running.add(task_id)
        if self._server is not None:
            if not self._server.alive:
                self._server = ForkServer.shared()
            self._server.submit(task_id, finished)
            return
        proc = subprocess.Popen(
            [sys.executable, "-m", "stepline.runner", task_id],
            start_new_session=True,
            preexec_fn=die_with_parent(),  # ends (stopped) if this controller is killed
        )
        with self._lock:
            self._popen[task_id] = proc
        threading.Thread(
            target=lambda: finished(task_id, None, _exit_detail(proc.wait())),
            name="stepline-step",
            daemon=True,
        ).start()

    def hint(self, source: str) -> None:
        if self._server is not None and self._server.alive:
            with contextlib.suppress(OSError):
                self._server.preload(source)

    def kill(self, task_id: str) -> None:
        if self._server is not None:
            self._server.kill(task_id)
            return
        with self._lock:
            proc = self._popen.get(task_id)
        if proc is not None:
            _kill_tree(proc.pid, lambda: proc.poll() is None)

    def shutdown(self) -> None:
        with self._lock:
            running = list(self._running)
        for task_id in running:
            self.kill(task_id)


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

    def submit(
        self,
        task_id: str,
        done: Done,
        *,
        is_function: bool = True,
        queue: str | None = None,
        adopt: bool = False,
    ) -> None:
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


class QueueExecutor(Executor):
    """Steps go to queues and run on agents. A watcher thread follows the status of every step
    sent (on a server, with a long poll that returns when one changes; on the embedded store,
    one query per ``POLL`` seconds for all of them), tells the scheduler when one starts
    and when it ends, takes dead agents' tasks off their hands (``reap_agents``), and says so
    in the run's log when a step waits on a queue that no live agent serves."""

    queues = True
    #: seconds between looks, on a store that cannot tell of changes
    POLL = 0.02
    #: longest wait of one long poll on a server; a step sent meanwhile joins the next one
    PUSH_WAIT = 0.25
    #: Seconds a step may wait before the run's log says no agent serves its queue.
    NO_AGENT_WARNING = 5.0

    def __init__(
        self,
        backend: Backend,
        default_queue: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(None)
        self._backend = backend
        self._default = default_queue or "default"
        #: the run's log (the controller sets it once the run exists)
        self.log = log
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[Done, str, float]] = {}  #: id -> (done, queue, since)
        self._started: set[str] = set()
        self._warned: set[str] = set()
        self._seen: dict[str, TaskStatus] = {}  #: the last status the watcher saw
        self._closed = threading.Event()
        self._submitted = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(
        self,
        task_id: str,
        done: Done,
        *,
        is_function: bool = True,
        queue: str | None = None,
        adopt: bool = False,
    ) -> None:
        name = queue or self._default
        seen = TaskStatus.queued
        if adopt:  # one look: the watcher reports it started at once if it runs already
            seen = TaskStatus.unknown
        else:
            self._backend.enqueue(task_id, name)
        with self._lock:
            self._waiting[task_id] = (done, name, time.monotonic())
            self._started.discard(task_id)
            self._seen[task_id] = seen
            self._submitted.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="stepline-queue-watch", daemon=True
                )
                self._thread.start()

    def _watch(self) -> None:
        next_reap = 0.0
        push = self._backend.pushes_changes
        while not self._closed.is_set():
            with self._lock:
                known = {tid: self._seen.get(tid, TaskStatus.queued) for tid in self._waiting}
            if not known:
                self._submitted.wait(0.5)
                self._submitted.clear()
                continue
            try:
                if push:  # the server answers when one of them changes
                    records = self._backend.watch(known, timeout=self.PUSH_WAIT)
                elif self._closed.wait(self.POLL):
                    break
                else:
                    records = self._backend.find_tasks(TaskFilter(ids=list(known), archived=None))
                now = time.monotonic()
                if now >= next_reap:
                    next_reap = now + 1.0
                    self._backend.reap_agents()
                    self._check_agents(now)
            except StepLineError:
                if self._closed.wait(self.POLL):
                    break
                continue
            for rec in records:
                self._seen[rec.id] = rec.status
                if rec.status == TaskStatus.in_progress and rec.id not in self._started:
                    self._started.add(rec.id)
                    if self.on_started is not None:
                        self.on_started(rec.id)
                elif rec.status == TaskStatus.queued:  # put back after its agent died
                    self._started.discard(rec.id)
                elif rec.status in FINAL:
                    with self._lock:
                        entry = self._waiting.pop(rec.id, None)
                        self._seen.pop(rec.id, None)
                    if entry is not None:
                        entry[0](rec.id, rec.status, rec.status_reason)

    def _check_agents(self, now: float) -> None:
        with self._lock:
            late = {
                q for tid, (_, q, since) in self._waiting.items()
                if tid not in self._started and now - since > self.NO_AGENT_WARNING
            }  # fmt: skip
        late -= self._warned
        if not late or self.log is None:
            return
        served = {q for agent in self._backend.get_agents() for q in agent.queues}
        for name in sorted(late - served):
            self._warned.add(name)
            self.log(
                f"steps are waiting on queue {name!r} and no live agent serves it; start one: "
                f"stepline agent --queue {name}"
            )

    def kill(self, task_id: str) -> None:
        with self._lock:
            if task_id not in self._waiting:
                return
        try:  # a queued task leaves its queue; a running one is ended by its agent
            self._backend.set_status(task_id, TaskStatus.stopped, message="aborted", force=True)
        except StepLineError:
            pass

    def shutdown(self) -> None:
        with self._lock:
            left = list(self._waiting)
        for task_id in left:
            self.kill(task_id)
        self._closed.set()
        self._submitted.set()
