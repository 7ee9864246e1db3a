"""The agent: claims tasks from its queues, in order, and runs each in a child process.

Each task runs through the one runner (``stepline.runner``) in a process of its own: forked
from a warm fork server for tasks that use the agent's own Python environment (a few
milliseconds), or started with the Python of a virtual environment built for the task's
packages (``envs``). The child's file descriptors 1 and 2 go to the task's log as it runs.

While tasks run the agent

* checks every ``CHECK`` seconds whether any of them was stopped (from the SDK, the CLI or the
  UI) and ends that task's whole process tree;
* sends a heartbeat every ``heartbeat`` seconds; an agent whose heartbeats stop for
  ``timeout`` seconds is taken for dead by whoever looks next (another agent, a pipeline
  waiting on a queue, ``stepline agent list``), and its tasks are re-queued once (if they
  asked, runtime ``_requeue_on_agent_loss``) or failed;
* reports each task's CPU and memory use (``:monitor:machine``) every ``report_every`` seconds.

Idle, it looks for work every ``poll`` seconds with a read that takes no lock; through a
server (``STEPLINE_API``) its claim is a long poll instead, answered the moment a task is queued.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stepline.backend import Backend, get_backend
from stepline.core.config import load_config
from stepline.core.errors import NotFoundError, StepLineError
from stepline.core.records import AgentRecord, LogLine, ScalarPoint, TaskFilter, TaskRecord
from stepline.core.status import TaskStatus, TaskTypes
from stepline.pipeline.executors import ForkServer, _exit_detail, _kill_tree, die_with_parent
from stepline.pipeline.forkserver import ENV_EOF
from stepline.pipeline.recovery import heartbeat_interval, mark_interrupted, reap_runs
from stepline.pipeline.runner import ENV_AGENT
from stepline.sdk.logger import ENV_CONSOLE_FDS

#: Seconds between checks for tasks stopped by someone else.
CHECK = 0.25


@dataclass
class _Job:
    task: TaskRecord
    started: float
    pid: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    killed: bool = False
    last_report: float | None = None
    cpu: dict[int, Any] = field(default_factory=dict)


class Agent:
    def __init__(
        self,
        queues: Sequence[str],
        *,
        name: str | None = None,
        max_jobs: int = 1,
        services_mode: bool = False,
        isolated_env: bool = False,
        poll: float = 0.02,
        heartbeat: float = 1.0,
        timeout: float = 30.0,
        report_every: float = 5.0,
        create_queues: bool = True,
        backend: Backend | None = None,
    ) -> None:
        if not queues:
            queues = ["services"] if services_mode else ["default"]
        self.queues = list(dict.fromkeys(queues))
        self.host = socket.gethostname()
        self.name = name or f"{self.host}:{os.getpid()}"
        self.id = f"{self.name}-{uuid.uuid4().hex[:8]}"
        # services mode runs every controller it is given at once (they mostly wait)
        self.max_jobs = max_jobs if max_jobs > 0 else (1 << 30)
        if services_mode and max_jobs == 1:
            self.max_jobs = 1 << 30
        self.services_mode = services_mode
        self.isolated_env = isolated_env
        self.poll = poll
        self.heartbeat_every = heartbeat
        self._next_run_reap = 0.0
        self.timeout = timeout
        self.report_every = report_every
        self.create_queues = create_queues
        self.backend = backend or get_backend()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._server: ForkServer | None = None
        self.ran = 0

    # -- life ----------------------------------------------------------------------------------
    def _record(self) -> AgentRecord:
        return AgentRecord(
            id=self.id,
            name=self.name,
            queues=self.queues,
            host=self.host,
            pid=os.getpid(),
            started=time.time(),
            timeout=self.timeout,
            info=self._info(),
        )

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "max_jobs": self.max_jobs if self.max_jobs < (1 << 30) else 0,
            "services_mode": self.services_mode,
            "isolated_env": self.isolated_env,
            "python": sys.executable,
            "ran": self.ran,
        }
        try:
            import psutil

            info["cpu_percent"] = psutil.cpu_percent(interval=None)
            info["memory_percent"] = psutil.virtual_memory().percent
        except ImportError:
            pass
        return info

    def stop(self) -> None:
        """End the loop (from another thread or a signal handler): running tasks are killed
        and marked stopped."""
        self._stopping.set()
        self._wake.set()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[ENV_AGENT] = self.id
        env[ENV_CONSOLE_FDS] = "1"
        env[ENV_EOF] = "kill"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(self, *, once: bool = False, idle_exit: float | None = None) -> int:
        """Claim and run tasks until stopped (SIGTERM/SIGINT). ``once``: return after the
        first task; ``idle_exit``: return after that many seconds without work."""
        if self.create_queues:
            for q in self.queues:
                self.backend.create_queue(q)
        self.backend.register_agent(self._record())
        if not self.isolated_env and hasattr(os, "fork"):
            self._server = ForkServer(env=self._env())  # warm before the first task comes
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self._say(f"agent {self.name} serving {', '.join(self.queues)} (id {self.id})")
        next_beat = next_check = next_report = 0.0
        idle_since = time.monotonic()
        push = self.backend.pushes_changes
        last_claimed = False
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                claimed = False
                room = len(self._jobs) < self.max_jobs and not (once and self.ran)
                wait = 0.0
                if room and push and not last_claimed:  # a server answers when work comes
                    duties = [next_beat - now, *([next_check - now] if self._jobs else [])]
                    wait = min(max(0.0, min(duties)), self.heartbeat_every)
                if room:
                    claimed = self._claim_one(wait)
                    now = time.monotonic()
                last_claimed = claimed
                if claimed or self._jobs:
                    idle_since = now
                elif (once and self.ran) or (
                    idle_exit is not None and now - idle_since > idle_exit
                ):
                    break
                if now >= next_beat:
                    next_beat = now + self.heartbeat_every
                    self._beat()
                if self._jobs and now >= next_check:
                    next_check = now + CHECK
                    self._check_stopped()
                if self._jobs and now >= next_report:
                    next_report = now + 1.0
                    self._report_usage()
                if claimed and len(self._jobs) < self.max_jobs:
                    continue  # more may be waiting
                if room and push:
                    continue  # the claim itself waited
                self._wake.wait(self.poll)
                self._wake.clear()
        finally:
            self._shutdown()
        return 0

    def _say(self, text: str) -> None:
        stream = sys.stderr
        with contextlib.suppress(OSError, ValueError):
            stream.write(f"[stepline agent] {text}\n")
            stream.flush()

    def _beat(self) -> None:
        with self._lock:
            running = list(self._jobs)
        try:
            stopped = self.backend.heartbeat(self.id, running, self._info())
        except NotFoundError:  # taken for dead while it stalled: come back
            self.backend.register_agent(self._record())
            stopped = []
        except StepLineError as exc:
            self._say(f"heartbeat failed: {exc}")
            return
        for task_id in stopped:
            self._kill(task_id)
        with contextlib.suppress(StepLineError):
            for task_id, verdict in self.backend.reap_agents():
                self._say(f"a dead agent's task {task_id} was {verdict}")
        now = time.monotonic()
        if now >= self._next_run_reap:  # runs whose controller died (anywhere)
            self._next_run_reap = now + heartbeat_interval()
            with contextlib.suppress(StepLineError):
                for run_id, why in reap_runs(self.backend):
                    self._say(f"pipeline run {run_id} was interrupted: {why}")

    def _check_stopped(self) -> None:
        with self._lock:
            ids = [tid for tid, job in self._jobs.items() if not job.killed]
        if not ids:
            return
        try:
            records = self.backend.find_tasks(TaskFilter(ids=ids, archived=None))
        except StepLineError:
            return
        for rec in records:
            if rec.status != TaskStatus.in_progress:
                self._kill(rec.id)

    # -- running a task -------------------------------------------------------------------------
    def _claim_one(self, wait: float = 0.0) -> bool:
        try:
            record = self.backend.claim(self.queues, self.id, wait=wait)
        except StepLineError as exc:
            self._say(f"could not claim a task: {exc}")
            return False
        if record is None:
            return False
        self.ran += 1
        job = _Job(record, time.monotonic())
        with self._lock:
            self._jobs[record.id] = job
        self._say(f"running task {record.id} ({record.name})")
        try:
            self._launch(job)
        except Exception as exc:
            self._ended(record.id, f"the agent could not start the task: {exc}")
        return True

    def _requirements(self, task: TaskRecord) -> list[str] | None:
        """The packages to build an environment for, or None for the agent's own."""
        script = task.script or {}
        reqs = [str(r) for r in script.get("requirements") or []]
        if script.get("kind") == "function":
            return reqs or None
        return reqs if self.isolated_env else None

    def _launch(self, job: _Job) -> None:
        task = job.task
        reqs = self._requirements(task)
        python = sys.executable
        if reqs is None and hasattr(os, "fork"):
            if self._server is None or not self._server.alive:
                self._server = ForkServer(env=self._env())
            self._server.submit(task.id, self._done)
            return
        if reqs is not None:
            from stepline.agent.envs import python_for

            log: list[str] = []
            self._log(task.id, [f"stepline agent: preparing an environment: {' '.join(reqs)}"])
            try:
                python = python_for(reqs, load_config().cache_dir, log)
            finally:
                self._log(task.id, log[-50:])
        proc = subprocess.Popen(
            [python, "-m", "stepline.runner", task.id],
            env=self._env(),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            # die when the agent dies, so that no task runs on unattended; its end is then
            # recorded by whoever reaps the dead agent
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        job.popen = proc
        job.pid = proc.pid
        threading.Thread(
            target=lambda: self._done(task.id, None, _exit_detail(proc.wait())),
            name=f"stepline-agent-{task.id[:8]}",
            daemon=True,
        ).start()

    def _log(self, task_id: str, lines: list[str]) -> None:
        if lines:
            with contextlib.suppress(StepLineError):
                self.backend.add_log([LogLine(task_id, ln) for ln in lines])

    def _done(self, task_id: str, _status: Any, detail: str) -> None:
        self._ended(task_id, detail)
        self._wake.set()

    def _ended(self, task_id: str, detail: str) -> None:
        with self._lock:
            job = self._jobs.pop(task_id, None)
        try:
            rec = self.backend.get_task(task_id)
            if rec.status == TaskStatus.in_progress:  # the process died without an end
                why = detail or "the task's process ended without recording a result"
                self._log(task_id, [f"stepline agent: {why}"])
                if rec.type == str(TaskTypes.controller):  # a pipeline: resumable
                    mark_interrupted(self.backend, task_id, f"on agent {self.name}, {why}")
                else:
                    self.backend.set_status(task_id, TaskStatus.failed, message="died", reason=why)
        except StepLineError:
            pass
        took = time.monotonic() - job.started if job else 0.0
        self._say(f"task {task_id} ended ({took:.2f} s)")

    def _kill(self, task_id: str) -> None:
        with self._lock:
            job = self._jobs.get(task_id)
            if job is None or job.killed:
                return
            job.killed = True
        self._say(f"task {task_id} was stopped: ending its processes")
        if job.popen is not None:
            proc = job.popen
            _kill_tree(proc.pid, lambda: proc.poll() is None)
        elif self._server is not None:
            self._server.kill(task_id)

    def _pid(self, job: _Job) -> int | None:
        if job.pid is not None:
            return job.pid
        if self._server is not None:
            return self._server.pid(job.task.id)
        return None

    def _report_usage(self) -> None:
        """Called every second while tasks run: each task's process tree is measured, and
        its CPU and memory use recorded one second after it started, then every
        ``report_every`` seconds (CPU use is averaged since the previous look)."""
        try:
            import psutil
        except ImportError:
            return
        points: list[ScalarPoint] = []
        now = time.monotonic()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            pid = self._pid(job)
            if pid is None:
                continue
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            cpu = mem = 0.0
            measured = False
            for proc in procs:
                try:
                    known = job.cpu.get(proc.pid)
                    if known is None:  # the first look only starts its CPU count
                        job.cpu[proc.pid] = proc
                        proc.cpu_percent(None)
                    else:
                        cpu += known.cpu_percent(None)
                        measured = True
                    mem += proc.memory_info().rss
                except psutil.Error:
                    continue
            due = job.last_report is None or now - job.last_report >= self.report_every
            if not measured or not due:
                continue
            job.last_report = now
            seconds = int(now - job.started)
            title = ":monitor:machine"
            points.append(ScalarPoint(job.task.id, title, "cpu_usage", seconds, cpu))
            points.append(ScalarPoint(job.task.id, title, "memory_used_gb", seconds, mem / 2**30))
        if points:
            with contextlib.suppress(StepLineError):
                self.backend.add_scalars(points)

    def _shutdown(self) -> None:
        with self._lock:
            running = list(self._jobs)
        for task_id in running:
            with contextlib.suppress(StepLineError):
                self.backend.set_status(
                    task_id,
                    TaskStatus.stopped,
                    message="agent shut down",
                    reason=f"agent {self.name} was shut down while this task ran",
                )
            self._kill(task_id)
        deadline = time.monotonic() + 5
        while self._jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(StepLineError):
            self.backend.remove_agent(self.id)
        self._say(f"agent {self.name} stopped after {self.ran} task(s)")
