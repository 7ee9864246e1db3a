"""``Task``: the tracked unit of work (parameters, artifacts, metrics, console log, status).

A task runs in one of two ways:

* **from code** — ``Task.init()`` in a script creates a new task, records the script and its
  environment, and stores the values the code connects;
* **from the store** — a runner starts the script with ``STEPLINE_TASK_ID`` set (a clone,
  perhaps with edited parameters); ``Task.init()`` attaches to that task and ``connect()``
  hands the code the stored values, cast back to the types of the code's defaults.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stepline.backend import Backend, get_backend
from stepline.core import params as pv
from stepline.core.config import load_config
from stepline.core.errors import StepLineError, ValidationError
from stepline.core.records import (
    ArtifactRecord,
    ConfigObject,
    NewTask,
    Param,
    TaskFilter,
    TaskRecord,
)
from stepline.core.status import TaskStatus, TaskTypes
from stepline.sdk.artifacts import Artifact, Artifacts
from stepline.sdk.logger import ENV_CONSOLE_FDS, ConsoleCapture, Logger
from stepline.sdk.script_info import script_info
from stepline.sdk.serializers import serialize

ENV_TASK_ID = "STEPLINE_TASK_ID"
DEFAULT_SECTION = "General"
ARGS_SECTION = "Args"


def _split_key(key: str, default_section: str = DEFAULT_SECTION) -> tuple[str, str]:
    section, sep, name = key.partition("/")
    return (section, name) if sep else (default_section, key)


class Task:
    """A tracked task. Make one with ``Task.init`` (in a script), ``Task.create`` (a draft),
    ``Task.clone``, or fetch one with ``Task.get_task`` / ``Task.get_tasks``."""

    TaskTypes = TaskTypes
    TaskStatusEnum = TaskStatus

    _current: Task | None = None
    _current_lock = threading.RLock()
    #: A step run in a thread of the controller's process is this thread's current task.
    _thread = threading.local()

    def __init__(self, record: TaskRecord, backend: Backend | None = None) -> None:
        self._backend = backend if backend is not None else get_backend()
        self._record = record
        self._logger: Logger | None = None
        self._from_store = False
        self._owned = False  # this process runs the task and ends it at exit
        self._captures: list[ConsoleCapture] = []
        self._connect_args = False

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.name!r} project={self._record.project!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- creating and finding ----------------------------------------------------------------
    @classmethod
    def init(
        cls,
        project_name: str | None = None,
        task_name: str | None = None,
        task_type: str = TaskTypes.training,
        tags: Sequence[str] | None = None,
        reuse_last_task_id: bool | str = True,
        continue_last_task: bool | str | int = False,
        output_uri: str | bool | None = None,
        auto_connect_arg_parser: bool | Mapping[str, bool] = True,
        auto_connect_frameworks: bool | Mapping[str, Any] = True,
        auto_resource_monitoring: bool = True,
        auto_connect_streams: bool | Mapping[str, bool] = True,
        deferred_init: bool = False,
        **_: Any,
    ) -> Task:
        """Start tracking this process as a task (or, with ``STEPLINE_TASK_ID`` set, attach to
        that stored task). The task ends ``completed`` at normal exit and ``failed`` on an
        uncaught exception; its console goes to its log.

        Unlike the reference, a new task is created on every run (``reuse_last_task_id`` is
        accepted and ignored): a run's history is never overwritten."""
        with cls._current_lock:
            if cls._current is not None:
                return cls._current
            backend = get_backend()
            env_id = os.environ.get(ENV_TASK_ID)
            if env_id:
                task = cls(backend.get_task(env_id), backend)
                task._from_store = True
                if task._record.status in (TaskStatus.created, TaskStatus.queued):
                    task._record = backend.set_status(task.id, TaskStatus.in_progress)
                if tags:
                    task.add_tags(tags)
            else:
                if not project_name or not task_name:
                    raise ValidationError(
                        "Task.init needs project_name and task_name when it is not run by "
                        "stepline (e.g. Task.init(project_name='examples', task_name='train'))"
                    )
                record = backend.create_task(
                    NewTask(
                        name=task_name,
                        project=project_name,
                        type=str(TaskTypes(task_type)),
                        status=TaskStatus.in_progress,
                        tags=list(tags or []),
                        script=script_info(),
                        user=_user(),
                    )
                )
                task = cls(record, backend)
            task._owned = True
            cls._current = task
            _exit_hooks.install(task)
            if auto_connect_streams and not (env_id and os.environ.get(ENV_CONSOLE_FDS)):
                # (under an agent the runner captures the file descriptors instead)
                task._capture_console(auto_connect_streams)
            if auto_connect_arg_parser:
                _argparse_hook.install(task)
            return task

    @classmethod
    def create(
        cls,
        project_name: str | None = None,
        task_name: str | None = None,
        task_type: str = TaskTypes.training,
        repo: str | None = None,
        branch: str | None = None,
        commit: str | None = None,
        script: str | None = None,
        working_directory: str | None = None,
        packages: bool | Sequence[str] | None = None,
        requirements_file: str | Path | None = None,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        argparse_args: Sequence[tuple[str, Any]] | None = None,
        base_task_id: str | None = None,
        add_task_init_call: bool = True,
        **_: Any,
    ) -> Task:
        """A draft task (status ``created``) for ``script``, to be executed later, or a clone
        of ``base_task_id``."""
        backend = get_backend()
        if base_task_id:
            task = cls.clone(base_task_id, name=task_name, project=project_name)
        else:
            if not project_name or not task_name:
                raise ValidationError("Task.create needs project_name and task_name")
            info: dict[str, Any] = {}
            if script:
                if not os.path.isfile(script):
                    raise ValidationError(f"Task.create: script {script!r} is not a file")
                info = script_info(script, with_packages=False)
            if repo:
                info.update(repository=repo, branch=branch or "", commit=commit or "")
            if working_directory:
                info["working_dir"] = working_directory
            reqs: list[str] = []
            if requirements_file:
                reqs = [
                    ln.strip()
                    for ln in Path(requirements_file).read_text().splitlines()
                    if ln.strip() and not ln.startswith("#")
                ]
            if packages and not isinstance(packages, bool):
                reqs.extend(packages)
            if reqs:
                info["requirements"] = reqs
            if docker:
                info["container"] = {
                    "image": docker,
                    "arguments": docker_args or "",
                    "setup_shell_script": docker_bash_setup_script or "",
                }
            record = backend.create_task(
                NewTask(
                    name=task_name,
                    project=project_name,
                    type=str(TaskTypes(task_type)),
                    script=info,
                    user=_user(),
                )
            )
            task = cls(record, backend)
        if argparse_args:
            task.set_parameters({f"{ARGS_SECTION}/{k}": v for k, v in argparse_args}, __update=True)
        return task

    @classmethod
    def get_task(
        cls,
        task_id: str | None = None,
        project_name: str | None = None,
        task_name: str | None = None,
        tags: Sequence[str] | None = None,
        allow_archived: bool = True,
        task_filter: Mapping[str, Any] | None = None,
    ) -> Task:
        """A task by id, or the most recent one with this project and exact name (and tags)."""
        backend = get_backend()
        if task_id:
            return cls(backend.get_task(task_id), backend)
        if not (project_name or task_name or tags):
            raise ValidationError("Task.get_task needs task_id, or project_name/task_name/tags")
        flt = cls._filter(
            project_name=project_name,
            task_name=f"^{re.escape(task_name)}$" if task_name else None,
            tags=tags,
            allow_archived=allow_archived,
            task_filter=task_filter,
        )
        flt.limit = 1
        found = backend.find_tasks(flt)
        if not found:
            from stepline.core.errors import NotFoundError

            raise NotFoundError(
                f"no task named {task_name!r} in project {project_name!r}"
                + (f" with tags {list(tags)}" if tags else "")
            )
        return cls(found[0], backend)

    @classmethod
    def get_tasks(
        cls,
        task_ids: Sequence[str] | None = None,
        project_name: str | None = None,
        task_name: str | None = None,
        tags: Sequence[str] | None = None,
        allow_archived: bool = True,
        task_filter: Mapping[str, Any] | None = None,
    ) -> list[Task]:
        """Tasks matching every given filter; ``task_name`` is a regular expression searched in
        the name. ``task_filter`` may hold ``status``, ``type``, ``parent``, ``order_by``
        (e.g. ``["-last_update"]``) and ``page_size``/``limit``."""
        backend = get_backend()
        flt = cls._filter(
            task_ids=task_ids,
            project_name=project_name,
            task_name=task_name,
            tags=tags,
            allow_archived=allow_archived,
            task_filter=task_filter,
        )
        return [cls(r, backend) for r in backend.find_tasks(flt)]

    @staticmethod
    def _filter(
        *,
        task_ids: Sequence[str] | None = None,
        project_name: str | None = None,
        task_name: str | None = None,
        tags: Sequence[str] | None = None,
        allow_archived: bool = True,
        task_filter: Mapping[str, Any] | None = None,
    ) -> TaskFilter:
        tf = dict(task_filter or {})
        order = tf.pop("order_by", "-created")
        if isinstance(order, (list, tuple)):
            order = order[0] if order else "-created"
        limit = tf.pop("limit", None)
        page_size = tf.pop("page_size", None)
        limit = limit or page_size
        status = tf.pop("status", None)
        ttype = tf.pop("type", None)
        flt = TaskFilter(
            ids=list(task_ids) if task_ids else None,
            project=project_name,
            name=task_name,
            tags=list(tags) if tags else None,
            status=[TaskStatus(s) for s in ([status] if isinstance(status, str) else status)]
            if status
            else None,
            type=[str(x) for x in ([ttype] if isinstance(ttype, str) else ttype)]
            if ttype
            else None,
            parent=tf.pop("parent", None),
            archived=None if allow_archived else False,
            order_by=str(order),
            limit=int(limit) if limit else None,
        )
        if "system_tags" in tf:
            tf.pop("system_tags")
        if tf:
            raise ValidationError(f"unsupported task_filter keys: {sorted(tf)}")
        return flt

    @classmethod
    def clone(
        cls,
        source_task: Task | str | None = None,
        name: str | None = None,
        comment: str | None = None,
        parent: str | None = None,
        project: str | None = None,
    ) -> Task:
        """A new draft task with the source's code, parameters, configuration and tags (not its
        outputs). Its parent is the source unless ``parent`` says otherwise."""
        if source_task is None:
            raise ValidationError("Task.clone needs source_task (a Task or a task id)")
        backend = get_backend()
        source_id = source_task.id if isinstance(source_task, Task) else str(source_task)
        record = backend.clone_task(
            source_id, name=name, project=project, comment=comment, parent=parent
        )
        return cls(record, backend)

    @classmethod
    def enqueue(
        cls,
        task: Task | str,
        queue_name: str | None = None,
        queue_id: str | None = None,
        force: bool = False,
        priority: int = 0,
    ) -> dict[str, Any]:
        """Put a draft task on a queue (default: ``default``), for an agent to run. With
        ``force`` a task that already ran is reset to a draft first."""
        backend = get_backend()
        task_id = task.id if isinstance(task, Task) else str(task)
        queue = queue_name
        if queue is None and queue_id is not None:
            queue = next((q.name for q in backend.get_queues() if q.id == queue_id), None)
            if queue is None:
                raise ValidationError(f"no queue has id {queue_id!r}; see `stepline queues list`")
        queue = queue or "default"
        if force:
            rec = backend.get_task(task_id)
            if rec.status != TaskStatus.created:
                backend.set_status(task_id, TaskStatus.created, message="reset", force=True)
        record = backend.enqueue(task_id, queue, priority=priority)
        if isinstance(task, Task):
            task._record = record
        return {"queued": 1, "queue": queue, "task": task_id}

    @classmethod
    def dequeue(cls, task: Task | str) -> dict[str, Any]:
        """Take a queued task off its queue (it becomes a draft again)."""
        backend = get_backend()
        task_id = task.id if isinstance(task, Task) else str(task)
        record = backend.dequeue(task_id)
        if isinstance(task, Task):
            task._record = record
        return {"dequeued": 1, "task": task_id}

    def wait_for_status(
        self,
        status: Sequence[str] = ("completed", "stopped", "closed"),
        raise_on_status: Sequence[str] | None = ("failed",),
        check_interval_sec: float = 60.0,
        timeout: float | None = None,
    ) -> None:
        """Wait until the task reaches one of ``status`` (raises ``RuntimeError`` on one of
        ``raise_on_status``, ``TimeoutError`` after ``timeout`` seconds). The store is checked
        often at first, then at most every ``check_interval_sec`` seconds."""
        import time as _time

        wanted = {str(s) for s in status}
        bad = {str(s) for s in (raise_on_status or ())}
        start = _time.monotonic()
        delay = 0.02
        while True:
            self.reload()
            current = self.status
            if current in bad:
                raise RuntimeError(
                    f"task {self.id} has status {current}: {self._record.status_reason[-500:]}"
                )
            if current in wanted:
                return
            waited = _time.monotonic() - start
            if timeout is not None and waited > timeout:
                raise TimeoutError(f"task {self.id} is still {current} after {timeout:g} s")
            if self._backend.pushes_changes:  # a server answers when the status changes
                left = 30.0 if timeout is None else max(0.0, timeout - waited)
                self._backend.watch({self.id: self._record.status}, timeout=min(left, 30.0))
                continue
            _time.sleep(delay)
            delay = min(delay * 1.5, max(0.02, float(check_interval_sec)), 1.0)

    def execute_remotely(
        self, queue_name: str | None = None, clone: bool = False, exit_process: bool = True
    ) -> Task | None:
        """Stop running here and have an agent of ``queue_name`` run this task (or, with
        ``clone``, a copy of it). Run by an agent, this does nothing and returns ``None``."""
        if not Task.running_locally():
            return None
        backend = self._backend
        self.flush(wait_for_uploads=True)
        if clone:
            target = Task.clone(self)
        else:
            self._record = backend.set_status(
                self.id, TaskStatus.created, message="sent to an agent", force=True
            )
            target = self
        Task.enqueue(target, queue_name=queue_name)
        if exit_process and not clone:
            self._release_console()
            self._owned = False
            with Task._current_lock:
                if Task._current is self:
                    Task._current = None
            print(f"stepline: task {target.id} queued on {queue_name or 'default'}; exiting")
            raise SystemExit(0)
        if exit_process:
            raise SystemExit(0)
        return target

    @classmethod
    def current_task(cls) -> Task | None:
        """The task this code runs in: the step task of this thread when a pipeline runs
        steps in-process, else the task of this process."""
        return getattr(cls._thread, "task", None) or cls._current

    @classmethod
    def _bind_thread(cls, task: Task | None) -> Task | None:
        """Make ``task`` this thread's current task; returns the one bound before."""
        previous = getattr(cls._thread, "task", None)
        cls._thread.task = task
        return previous

    @classmethod
    def running_locally(cls) -> bool:
        """False when this process executes a stored task (started by a stepline runner)."""
        return not os.environ.get(ENV_TASK_ID)

    # -- identity and fields ------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._record.id

    @property
    def task_id(self) -> str:
        return self._record.id

    @property
    def name(self) -> str:
        return self._record.name

    @name.setter
    def name(self, value: str) -> None:
        self.set_name(value)

    @property
    def project(self) -> str:
        """The project's id (``get_project_name()`` gives its name)."""
        return self._record.project_id

    def get_project_name(self) -> str:
        return self._record.project

    @property
    def task_type(self) -> str:
        return self._record.type

    @property
    def comment(self) -> str:
        return self._record.comment

    @property
    def parent(self) -> str | None:
        return self._record.parent

    @property
    def data(self) -> TaskRecord:
        return self._record

    @property
    def status(self) -> str:
        """The current status (read from the store)."""
        self.reload()
        return self._record.status.value

    def get_status(self) -> str:
        return self.status

    def get_status_message(self) -> str:
        self.reload()
        return self._record.status_message

    @property
    def created(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._record.created)

    @property
    def started(self) -> dt.datetime | None:
        ts = self._record.started
        return dt.datetime.fromtimestamp(ts) if ts else None

    @property
    def completed(self) -> dt.datetime | None:
        ts = self._record.completed
        return dt.datetime.fromtimestamp(ts) if ts else None

    @property
    def script(self) -> dict[str, Any]:
        return dict(self._record.script)

    def reload(self) -> Task:
        self._record = self._backend.get_task(self.id)
        return self

    def set_name(self, name: str) -> None:
        self._record = self._backend.update_task(self.id, name=name)

    def set_comment(self, comment: str) -> None:
        self._record = self._backend.update_task(self.id, comment=comment)

    def set_parent(self, parent: Task | str | None) -> None:
        pid = parent.id if isinstance(parent, Task) else parent
        self._record = self._backend.update_task(self.id, parent=pid)

    def set_task_type(self, task_type: str) -> None:
        self._record = self._backend.update_task(self.id, type=str(TaskTypes(task_type)))

    def move_to_project(self, new_project_name: str) -> None:
        self._record = self._backend.update_task(self.id, project=new_project_name)

    def set_script(self, **fields: Any) -> None:
        self._record = self._backend.update_task(self.id, script={**self._record.script, **fields})

    # -- tags, archive, publish -----------------------------------------------------------------
    def get_tags(self) -> list[str]:
        self.reload()
        return list(self._record.tags)

    def add_tags(self, tags: str | Sequence[str]) -> None:
        new = [tags] if isinstance(tags, str) else list(tags)
        self.set_tags(sorted(set(self.get_tags()) | set(new)))

    def set_tags(self, tags: Sequence[str]) -> None:
        self._backend.set_tags(self.id, list(tags))
        self._record.tags = sorted(set(tags))

    def set_archived(self, archive: bool) -> None:
        self._record = self._backend.update_task(self.id, archived=bool(archive))

    def get_archived(self) -> bool:
        self.reload()
        return self._record.archived

    def publish(self) -> None:
        """Mark a completed task published (a flag: its status stays ``completed``)."""
        if self.status != TaskStatus.completed.value:
            raise ValidationError(f"task {self.id}: only a completed task can be published")
        self._record = self._backend.update_task(self.id, published=True)

    def delete(self) -> bool:
        self._backend.delete_task(self.id)
        return True

    # -- status ----------------------------------------------------------------------------------
    def _set_status(
        self, status: TaskStatus, force: bool, message: str = "", reason: str = ""
    ) -> None:
        if status != TaskStatus.in_progress:
            self.flush()
        self._record = self._backend.set_status(
            self.id, status, message=message, reason=reason, force=force
        )

    def mark_started(self, force: bool = False) -> None:
        self._set_status(TaskStatus.in_progress, force)

    def mark_completed(
        self, ignore_errors: bool = True, status_message: str | None = None, force: bool = False
    ) -> None:
        self._set_status(TaskStatus.completed, force, status_message or "")

    def mark_failed(
        self,
        ignore_errors: bool = True,
        status_reason: str | None = None,
        status_message: str | None = None,
        force: bool = False,
    ) -> None:
        self._set_status(TaskStatus.failed, force, status_message or "", status_reason or "")

    def mark_stopped(self, force: bool = False, status_message: str | None = None) -> None:
        self._set_status(TaskStatus.stopped, force, status_message or "")

    def reset(self, set_started_on_success: bool = False, force: bool = False) -> None:
        """Back to ``created`` (a draft): outputs are kept, the task can run again."""
        self._set_status(TaskStatus.created, force)
        if set_started_on_success:
            self.mark_started()

    def set_progress(self, progress: int) -> None:
        value = int(progress)
        if not 0 <= value <= 100:
            raise ValidationError(f"task {self.id}: progress must be 0..100, got {progress!r}")
        self._backend.set_runtime(self.id, {"progress": str(value)})

    def get_progress(self) -> int | None:
        value = self._backend.get_runtime(self.id).get("progress")
        return int(value) if value is not None else None

    def set_user_properties(self, *args: Any, **kwargs: Any) -> bool:
        values: dict[str, str] = {}
        for item in args:
            if isinstance(item, Mapping) and "name" in item:
                values[str(item["name"])] = str(item.get("value", ""))
            elif isinstance(item, Mapping):
                values.update({str(k): str(v) for k, v in item.items()})
        values.update({k: str(v) for k, v in kwargs.items()})
        self._backend.set_runtime(self.id, {f"user/{k}": v for k, v in values.items()})
        return True

    def get_user_properties(self) -> dict[str, str]:
        rt = self._backend.get_runtime(self.id)
        return {k[5:]: v for k, v in rt.items() if k.startswith("user/")}

    def get_runtime_properties(self) -> dict[str, str]:
        return self._backend.get_runtime(self.id)

    def set_runtime_properties(self, values: Mapping[str, Any]) -> None:
        self._backend.set_runtime(self.id, {k: str(v) for k, v in values.items()})

    # -- parameters ----------------------------------------------------------------------------
    def connect(self, mutable: Any, name: str | None = None) -> Any:
        """Connect a dict, an ``argparse.Namespace`` or an object's attributes as parameters of
        section ``name`` (default ``General``; ``Args`` for a Namespace).

        Run from code, the values are stored. Run from the store, the stored values replace the
        code's defaults, cast to the defaults' types, and the same object is returned."""
        if isinstance(mutable, argparse.Namespace):
            section = name or ARGS_SECTION
            values = vars(mutable)
            self._connect_values(section, values)
            return mutable
        if isinstance(mutable, argparse.ArgumentParser):
            raise ValidationError("connect() takes the parsed Namespace, not the ArgumentParser")
        section = name or DEFAULT_SECTION
        if "/" in section:
            raise ValidationError(f"connect(name={section!r}): a section name cannot hold '/'")
        if isinstance(mutable, dict):
            self._connect_values(section, mutable)
            return mutable
        if isinstance(mutable, (str, int, float, bool, list, tuple)) or mutable is None:
            raise ValidationError(
                f"connect() takes a dict, an argparse.Namespace or an object; wrap a single "
                f"value in a dict, e.g. task.connect({{'value': {mutable!r}}})"
            )
        attrs = (
            {k: v for k, v in vars(mutable).items() if not k.startswith("_") and not callable(v)}
            if hasattr(mutable, "__dict__")
            else {}
        )
        if not attrs and isinstance(mutable, type):
            attrs = {
                k: v for k, v in vars(mutable).items() if not k.startswith("_") and not callable(v)
            }
        self._connect_values(section, attrs)
        for k, v in attrs.items():
            setattr(mutable, k, v)
        return mutable

    def _connect_values(self, section: str, values: dict[str, Any]) -> None:
        """Store ``values`` (from code), or overwrite them in place with the stored ones."""
        if self._from_store:
            stored = {p.name: p for p in self._backend.get_params(self.id) if p.section == section}
            for key, p in stored.items():
                if key in values:
                    default = values[key]
                    try:
                        values[key] = (
                            pv.decode(p.value, p.type)
                            if default is None
                            else pv.cast_like(p.value, default)
                        )
                    except ValidationError as exc:
                        raise ValidationError(
                            f"task {self.id}: parameter {section}/{key}: {exc}"
                        ) from exc
                else:
                    values[key] = pv.decode(p.value, p.type)
            missing = {k: v for k, v in values.items() if k not in stored}
            if missing:
                self._backend.set_params(
                    self.id, [self._param(section, k, v) for k, v in missing.items()]
                )
            return
        self._backend.set_params(self.id, [self._param(section, k, v) for k, v in values.items()])

    @staticmethod
    def _param(
        section: str, name: str, value: Any, description: str = "", value_type: Any = None
    ) -> Param:
        text, tname = pv.encode(value)
        if value_type is not None:
            tname = value_type if isinstance(value_type, str) else value_type.__name__
        return Param(section, str(name), text, tname, description or "")

    def get_parameters(
        self, backwards_compatibility: bool = True, cast: bool = False
    ) -> dict[str, Any]:
        """{"Section/name": value}: strings, or (``cast=True``) values of their stored types."""
        return {
            p.key: (pv.decode(p.value, p.type) if cast else p.value)
            for p in self._backend.get_params(self.id)
        }

    def get_parameters_as_dict(self, cast: bool = False) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for p in self._backend.get_params(self.id):
            out.setdefault(p.section, {})[p.name] = pv.decode(p.value, p.type) if cast else p.value
        return out

    def get_parameter(self, name: str, default: Any = None, cast: bool = False) -> Any:
        section, key = _split_key(name)
        for p in self._backend.get_params(self.id):
            if p.section == section and p.name == key:
                return pv.decode(p.value, p.type) if cast else p.value
        return default

    def _typed_params(self, values: Mapping[str, Any]) -> list[Param]:
        """Params for ``values``; a string given for a typed parameter keeps that type when
        it reads as one (so editing "lr" to "0.5" keeps it a float)."""
        existing = {p.key: p for p in self._backend.get_params(self.id)}
        out = []
        for key, value in values.items():
            section, name = _split_key(str(key))
            param = self._param(section, name, value)
            old = existing.get(param.key)
            if old is not None:
                param.description = old.description
                if isinstance(value, str) and old.type != "str":
                    try:
                        pv.cast_like(value, pv.decode(old.value, old.type))
                        param.type = old.type
                    except (ValidationError, ValueError):
                        pass
            out.append(param)
        return out

    def set_parameters(self, *args: Mapping[str, Any], **kwargs: Any) -> None:
        """Replace all parameters with the given {"Section/name": value} (keys without a
        section go to ``General``). ``__update=True`` keeps the others."""
        update = bool(kwargs.pop("__update", False))
        values: dict[str, Any] = {}
        for mapping in args:
            values.update(mapping)
        values.update(kwargs)
        self._backend.set_params(self.id, self._typed_params(values), replace=not update)

    def update_parameters(self, *args: Mapping[str, Any], **kwargs: Any) -> None:
        """Insert or update the given parameters, keeping the others."""
        kwargs["__update"] = True
        self.set_parameters(*args, **kwargs)

    def set_parameter(
        self, name: str, value: Any, description: str | None = None, value_type: Any = None
    ) -> None:
        param = self._typed_params({name: value})[0]
        if description is not None:
            param.description = description
        if value_type is not None:
            param.type = value_type if isinstance(value_type, str) else value_type.__name__
        self._backend.set_params(self.id, [param])

    def delete_parameter(self, name: str) -> bool:
        section, key = _split_key(name)
        self._backend.delete_params(self.id, [f"{section}/{key}"])
        return True

    # -- configuration objects -------------------------------------------------------------------
    def connect_configuration(
        self, configuration: Any, name: str | None = None, description: str | None = None
    ) -> Any:
        """Connect a configuration (a dict, or a path to a text file) as the configuration
        object ``name`` (default ``General``). Run from the store, the stored configuration is
        returned instead (a dict updated in place, or a path to a local copy of the file)."""
        cname = name or DEFAULT_SECTION
        is_path = isinstance(configuration, (str, Path))
        if not is_path and not isinstance(configuration, dict):
            raise ValidationError("connect_configuration takes a dict or a path to a file")
        stored = {c.name: c for c in self._backend.get_configs(self.id)}.get(cname)
        if self._from_store and stored is not None:
            if isinstance(configuration, dict):
                configuration.clear()
                configuration.update(json.loads(stored.value) if stored.value else {})
                return configuration
            dest = load_config().cache_dir / "configs" / self.id
            dest.mkdir(parents=True, exist_ok=True)
            path = dest / (Path(str(configuration)).name or "config.txt")
            path.write_text(stored.value)
            return str(path)
        if isinstance(configuration, dict):
            obj = ConfigObject(
                cname, json.dumps(configuration, default=str), "json", description or ""
            )
        else:
            text = Path(configuration).read_text()
            obj = ConfigObject(
                cname, text, Path(configuration).suffix.lstrip(".") or "text", description or ""
            )
        self._backend.set_configs(self.id, [obj])
        return configuration

    def set_configuration_object(
        self,
        name: str,
        config_text: str | None = None,
        description: str | None = None,
        config_type: str | None = None,
        config_dict: dict[str, Any] | None = None,
    ) -> None:
        if config_dict is not None:
            text, ctype = json.dumps(config_dict, default=str), "json"
        else:
            text, ctype = config_text or "", config_type or "text"
        self._backend.set_configs(self.id, [ConfigObject(name, text, ctype, description or "")])

    def get_configuration_object(self, name: str) -> str | None:
        for c in self._backend.get_configs(self.id):
            if c.name == name:
                return c.value
        return None

    def get_configuration_object_as_dict(self, name: str) -> dict[str, Any] | None:
        text = self.get_configuration_object(name)
        return None if text is None else json.loads(text)

    def get_configuration_objects(self) -> dict[str, str]:
        return {c.name: c.value for c in self._backend.get_configs(self.id)}

    # -- artifacts -------------------------------------------------------------------------------
    def upload_artifact(
        self,
        name: str,
        artifact_object: Any,
        metadata: Mapping[str, Any] | None = None,
        delete_after_upload: bool = False,
        auto_pickle: bool = True,
        preview: Any = None,
        wait_on_upload: bool = False,
        extension_name: str | None = None,
        serialization_function: Callable[[Any], bytes] | None = None,
        retries: int = 0,
        sort_keys: bool = True,
    ) -> bool:
        """Store ``artifact_object`` as artifact ``name`` (see ``sdk.serializers`` for how each
        type is stored). The artifact is stored whole and recorded when this returns; readers
        never see part of it. For large files the sha256 is recorded a moment later by a
        background thread unless ``wait_on_upload=True`` (the task waits for it before it
        ends). Uploading a name again replaces the artifact."""
        from stepline.core.paths import check_name

        check_name(name, f"artifact name (task {self.id})")
        meta = dict(metadata or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"artifact {name!r} of task {self.id}: metadata must be JSON ({exc})"
            )
        what = f"artifact {name!r} of task {self.id}"
        ser = serialize(
            artifact_object,
            what=what,
            tmp_dir=load_config().home / "tmp",
            auto_pickle=auto_pickle,
            serialization_function=serialization_function,
            extension_name=extension_name,
            sort_keys=sort_keys,
        )
        record = ArtifactRecord(
            task_id=self.id,
            name=name,
            type=ser.type,
            url="",
            hash="",
            size=0,
            preview=str(preview) if preview is not None else ser.preview,
            metadata=meta,
            content_type=ser.content_type,
        )
        if ser.type == "file":
            record.metadata.setdefault("file_name", os.path.basename(ser.path))
        attempts = 1 + max(0, int(retries))
        try:
            for attempt in range(attempts):
                try:
                    self._backend.put_artifact(
                        record, ser.path, move=ser.owned, defer_hash=not wait_on_upload
                    )
                    break
                except (OSError, StepLineError):
                    if attempt == attempts - 1:
                        raise
        finally:
            if ser.owned and os.path.exists(ser.path):
                os.unlink(ser.path)
        if delete_after_upload and ser.type in ("file",) and os.path.isfile(ser.path):
            os.unlink(ser.path)
        return True

    @property
    def artifacts(self) -> Artifacts:
        """The task's artifacts by name (read now from the store)."""
        return Artifacts(self._backend.get_artifacts(self.id), self._backend, self.id)

    def get_artifact(self, name: str) -> Artifact:
        return self.artifacts[name]

    def delete_artifacts(self, artifact_names: Sequence[str]) -> bool:
        for n in artifact_names:
            self._backend.delete_artifact(self.id, n)
        return True

    # -- models ------------------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, list[Any]]:
        recs = self._backend.get_models(self.id)
        return {
            "input": [m for m in recs if m.mode == "input"],
            "output": [m for m in recs if m.mode == "output"],
        }

    # -- reporting -------------------------------------------------------------------------------
    def get_logger(self) -> Logger:
        if self._logger is None:
            self._logger = Logger(self)
        return self._logger

    def flush(self, wait_for_uploads: bool = False) -> bool:
        """Write buffered reports now; with ``wait_for_uploads`` also wait until every
        artifact uploaded by this process has its sha256 recorded."""
        for cap in self._captures:
            cap.flush_partial()
        if self._logger is not None:
            self._logger.flush()
        if wait_for_uploads:
            self._backend.wait_for_uploads()
        return True

    def get_reported_scalars(self, max_samples: int = 0, x_axis: str = "iter") -> dict[str, Any]:
        """{title: {series: {"x": [iterations], "y": [values]}}}."""
        self.flush()
        out: dict[str, dict[str, dict[str, list[float]]]] = {}
        for p in self._backend.get_scalars(self.id):
            s = out.setdefault(p.title, {}).setdefault(p.series, {"x": [], "y": []})
            s["x"].append(p.iteration if x_axis == "iter" else p.timestamp)
            s["y"].append(p.value)
        return out

    def get_last_scalar_metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        self.flush()
        return self._backend.get_last_scalars(self.id)

    def get_reported_console_output(self, number_of_reports: int = 1) -> list[str]:
        """The last lines of the console log (``number_of_reports`` x 100 lines at most)."""
        self.flush()
        lines = self._backend.get_log(self.id)
        return [ln.text for ln in lines[-max(1, number_of_reports) * 100 :]]

    def get_reported_plots(self) -> list[dict[str, Any]]:
        self.flush()
        return [
            {"metric": e.title, "variant": e.series, "iter": e.iteration, "plot_str": e.payload}
            for e in self._backend.get_events(self.id, "plot")
        ]

    # -- console and lifetime --------------------------------------------------------------------
    def _capture_console(self, which: bool | Mapping[str, bool]) -> None:
        logger = self.get_logger()
        want = dict(which) if isinstance(which, Mapping) else {"stdout": True, "stderr": True}
        if want.get("stdout", False) and not isinstance(sys.stdout, ConsoleCapture):
            cap = ConsoleCapture(sys.stdout, logger, "info")
            self._captures.append(cap)
            sys.stdout = cap
        if want.get("stderr", False) and not isinstance(sys.stderr, ConsoleCapture):
            cap = ConsoleCapture(sys.stderr, logger, "error")
            self._captures.append(cap)
            sys.stderr = cap

    def _release_console(self) -> None:
        for cap in self._captures:
            cap.flush_partial()
            if sys.stdout is cap:
                sys.stdout = cap.original
            if sys.stderr is cap:
                sys.stderr = cap.original
        self._captures = []

    def close(self) -> None:
        """End tracking in this process: flush everything; a task this process runs is marked
        completed (if still in progress)."""
        self._finish(None)

    def _finish(self, failure: str | None, status: TaskStatus | None = None) -> None:
        try:
            self.flush(wait_for_uploads=True)
        except StepLineError:
            pass
        self._release_console()
        if self._owned:
            self._owned = False
            try:
                current = self._backend.get_task(self.id).status
                if current == TaskStatus.in_progress:
                    if status is not None:
                        self._set_status(status, False, failure or "")
                    elif failure is None:
                        self.mark_completed()
                    else:
                        self.mark_failed(
                            status_reason=failure[-2000:], status_message="uncaught exception"
                        )
            except StepLineError as exc:
                stream = sys.__stderr__
                if stream is not None:
                    stream.write(f"stepline: could not finish task {self.id}: {exc}\n")
        with Task._current_lock:
            if Task._current is self:
                Task._current = None


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return ""


