"""The one runner: executes any stored task, a function step or a script.

``python -m stepline.runner TASK_ID`` runs a task in a process of its own; the local process
executor and the agents both use it. ``run_in_thread`` runs a function step in the calling
process (the in-process executor, the decorator's debug mode) through the same code.

A function step's task holds its code (``script.source``), its arguments (section ``kwargs``,
typed) and its artifact inputs (section ``kwargs_artifacts``, ``TASK_ID/ARTIFACT``). Its return
values are stored as parameters ``return/NAME`` when they are basic values (int, float, bool,
str, None), else as artifacts named NAME.

``python -m stepline.runner --serve CMD_FD EVENT_FD`` is the fork server: a process that has
already imported stepline and opened the store, and forks a fresh child for each step it is
asked to run. A step thus starts in a few milliseconds instead of paying for the interpreter
and the imports each time. Each child leads its own process group, so a time limit or an abort
ends the step's whole process tree.
"""

from __future__ import annotations

import hashlib
import io
import linecache
import os
import runpy
import sys
import threading
import traceback
from typing import Any, TextIO

from stepline.backend import Backend, get_backend
from stepline.core import params as pv
from stepline.core.config import load_config
from stepline.core.errors import StepLineError, ValidationError
from stepline.core.records import Param, TaskRecord
from stepline.core.status import TaskStatus
from stepline.sdk.artifacts import Artifact
from stepline.sdk.code import checkout_git, materialize
from stepline.sdk.logger import ENV_CONSOLE_FDS, FdCapture
from stepline.sdk.task import ENV_TASK_ID, Task

KWARGS = "kwargs"
KWARGS_ARTIFACTS = "kwargs_artifacts"
RETURN = "return"
#: Set by an agent for the tasks it runs (its id).
ENV_AGENT = "STEPLINE_AGENT_ID"

_compiled: dict[str, Any] = {}
_compiled_lock = threading.Lock()

#: In-process hand-over: the launcher leaves the task it just created (and its parameters)
#: here, so the step running in this process does not read them back from the store; the step
#: leaves its basic return values here for the steps that take them.
_handed: dict[str, tuple[TaskRecord, list[Param] | None, Any]] = {}
_returns: dict[str, dict[str, Any]] = {}


def hand_over(record: TaskRecord, params: list[Param] | None, fn: Any = None) -> None:
    """Leave a task for ``run_in_thread``; ``fn`` (the decorator's debug mode) is the user's
    own function object, called instead of the stored code so that breakpoints in it work."""
    _handed[record.id] = (record, params, fn)


def returned(task_id: str, name: str) -> tuple[bool, Any]:
    """(True, value) if a step run in this process returned ``name`` as a basic value."""
    values = _returns.get(task_id)
    if values is None or name not in values:
        return False, None
    return True, values[name]


def forget(task_ids: list[str]) -> None:
    for tid in task_ids:
        _returns.pop(tid, None)
        _handed.pop(tid, None)


class StepFailed(StepLineError):
    """A step's own code raised; the message holds the traceback's last line."""


def _code(source: str, name: str) -> Any:
    digest = hashlib.sha1(source.encode()).hexdigest()
    code = _compiled.get(digest)
    if code is None:
        filename = f"<step {name} {digest[:8]}>"
        code = compile(source, filename, "exec")
        # tracebacks (and inspect.getsource) show the stored code's lines
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        with _compiled_lock:
            _compiled[digest] = code
    return code


def load_function(script: dict[str, Any]) -> Any:
    """The step function defined by the stored source."""
    name = script.get("function") or ""
    source = script.get("source") or ""
    _add_code_path(script)
    namespace: dict[str, Any] = {"__name__": f"stepline_step_{name}", "__builtins__": __builtins__}
    exec(_code(source, name), namespace)
    fn = namespace.get(name)
    if not callable(fn):
        raise ValidationError(f"the stored code defines no function {name!r}")
    return fn


