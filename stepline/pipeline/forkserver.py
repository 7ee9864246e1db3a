"""A warm process that forks one child per step.

Starting ``python -m stepline.runner`` costs the interpreter start plus importing stepline and
SQLAlchemy, about ten times a bare ``python -c pass``. The fork server pays that once per
pipeline run: it imports the runner, opens the store, then waits for commands. For each step it
forks a child, which becomes the leader of a new process group and runs the task through
``runner.run_process``. The server itself stays single-threaded, so forking it is safe.

Protocol, one line each, over two pipes:

* controller -> server: ``run TASK_ID`` (an empty read, EOF, means the controller is gone:
  the server ends every child's process group and exits), and ``preload MODULE ...``;
* server -> controller: ``started TASK_ID PID`` and ``exit PID CODE`` (CODE is negative for a
  signal, as in ``subprocess``).

As soon as the controller knows a function step (before it is ready to run) it asks the
server to import the well-known heavy libraries the step's code imports (``PRELOAD``: numpy,
pandas, scikit-learn, ...), so that the step, and every later one, inherits them instead of
importing them again: importing parts of scikit-learn takes about a second. The server imports
them while earlier steps run. Only these libraries are imported in the server (their import
has no side effects a step could depend on); ``STEPLINE_PRELOAD`` adds names (comma-separated)
or, set to ``none``, turns this off.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from typing import Any

from stepline.sdk.code import imported_modules

#: "kill": when its controller is gone, the server SIGKILLs its children instead of SIGTERM.
ENV_EOF = "STEPLINE_FORKSERVER_EOF"

#: Top-level packages the server may import ahead of the steps that use them.
PRELOAD = frozenset(
    {"numpy", "pandas", "scipy", "sklearn", "pyarrow", "polars", "statsmodels", "PIL"}
)


def _child(task_id: str, fds: tuple[int, ...], backend: Any) -> None:
    code = 1
    try:
        os.setpgid(0, 0)
        for fd in fds:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from stepline.backend import reset_backend
        from stepline.pipeline.runner import run_process

        reset_backend(backend)
        sys.argv = ["stepline-step"]
        code = run_process(task_id)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        # atexit handlers (the task's own end) run here, then the child leaves
        # without touching the server's state.
        import atexit

        atexit._run_exitfuncs()
        os._exit(code)


def serve(cmd_fd: int, event_fd: int) -> int:
    # a step's stored code repeats its module's imports, and pipeline scripts import these
    import stepline.pipeline.controller
    import stepline.pipeline.decorator  # noqa: F401
    from stepline.backend import get_backend
    from stepline.pipeline import runner  # noqa: F401 - imported once, inherited by children

    backend = get_backend()
    _warm(backend)
    import gc

    gc.freeze()  # children share these pages instead of copying them on their first collection
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the controller's to handle
    events = os.fdopen(event_fd, "w", buffering=1)
    children: set[int] = set()
    tasks: dict[int, str] = {}  #: child pid -> the task it runs
    buf = b""
    open_ = True
    while open_ or children:
        readable = [wake_r] + ([cmd_fd] if open_ else [])
        try:
            ready, _, _ = select.select(readable, [], [], 1.0)
        except InterruptedError:
            ready = []
        if wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(wake_r, 4096)
        _reap(children, events, tasks)
        if cmd_fd in ready:
            chunk = os.read(cmd_fd, 65536)
            if not chunk:
                open_ = False
                # an agent's server kills outright: the steps of a dead agent are not
                # "stopped" by anyone, they are lost (and re-queued or failed by whoever
                # notices the agent's missing heartbeats)
                lost = os.environ.get(ENV_EOF) == "kill"
                if not lost:  # the controller ended, its run is interrupted: say so first
                    _stop_tasks(backend, [tasks[p] for p in children if p in tasks])
                for pid in children:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL if lost else signal.SIGTERM)
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode().split()
                if len(parts) >= 2 and parts[0] == "preload":
                    _preload(parts[1:])
                elif len(parts) == 2 and parts[0] == "run":
                    pid = os.fork()
                    if pid == 0:
                        _child(parts[1], (cmd_fd, event_fd, wake_r, wake_w), backend)
                    with contextlib.suppress(OSError):
                        os.setpgid(pid, pid)
                    children.add(pid)
                    tasks[pid] = parts[1]
                    _write(events, f"started {parts[1]} {pid}")
        _reap(children, events, tasks)
    return 0


def _stop_tasks(backend: Any, task_ids: list[str]) -> None:
    """Record the steps still running when the process that runs their pipeline ended as
    stopped (their pipeline's run is then interrupted, see ``recovery``)."""
    from stepline.core.status import TaskStatus

    for task_id in task_ids:
        with contextlib.suppress(Exception):
            backend.set_status(
                task_id,
                TaskStatus.stopped,
                message="interrupted",
                reason="the process that ran its pipeline ended while the step ran",
            )


def preload_allowed() -> frozenset[str]:
    """The top-level packages the server may import ahead of steps (``STEPLINE_PRELOAD``)."""
    setting = os.environ.get("STEPLINE_PRELOAD", "")
    if setting.strip().lower() == "none":
        return frozenset()
    return PRELOAD | {m.strip() for m in setting.split(",") if m.strip()}


def modules_to_preload(source: str, allowed: frozenset[str]) -> list[str]:
    """The modules of ``allowed`` packages that step code imports."""
    if not allowed:
        return []
    return [m for m in imported_modules(source, submodules=False) if m.split(".")[0] in allowed]


def _preload(names: list[str]) -> None:
    import gc
    import importlib

    if any(n.split(".")[0] == "pandas" for n in names):
        names = [*names, "pyarrow.parquet"]  # how steps store and load DataFrames
    new = [n for n in names if n not in sys.modules]
    for name in new:
        with contextlib.suppress(Exception):  # the step reports its own import errors
            importlib.import_module(name)
    if new:
        gc.freeze()


def _warm(backend: Any) -> None:
    """Compile the store's statements a step uses, once, before forking: calls on a task id
    that does not exist run every statement and write nothing."""
    import getpass  # noqa: F401 - used when a step records its user
    import traceback  # noqa: F401

    from stepline.core.records import LogLine, Param
    from stepline.core.status import TaskStatus

    missing = "0" * 32
    calls = (
        lambda: backend.get_task(missing),
        lambda: backend.get_params(missing),
        lambda: backend.get_configs(missing),
        lambda: backend.get_runtime(missing),
        lambda: backend.get_artifacts(missing),
        lambda: backend.set_status(missing, TaskStatus.in_progress),
        lambda: backend.set_status(missing, TaskStatus.completed),
        lambda: backend.set_status(missing, TaskStatus.failed, reason="x"),
        lambda: backend.set_params(missing, [Param("return", "x", "1", "int")]),
        lambda: backend.set_runtime(missing, {"x": "1"}),
        lambda: backend.add_log([LogLine(missing, "x")]),
    )
    for call in calls:
        with contextlib.suppress(Exception):
            call()


def _reap(children: set[int], events: Any, tasks: dict[int, str]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)
        tasks.pop(pid, None)
        _write(events, f"exit {pid} {os.waitstatus_to_exitcode(status)}")


def _write(events: Any, line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        events.write(line + "\n")