class _ExitHooks:
    """Ends the current task at process exit: completed, failed on an uncaught exception,
    stopped on SIGTERM."""

    def __init__(self) -> None:
        self.installed = False
        self.failure: str | None = None
        self.terminated = False
        self._orig_hook = sys.excepthook

    def install(self, task: Task) -> None:
        if self.installed:
            return
        self.installed = True
        self._orig_hook = sys.excepthook
        sys.excepthook = self._excepthook
        atexit.register(self._at_exit)
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                    signal.signal(signal.SIGTERM, self._on_sigterm)
            except (ValueError, OSError):
                pass

    def _excepthook(self, exc_type: Any, exc: BaseException, tb: Any) -> None:
        self.failure = "".join(traceback.format_exception(exc_type, exc, tb))
        self._orig_hook(exc_type, exc, tb)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.terminated = True
        raise SystemExit(128 + signum)

    def _at_exit(self) -> None:
        task = Task.current_task()
        if task is None:
            return
        if self.terminated:
            task._finish("terminated by SIGTERM", TaskStatus.stopped)
        else:
            task._finish(self.failure)


_exit_hooks = _ExitHooks()


class _ArgparseHook:
    """Connects what ``ArgumentParser.parse_args`` returns to the current task (section
    ``Args``); run from the store, the stored values replace the parsed ones. Installed when
    the SDK is imported, so arguments parsed before ``Task.init`` are connected by it."""

    def __init__(self) -> None:
        self.installed = False
        self.pending: list[argparse.Namespace] = []

    def patch(self) -> None:
        if self.installed:
            return
        self.installed = True
        original = argparse.ArgumentParser.parse_known_args
        hook = self

        def parse_known_args(
            parser: argparse.ArgumentParser, args: Any = None, namespace: Any = None
        ) -> Any:
            ns, rest = original(parser, args, namespace)
            current = Task.current_task()
            if current is None:
                if ns not in hook.pending:
                    hook.pending.append(ns)
            elif current._connect_args:
                current.connect(ns, name=ARGS_SECTION)
            return ns, rest

        argparse.ArgumentParser.parse_known_args = parse_known_args  # type: ignore[assignment,method-assign]

    def install(self, task: Task) -> None:
        task._connect_args = True
        pending, self.pending = self.pending, []
        for ns in pending:
            task.connect(ns, name=ARGS_SECTION)


_argparse_hook = _ArgparseHook()
_argparse_hook.patch()