def _stored_code_first() -> bool:
    """Under an agent a task runs the code stored on it, even where the user's files exist."""
    return bool(os.environ.get(ENV_AGENT))


def _add_code_path(script: dict[str, Any]) -> None:
    """Make the local modules a function step imports importable: its module's folder when
    that is on this machine, else (and always under an agent) the modules stored on the task."""
    module_dir = script.get("module_dir") or ""
    modules = script.get("modules") or {}
    if modules and (_stored_code_first() or not os.path.isdir(module_dir)):
        folder = str(materialize(modules, load_config().cache_dir))
        if folder not in sys.path:
            sys.path.insert(0, folder)
    elif module_dir and os.path.isdir(module_dir) and module_dir not in sys.path:
        sys.path.append(module_dir)


def load_kwargs(backend: Backend, params: list[Param]) -> dict[str, Any]:
    """The function's arguments: typed values, and artifacts of other tasks loaded."""
    kwargs: dict[str, Any] = {}
    for p in params:
        if p.section == KWARGS:
            kwargs[p.name] = pv.decode(p.value, p.type)
    for p in params:
        if p.section == KWARGS_ARTIFACTS and p.value:
            kwargs[p.name] = load_artifact_ref(backend, p.value)
    return kwargs


def load_artifact_ref(backend: Backend, ref: str) -> Any:
    task_id, _, name = ref.partition("/")
    for rec in backend.get_artifacts(task_id):
        if rec.name == name:
            return Artifact(rec, backend).get()
    from stepline.core.errors import ArtifactNotFoundError

    raise ArtifactNotFoundError(
        f"task {task_id} has no artifact {name!r}, which this step takes as an input; was it "
        "deleted? Re-run the step that makes it"
    )


def store_results(task: Task, script: dict[str, Any], result: Any) -> dict[str, Any]:
    """Store the function's return value(s) by the step's return names; returns the basic
    ones."""
    names = list(script.get("returns") or [])
    if not names:
        return {}
    single = len(names) == 1 or not isinstance(result, (tuple, list))
    values = [result] if single else list(result)
    if len(values) < len(names):
        raise ValidationError(
            f"the function returned {len(values)} value(s) but the step declares "
            f"{len(names)} return names ({', '.join(names)})"
        )
    params: list[Param] = []
    basic: dict[str, Any] = {}
    for name, value in zip(names, values[: len(names)], strict=True):
        if pv.is_basic(value):
            params.append(Task._param(RETURN, name, value))
            basic[name] = value
        else:
            task.upload_artifact(name, value)
    if params:
        task._backend.set_params(task.id, params)
    return basic


def call_function_step(
    task: Task, params: list[Param] | None = None, fn: Any = None
) -> dict[str, Any]:
    """Run a function step's stored code (or ``fn``) with its stored arguments; store its
    results and return the basic ones."""
    script = task.script
    if fn is None:
        fn = load_function(script)
    if params is None:
        params = task._backend.get_params(task.id)
    kwargs = load_kwargs(task._backend, params)
    result = fn(**kwargs)
    return store_results(task, script, result)


def _failure_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, NameError):
        # before the traceback: its last line (the error itself) is what a step's status shows
        text = (
            "hint: a step runs its stored code, without the globals of the module that "
            "defined it; import inside the function or pass helper_functions=[...]\n" + text
        )
    return text


# -- in-process ------------------------------------------------------------------------------
class ThreadConsole(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` while steps run in threads: all output still
    reaches the terminal, and lines written by a step's thread also go to that step's log."""

    def __init__(self, stream: TextIO, level: str) -> None:
        self._stream = stream
        self._level = level
        self._local = threading.local()

    def write(self, s: str) -> int:
        n = self._stream.write(s)
        task = getattr(Task._thread, "task", None)
        if task is not None:
            text = getattr(self._local, "partial", "") + s
            if "\n" in text:
                *lines, rest = text.split("\n")
                task.get_logger()._log_lines([ln.rstrip("\r") for ln in lines], self._level)
                text = rest
            self._local.partial = text
        return len(s) if n is None else n

    def flush_thread(self) -> None:
        task = getattr(Task._thread, "task", None)
        text = getattr(self._local, "partial", "")
        if task is not None and text:
            task.get_logger()._log_lines([text], self._level)
        self._local.partial = ""

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def writable(self) -> bool:
        return True

    @property
    def original(self) -> TextIO:
        return self._stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_consoles_lock = threading.Lock()
_console_users = 0


def capture_thread_consoles(on: bool) -> None:
    """Install (``on``) or remove the thread-routing console; calls nest."""
    global _console_users
    with _consoles_lock:
        if on:
            _console_users += 1
            if _console_users == 1:
                if not isinstance(sys.stdout, ThreadConsole):
                    sys.stdout = ThreadConsole(sys.stdout, "info")
                if not isinstance(sys.stderr, ThreadConsole):
                    sys.stderr = ThreadConsole(sys.stderr, "error")
        else:
            _console_users = max(0, _console_users - 1)
            if _console_users == 0:
                if isinstance(sys.stdout, ThreadConsole):
                    sys.stdout = sys.stdout.original
                if isinstance(sys.stderr, ThreadConsole):
                    sys.stderr = sys.stderr.original


def run_in_thread(task_id: str, backend: Backend | None = None) -> tuple[TaskStatus, str]:
    """Run a stored function step in this thread; returns its final status and, when it
    failed, the reason."""
    backend = backend or get_backend()
    handed = _handed.pop(task_id, None)
    record, params, fn = handed if handed is not None else (backend.get_task(task_id), None, None)
    task = Task(record, backend)
    task._from_store = True
    if record.status != TaskStatus.in_progress:
        task._record = backend.set_status(task_id, TaskStatus.in_progress)
    previous = Task._bind_thread(task)
    failure = ""
    try:
        if task.script.get("kind") != "function":
            raise ValidationError(
                f"task {task_id} is a script task; only function steps run in-process"
            )
        _returns[task_id] = call_function_step(task, params, fn)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            failure = ""
        else:
            failure = _failure_text(exc)
            task.get_logger()._log_lines(failure.rstrip("\n").split("\n"), "error")
    finally:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, ThreadConsole):
                stream.flush_thread()
        Task._bind_thread(previous)
    try:
        task.flush(wait_for_uploads=True)
        pipeline_task = getattr(task, "_pipeline_task", None)
        if pipeline_task is not None:  # reports the step made on its pipeline's task
            pipeline_task.flush(wait_for_uploads=True)
    except StepLineError as exc:
        failure = failure or f"could not store the step's results: {exc}"
    return finish(backend, task_id, failure)


def finish(backend: Backend, task_id: str, failure: str) -> tuple[TaskStatus, str]:
    """Mark a task this runner ran completed, or failed with ``failure``; a task someone else
    already ended (an abort) keeps its status."""
    try:
        if failure:
            backend.set_status(
                task_id, TaskStatus.failed, message="step failed", reason=failure[-4000:]
            )
            return TaskStatus.failed, failure
        backend.set_status(task_id, TaskStatus.completed)
        return TaskStatus.completed, ""
    except StepLineError:
        rec = backend.get_task(task_id)
        return rec.status, rec.status_reason


# -- in a process of its own ----------------------------------------------------------------
def run_process(task_id: str) -> int:
    """Run the task in this process (it is this process's task); returns the exit code."""
    os.environ[ENV_TASK_ID] = task_id
    backend = get_backend()
    record = backend.get_task(task_id)
    if record.status not in (TaskStatus.created, TaskStatus.queued, TaskStatus.in_progress):
        sys.stderr.write(
            f"stepline runner: task {task_id} is {record.status.value}; reset or clone it to "
            "run it again\n"
        )
        return 2
    script = record.script or {}
    if script.get("kind") == "function":
        from stepline.sdk.task import _exit_hooks

        task = Task.init()
        capture = _capture_fds(task)
        failure = ""
        try:
            call_function_step(task)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                failure = "interrupted"
            elif isinstance(exc, SystemExit) and exc.code in (None, 0):
                failure = ""
            elif isinstance(exc, SystemExit) and _exit_hooks.terminated:
                failure = "terminated by SIGTERM"
            else:
                failure = _failure_text(exc)
                sys.stderr.write(failure)
        if capture is not None:
            capture.close()
        if _exit_hooks.terminated:  # killed (an abort, a time limit): stopped, not failed
            task._finish(failure, TaskStatus.stopped)
        else:
            task._finish(failure or None)
        return 1 if failure else 0
    if script.get("kind") == "pipeline" and not script.get("from_code"):
        # the DAG stored on the task (else: the script that builds it runs again)
        from stepline.pipeline.controller import run_stored_pipeline

        return run_stored_pipeline(task_id)
    return _run_script(task_id, script)


def _capture_fds(task: Task) -> FdCapture | None:
    if not os.environ.get(ENV_CONSOLE_FDS):
        return None
    try:
        return FdCapture(task.get_logger())
    except OSError:
        return None


def script_location(script: dict[str, Any]) -> tuple[str, str]:
    """(entry script path, working folder) to run a script task from: the user's files when
    they are on this machine (and not under an agent), else the code stored on the task, else
    a checkout of its git commit with its diff."""
    path = script.get("entry_path") or ""
    if path and os.path.isfile(path) and not _stored_code_first():
        workdir = script.get("working_dir") or os.path.dirname(path)
        return path, workdir if os.path.isdir(workdir) else os.path.dirname(path)
    cache = load_config().cache_dir
    content = script.get("content")
    name = os.path.basename(path or script.get("entry_point") or "") or "main.py"
    if content is not None:
        files = {**(script.get("modules") or {}), name: content}
        folder = str(materialize(files, cache))
        return os.path.join(folder, name), folder
    if script.get("repository"):
        folder = str(checkout_git(script, cache))
        entry = os.path.join(folder, script.get("entry_point") or name)
        return entry, os.path.dirname(entry)
    if path and os.path.isfile(path):
        return path, os.path.dirname(path)
    raise ValidationError(
        f"the task's script {path or script.get('entry_point')!r} is not on this machine and "
        "the task stores neither its code nor a git repository to fetch it from"
    )


def _run_script(task_id: str, script: dict[str, Any]) -> int:
    try:
        path, workdir = script_location(script)
    except (ValidationError, ValueError, OSError) as exc:
        backend = get_backend()
        backend.set_status(task_id, TaskStatus.in_progress)
        reason = str(exc)
        backend.set_status(task_id, TaskStatus.failed, message="script not found", reason=reason)
        sys.stderr.write(f"stepline runner: {reason}\n")
        return 1
    os.chdir(workdir)
    sys.argv = [path, *list(script.get("argv") or [])]
    sys.path.insert(0, os.path.dirname(path))
    task = Task.init()
    capture = _capture_fds(task)
    from stepline.sdk.task import _exit_hooks

    code = 0
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            code = exc.code if isinstance(exc.code, int) else 1
            _exit_hooks.failure = f"the script exited with status {exc.code}"
    except BaseException as exc:
        _exit_hooks.failure = _failure_text(exc)
        sys.stderr.write(_exit_hooks.failure)
        code = 1
    if capture is not None:
        capture.close()
    current = Task.current_task()
    if current is not None:
        if _exit_hooks.terminated:  # killed (an abort, a time limit, its pipeline ended)
            current._finish("terminated by SIGTERM", TaskStatus.stopped)
        else:
            current._finish(_exit_hooks.failure)
    return code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "--serve":
        from stepline.pipeline.forkserver import serve

        return serve(int(args[1]), int(args[2]))
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write(
            "usage: python -m stepline.runner TASK_ID\n"
            "runs a stored task (a pipeline step or a script) in this process\n"
        )
        return 2
    try:
        return run_process(args[0])
    except StepLineError as exc:
        sys.stderr.write(f"stepline runner: {exc}\n")
        return 1
