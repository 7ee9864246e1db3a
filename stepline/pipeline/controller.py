"""``PipelineController``: a DAG of steps made from existing tasks or from functions.

The controller is the user's handle: ``add_step`` / ``add_function_step`` / ``add_parameter``
build the graph (each call checks what it can at once, so mistakes surface before anything
runs); ``start_locally`` creates the pipeline's own task (type ``controller``: the DAG as the
configuration object ``Pipeline``, the arguments in section ``Args``, version and run number as
runtime properties) and hands the graph to the one ``Scheduler`` with an executor: child
processes (``run_pipeline_steps_locally=True``) or threads of this process (``in_process=True``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stepline.backend import Backend, get_backend
from stepline.core import params as pv
from stepline.core.errors import NotFoundError, StepLineError, ValidationError
from stepline.core.records import ConfigObject, NewTask, Param, TaskFilter, TaskRecord
from stepline.core.status import FINAL as TASK_FINAL
from stepline.core.status import TaskStatus, TaskTypes
from stepline.pipeline.actions import clone_run
from stepline.pipeline.code import build_step_code
from stepline.pipeline.dag import (
    FINAL,
    FunctionSpec,
    Node,
    NodeStatus,
    add_referenced_parents,
    check_node,
    descendants,
    validate,
)
from stepline.pipeline.executors import (
    Executor,
    InProcessExecutor,
    ProcessExecutor,
    QueueExecutor,
)
from stepline.pipeline.recovery import (
    RT_CONTROLLER,
    ResumePlan,
    controller_identity,
    heartbeat_values,
)
from stepline.pipeline.references import PIPELINE
from stepline.pipeline.run import RT_NODE, PipelineRun, describe_input, node_state
from stepline.pipeline.scheduler import Outcome, Outside, Scheduler
from stepline.pipeline.views import CONFIG_DAG, RT_DEFAULT_QUEUE, RT_NAME, RT_RUN, RT_VERSION
from stepline.sdk.script_info import add_git_info, script_info
from stepline.sdk.task import ARGS_SECTION, ENV_TASK_ID, Task, _user

RT_HASH = "_pipeline_hash"
DEFAULT_VERSION = "1.0.0"
_SEMVER = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class PipelineController:
    """A pipeline whose steps are stored tasks (cloned for each run) or functions."""

    _current: PipelineController | None = None
    _run_class: type[PipelineRun] = PipelineRun

    def __init__(
        self,
        name: str,
        project: str,
        version: str | None = None,
        pool_frequency: float = 0.2,
        add_pipeline_tags: bool = False,
        target_project: str | bool | None = True,
        auto_version_bump: bool | None = None,
        abort_on_failure: bool = False,
        add_run_number: bool = True,
        retry_on_failure: int | Callable[..., bool] | None = None,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        packages: str | Sequence[str] | None = None,
        repo: str | None = None,
        repo_branch: str | None = None,
        repo_commit: str | None = None,
        always_create_from_code: bool = True,
        artifact_serialization_function: Callable[[Any], bytes] | None = None,
        artifact_deserialization_function: Callable[[bytes], Any] | None = None,
        output_uri: str | bool | None = None,
        skip_global_imports: bool = False,
        working_dir: str | None = None,
        enable_local_imports: bool = True,
        max_workers: int | None = None,
        **_: Any,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ValidationError("PipelineController needs a name, e.g. name='training'")
        if not project or not isinstance(project, str):
            raise ValidationError("PipelineController needs a project, e.g. project='examples'")
        if version is not None and not _SEMVER.match(str(version)):
            raise ValidationError(
                f"pipeline version {version!r} is not a version like '1.0.2', '1.2' or '3'"
            )
        self._name = name
        self._project = project
        self._version = str(version) if version is not None else None
        self._add_pipeline_tags = add_pipeline_tags
        self._target_project = target_project
        self._abort_on_failure = abort_on_failure
        self._add_run_number = add_run_number
        self._retry_on_failure = retry_on_failure
        self._docker = docker or ""
        self._packages = packages
        self._skip_global_imports = skip_global_imports
        self._max_workers = max_workers
        self._nodes: dict[str, Node] = {}
        self._args: dict[str, Param] = {}
        self._default_queue: str | None = None
        self._time_limit: float | None = None
        self._tags: list[str] = []
        self._task: Task | None = None
        self._attach_to: str | None = None
        self._scheduler: Scheduler | None = None
        self._thread: threading.Thread | None = None
        self._outcome: Outcome | None = None
        self._started: float | None = None
        self._ended: float | None = None
        self._stop_marks: tuple[bool, bool] = (False, False)
        self._error: BaseException | None = None
        self._git_thread: threading.Thread | None = None
        #: the run's task is a child of this task (a pipeline used as a step of another)
        self._parent_task: str | None = None
        self._extra_runtime: dict[str, str] = {}
        #: why the run failed when its own logic (a decorator pipeline's function) raised
        self._logic_failure: str = ""
        #: the stored DAG holds each function step's source (a decorator pipeline's steps
        #: hold it on their tasks only: one component may run a thousand times)
        self._store_source = True
        self._script_kind = "pipeline"  #: how the runner reruns the run's task
        self._pipeline_run: PipelineRun | None = None
        self._from_code = always_create_from_code
        #: how this run's steps run: "local", "in_process" or "queue" (agents)
        self._steps_mode = "local"
        #: Args stored on the task this process was started to run (an agent runs the script
        #: of a queued or cloned pipeline): they win over the defaults in the code
        self._stored_args: dict[str, Param] = {}
        self._attach_to = _task_to_attach(name, project)
        if self._attach_to:
            self._stored_args = {
                p.name: p
                for p in get_backend().get_params(self._attach_to)
                if p.section == ARGS_SECTION
            }

    # -- properties ------------------------------------------------------------------------------
    @property
    def task(self) -> Task | None:
        return self._task

    @property
    def id(self) -> str | None:
        return self._task.id if self._task else None

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def tags(self) -> list[str]:
        return self._task.get_tags() if self._task else list(self._tags)

    def add_tags(self, tags: str | Sequence[str]) -> None:
        new = [tags] if isinstance(tags, str) else list(tags)
        self._tags.extend(new)
        if self._task is not None:
            self._task.add_tags(new)

    # -- defining --------------------------------------------------------------------------------
    def add_parameter(
        self,
        name: str,
        default: Any = None,
        description: str | None = None,
        param_type: str | type | None = None,
    ) -> None:
        """A pipeline argument (section ``Args``), referenced as ``${pipeline.NAME}``."""
        if not name or "/" in name or "." in name:
            raise ValidationError(
                f"pipeline parameter name {name!r} must be non-empty, without '/' or '.'"
            )
        param = Task._param(ARGS_SECTION, name, default, description or "", param_type)
        stored = self._stored_args.get(name)
        if stored is not None:  # a rerun with new values: the stored value, the code's type
            param = dataclasses.replace(param, value=stored.value, type=stored.type or param.type)
        self._args[name] = param

    def get_parameters(self) -> dict[str, Any]:
        """The pipeline's arguments {name: value}, with their types."""
        return {name: pv.decode(p.value, p.type) for name, p in self._args.items()}

    def set_default_execution_queue(self, default_execution_queue: str | None) -> None:
        self._default_queue = default_execution_queue

    def set_pipeline_execution_time_limit(self, max_execution_minutes: float | None) -> None:
        """Stop the run (and mark it failed) when it takes longer than this many minutes."""
        self._time_limit = (
            float(max_execution_minutes) * 60 if max_execution_minutes is not None else None
        )

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name) or name == PIPELINE:
            raise ValidationError(
                f"step name {name!r} must be letters, digits, '_', '-' or '.', not start with "
                "'-' or '.', and not be 'pipeline'"
            )
        if name in self._nodes:
            raise ValidationError(
                f"a step named {name!r} was already added to pipeline {self._name!r}; step "
                "names must be unique"
            )

    def _continue(
        self,
        node: Node,
        continue_on_fail: bool,
        continue_behaviour: Mapping[str, bool] | None,
    ) -> None:
        node.continue_on_fail = bool(continue_on_fail)
        if continue_behaviour:
            unknown = set(continue_behaviour) - {
                "continue_on_fail",
                "continue_on_abort",
                "skip_children_on_fail",
                "skip_children_on_abort",
            }
            if unknown:
                raise ValidationError(
                    f"step {node.name!r}: unknown continue_behaviour keys {sorted(unknown)}"
                )
            node.continue_on_fail = bool(
                continue_behaviour.get("continue_on_fail", node.continue_on_fail)
            )
            node.continue_on_abort = bool(continue_behaviour.get("continue_on_abort", False))
            node.skip_children_on_fail = bool(continue_behaviour.get("skip_children_on_fail", True))
            node.skip_children_on_abort = bool(
                continue_behaviour.get("skip_children_on_abort", True)
            )

    def _finish_node(self, node: Node, parents: Sequence[str] | None) -> bool:
        node.parents = list(dict.fromkeys(parents or []))
        add_referenced_parents(node)
        # the steps added before were checked then; the whole graph is checked at the start
        check_node({**self._nodes, node.name: node}, node, self._args)
        self._nodes[node.name] = node
        return True

    def add_step(
        self,
        name: str,
        base_task_id: str | None = None,
        parents: Sequence[str] | None = None,
        parameter_override: Mapping[str, Any] | None = None,
        configuration_overrides: Mapping[str, Any] | None = None,
        task_overrides: Mapping[str, Any] | None = None,
        execution_queue: str | None = None,
        monitor_metrics: Sequence[Any] | None = None,
        monitor_artifacts: Sequence[Any] | None = None,
        monitor_models: Sequence[Any] | None = None,
        time_limit: float | None = None,
        base_task_project: str | None = None,
        base_task_name: str | None = None,
        clone_base_task: bool = True,
        continue_on_fail: bool = False,
        pre_execute_callback: Callable[..., Any] | None = None,
        post_execute_callback: Callable[..., Any] | None = None,
        cache_executed_step: bool = False,
        base_task_factory: Callable[[Node], Any] | None = None,
        retry_on_failure: int | Callable[..., bool] | None = None,
        status_change_callback: Callable[..., Any] | None = None,
        recursively_parse_parameters: bool = False,
        output_uri: str | bool | None = None,
        continue_behaviour: Mapping[str, bool] | None = None,
        stage: str | None = None,
        **_: Any,
    ) -> bool:
        """Add a step that clones a stored task (``base_task_id``, or ``base_task_project`` +
        ``base_task_name``, or ``base_task_factory(node)`` at launch) and runs the clone with
        ``parameter_override`` ({"Section/key": value, "${...}" references allowed})."""
        self._check_name(name)
        if base_task_factory is None:
            if not base_task_id:
                if not (base_task_project and base_task_name):
                    raise ValidationError(
                        f"step {name!r} needs base_task_id, base_task_project and "
                        "base_task_name, or base_task_factory"
                    )
                try:
                    base = Task.get_task(project_name=base_task_project, task_name=base_task_name)
                except NotFoundError:
                    raise NotFoundError(
                        f"step {name!r}: no task named {base_task_name!r} in project "
                        f"{base_task_project!r} to use as its base task; run that script once "
                        "(or create it with Task.create)"
                    ) from None
                base_task_id = base.id
            else:
                get_backend().get_task(base_task_id)
        overrides = dict(parameter_override or {})
        for key in overrides:
            if not isinstance(key, str) or "/" not in key or key.startswith("/"):
                raise ValidationError(
                    f"step {name!r}: parameter_override key {key!r} needs a section, e.g. "
                    f"'General/{key}' or 'Args/{key}'"
                )
        node = Node(
            name=name,
            base_task_id=base_task_id,
            task_factory_func=base_task_factory,
            queue=execution_queue,
            timeout=float(time_limit) if time_limit else None,
            parameters=overrides,
            configurations=dict(configuration_overrides or {}),
            task_overrides=dict(task_overrides or {}),
            clone_task=clone_base_task,
            cache_executed_step=cache_executed_step,
            monitor_metrics=list(monitor_metrics or []),
            monitor_artifacts=list(monitor_artifacts or []),
            monitor_models=list(monitor_models or []),
            pre_execute_callback=pre_execute_callback,
            post_execute_callback=post_execute_callback,
            status_change_callback=status_change_callback,
            retry_on_failure=retry_on_failure,
            stage=stage,
            job_type="task",
        )
        self._continue(node, continue_on_fail, continue_behaviour)
        return self._finish_node(node, parents)

    def add_function_step(
        self,
        name: str,
        function: Callable[..., Any],
        function_kwargs: Mapping[str, Any] | None = None,
        function_return: Sequence[str] | None = None,
        project_name: str | None = None,
        task_name: str | None = None,
        task_type: str | None = None,
        auto_connect_frameworks: Any = None,
        auto_connect_arg_parser: Any = None,
        packages: str | Sequence[str] | None = None,
        repo: str | None = None,
        repo_branch: str | None = None,
        repo_commit: str | None = None,
        helper_functions: Sequence[Callable[..., Any]] | None = None,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        parents: Sequence[str] | None = None,
        execution_queue: str | None = None,
        monitor_metrics: Sequence[Any] | None = None,
        monitor_artifacts: Sequence[Any] | None = None,
        monitor_models: Sequence[Any] | None = None,
        time_limit: float | None = None,
        continue_on_fail: bool = False,
        pre_execute_callback: Callable[..., Any] | None = None,
        post_execute_callback: Callable[..., Any] | None = None,
        cache_executed_step: bool = False,
        retry_on_failure: int | Callable[..., bool] | None = None,
        status_change_callback: Callable[..., Any] | None = None,
        tags: str | Sequence[str] | None = None,
        output_uri: str | bool | None = None,
        draft: bool = False,
        working_dir: str | None = None,
        continue_behaviour: Mapping[str, bool] | None = None,
        stage: str | None = None,
        **_: Any,
    ) -> bool:
        """Add a step that runs ``function(**function_kwargs)`` as a task of its own. Its code
        (with helper functions, the module's imports and the constants it reads) is stored
        on the task. ``"${step.return_name}"`` in ``function_kwargs`` passes another function
        step's return value; returns named in ``function_return`` become parameters
        ``return/NAME`` (basic values) or artifacts."""
        self._check_name(name)
        code = build_step_code(function, helper_functions or (), self._skip_global_imports)
        kwargs = dict(function_kwargs or {})
        accepted = {p.name for p in code.parameters}
        takes_any = any(p.kind == p.VAR_KEYWORD for p in code.parameters)
        unknown = [k for k in kwargs if k not in accepted]
        if unknown and not takes_any:
            raise ValidationError(
                f"step {name!r}: {code.function_name}() takes no argument(s) "
                f"{', '.join(unknown)} (it takes {', '.join(sorted(accepted)) or 'none'})"
            )
        for p in code.parameters:
            basic = isinstance(p.default, (bool, int, float, str)) or p.default is None
            if p.name not in kwargs and p.default is not p.empty and basic:
                kwargs[p.name] = p.default
        missing = [
            p.name
            for p in code.parameters
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in kwargs
        ]
        if missing:
            raise ValidationError(
                f"step {name!r}: function_kwargs lacks {', '.join(missing)}, which "
                f"{code.function_name}() needs"
            )
        returns = [function_return] if isinstance(function_return, str) else function_return
        pkgs = _packages(packages if packages is not None else self._packages)
        node = Node(
            name=name,
            function=FunctionSpec(
                function_name=code.function_name,
                source=code.source,
                kwargs=kwargs,
                returns=[str(r) for r in (returns or [])],
                module_dir=code.module_dir,
                entry_point=code.entry_point,
                packages=pkgs,
                task_type=str(TaskTypes(task_type or TaskTypes.data_processing)),
                project_name=project_name,
                task_name=task_name,
                docker=docker or self._docker,
                tags=[tags] if isinstance(tags, str) else list(tags or []),
            ),
            queue=execution_queue,
            timeout=float(time_limit) if time_limit else None,
            cache_executed_step=cache_executed_step,
            monitor_metrics=list(monitor_metrics or []),
            monitor_artifacts=list(monitor_artifacts or []),
            monitor_models=list(monitor_models or []),
            pre_execute_callback=pre_execute_callback,
            post_execute_callback=post_execute_callback,
            status_change_callback=status_change_callback,
            retry_on_failure=retry_on_failure,
            return_artifacts=[str(r) for r in (returns or [])],
            stage=stage,
            job_type="function",
            explicit_docker_image=docker,
        )
        self._continue(node, continue_on_fail, continue_behaviour)
        return self._finish_node(node, parents)

    def force_recompute(self, *step_names: str) -> None:
        """Run these steps and everything downstream of them even if their cache matches."""
        for name in step_names:
            if name not in self._nodes:
                raise ValidationError(f"force_recompute: no step named {name!r}")
        for name in descendants(self._nodes, step_names):
            self._nodes[name].force_recompute = True

    # -- the DAG as stored data ------------------------------------------------------------------
    def _dag_nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def _dag_config(self) -> dict[str, Any]:
        nodes = {}
        for node in self._dag_nodes():
            entry: dict[str, Any] = {
                "parents": node.parents,
                "base_task_id": node.base_task_id,
                "queue": node.queue or self._default_queue,
                "parameters": node.parameters,
                "configurations": node.configurations,
                "task_overrides": node.task_overrides,
                "time_limit": node.timeout,
                "cache_executed_step": node.cache_executed_step,
                "clone_task": node.clone_task,
                "continue_on_fail": node.continue_on_fail,
                "continue_on_abort": node.continue_on_abort,
                "skip_children_on_fail": node.skip_children_on_fail,
                "skip_children_on_abort": node.skip_children_on_abort,
                "monitor_metrics": node.monitor_metrics,
                "monitor_artifacts": node.monitor_artifacts,
                "monitor_models": node.monitor_models,
                "retry_on_failure": node.retry_on_failure
                if isinstance(node.retry_on_failure, int)
                else None,
                "stage": node.stage,
                "job_type": node.job_type,
            }
            if node.function is not None:
                spec = node.function
                fs = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
                fs["kwargs"] = {k: describe_input(v) for k, v in spec.kwargs.items()}
                if not self._store_source:
                    del fs["source"]
                entry["function"] = fs
            nodes[node.name] = entry
        return {"name": self._name, "project": self._project, "nodes": nodes}

    def _definition_hash(self, dag: Mapping[str, Any]) -> str:
        body = {"dag": dag, "args": {n: [p.value, p.type] for n, p in self._args.items()}}
        text = json.dumps(body, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    # -- running ---------------------------------------------------------------------------------
    def start(
        self,
        queue: str = "services",
        step_task_created_callback: Callable[..., Any] | None = None,
        step_task_completed_callback: Callable[..., Any] | None = None,
        wait: bool = True,
    ) -> bool:
        """Send the pipeline to an agent of ``queue``: its task is stored (DAG, arguments,
        code) and queued, and this process exits, as in the reference. The agent runs the
        controller, whose steps go to their ``execution_queue`` or the default queue. Run by
        an agent, this runs the pipeline here with its steps on queues."""
        if self._attach_to:
            return self._run(
                self._queue_executor(),
                wait=wait,
                created_cb=step_task_created_callback,
                completed_cb=step_task_completed_callback,
            )
        record = self._enqueue_self(queue)
        print(
            f"stepline: pipeline {self._name!r} queued on {queue!r} as task {record.id}; an "
            f"agent runs it (stepline agent --queue {queue}); follow it with: stepline "
            f"pipelines show {record.id}"
        )
        raise SystemExit(0)

    def _enqueue_self(self, queue: str) -> TaskRecord:
        """Store this pipeline as a draft controller task that reruns this script, and queue
        it."""
        if not self._nodes and self._script_kind == "pipeline":
            raise ValidationError(f"pipeline {self._name!r} has no steps; add some first")
        validate(self._nodes, self._args)
        backend = get_backend()
        self._steps_mode = "queue"
        record = self._create_task(backend, draft=True)
        self._task = Task(record, backend)
        return backend.enqueue(record.id, queue)

    def _queue_executor(self) -> Executor:
        self._steps_mode = "queue"
        return QueueExecutor(get_backend(), self._default_queue)

    def start_locally(
        self,
        run_pipeline_steps_locally: bool = False,
        step_task_created_callback: Callable[..., Any] | None = None,
        step_task_completed_callback: Callable[..., Any] | None = None,
        wait: bool = True,
        in_process: bool = False,
        max_workers: int | None = None,
    ) -> bool:
        """Run the pipeline's logic in this process. With ``run_pipeline_steps_locally=True``
        each step runs in a child process of this machine (independent steps in parallel, at
        most ``max_workers`` at once, default: the CPU count); ``in_process=True`` calls the
        function steps in threads of this process instead; otherwise the steps go to queues
        (their ``execution_queue`` or the default queue) and agents run them. Returns whether
        the run succeeded (with ``wait=False`` it returns at once; use ``wait()``)."""
        workers = max_workers or self._max_workers
        executor: Executor
        if in_process:
            self._steps_mode = "in_process"
            executor = InProcessExecutor(workers)
        elif run_pipeline_steps_locally:
            self._steps_mode = "local"
            executor = ProcessExecutor(workers)
        else:
            executor = self._queue_executor()
        return self._run(
            executor,
            wait=wait,
            created_cb=step_task_created_callback,
            completed_cb=step_task_completed_callback,
        )

    def _run(
        self,
        executor: Executor,
        *,
        wait: bool,
        created_cb: Callable[..., Any] | None = None,
        completed_cb: Callable[..., Any] | None = None,
        dynamic: bool = False,
    ) -> bool:
        """Start the run in a background thread. ``dynamic``: steps are added while it runs
        (``self._scheduler.add_node``) until ``self._scheduler.close()``."""
        if self._thread is not None:
            executor.shutdown()
            raise StepLineError(
                f"pipeline {self._name!r} was already started; make a new PipelineController "
                "for another run"
            )
        if not self._nodes and not dynamic:
            executor.shutdown()
            raise ValidationError(f"pipeline {self._name!r} has no steps; add some first")
        try:
            validate(self._nodes, self._args)
            backend = get_backend()
            record = self._create_task(backend)
        except BaseException:
            executor.shutdown()
            raise
        self._task = Task(record, backend)
        run = self._run_class(
            backend=backend,
            pipeline=self,
            task=record,
            nodes=self._nodes,
            args=self.get_parameters(),
            step_project=self._step_project(),
            pipeline_name=self._pipeline_key(),
            add_pipeline_tags=self._add_pipeline_tags,
            retry_on_failure=self._retry_on_failure,
            start_in_progress=isinstance(executor, InProcessExecutor),
            step_task_created_callback=created_cb,
            step_task_completed_callback=completed_cb,
            adopt_running=isinstance(executor, QueueExecutor),
            # only a stored run this process was started for can be a resume
            plan=ResumePlan.of(backend.get_runtime(record.id)) if self._attach_to else None,
        )
        self._started = time.time()
        PipelineController._current = self
        if isinstance(executor, QueueExecutor):
            executor.log = run.log
        scheduler = Scheduler(
            self._nodes,
            executor,
            run,
            abort_on_failure=self._abort_on_failure,
            time_limit=self._time_limit,
            dynamic=dynamic,
            on_error=self._callback_error,
            look=lambda running: look_outside(backend, record.id, running),
        )
        self._scheduler = scheduler
        self._pipeline_run = run
        self._thread = threading.Thread(
            target=self._drive, args=(run, scheduler, executor), name="stepline-pipeline",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        if dynamic or not wait:
            return True
        try:
            self._thread.join()
        except KeyboardInterrupt:
            scheduler.stop("interrupted (Ctrl-C)")
            self._thread.join()
            raise
        if self._error is not None:
            raise self._error
        return self.is_successful()

    def _callback_error(self, node: Node, exc: BaseException) -> None:
        note = f"a callback of step {node.name!r} raised {type(exc).__name__}: {exc}"
        node.status_message = note
        if self._scheduler is not None:
            self._scheduler.stop(note, failed=True)

    def _drive(self, run: PipelineRun, scheduler: Scheduler, executor: Executor) -> None:
        backend = run.backend
        task_id = run.task.id
        status, reason = TaskStatus.failed, ""
        try:
            run.prepare_inputs()
            outcome = scheduler.run()
            self._outcome = outcome
            if outcome.aborted:
                status, reason = TaskStatus.stopped, outcome.reason
            elif outcome.failed:
                status, reason = TaskStatus.failed, outcome.reason
            else:
                status = TaskStatus.completed
        except BaseException as exc:
            self._error = exc
            self._outcome = Outcome(failed=True, reason=f"the controller failed: {exc}")
            status, reason = TaskStatus.failed, self._outcome.reason
            for node in self._nodes.values():
                if node.status not in FINAL:
                    node.status = NodeStatus.aborted if node.executed else NodeStatus.skipped
        finally:
            executor.shutdown()
            if self._git_thread is not None:
                self._git_thread.join()
            self._ended = time.time()
            mark_failed, mark_aborted = self._stop_marks
            if self._logic_failure:
                status, reason = TaskStatus.failed, self._logic_failure
            elif mark_failed:
                status = TaskStatus.failed
            elif mark_aborted:
                status = TaskStatus.stopped
            try:
                run.log(f"pipeline {status.value}" + (f": {reason}" if reason else ""))
                run.close()
                if self._task is not None:  # reports made through get_logger() here
                    self._task.flush(wait_for_uploads=True)
                backend.set_runtime(task_id, {"progress": "100"})
                # a run ended from outside (aborted) keeps the status and reason given there
                if backend.get_task(task_id).status not in TASK_FINAL:
                    backend.set_status(
                        task_id, status, message=reason[:200], reason=reason, force=True
                    )
            except StepLineError as exc:
                self._error = self._error or exc

    def _step_project(self) -> str:
        if isinstance(self._target_project, str) and self._target_project:
            return self._target_project
        return self._project

    def _pipeline_key(self) -> str:
        return f"{self._project.strip('/')}/{self._name}"

    def _create_task(self, backend: Backend, draft: bool = False) -> TaskRecord:
        dag = self._dag_config()
        digest = self._definition_hash(dag)
        previous = backend.find_tasks(
            TaskFilter(
                type=[str(TaskTypes.controller)],
                runtime={RT_NAME: self._pipeline_key()},
                archived=None,
                order_by="-created",
                limit=2,
            )
        )
        previous = [r for r in previous if r.id != self._attach_to][:1]
        last_rt = backend.get_runtime(previous[0].id) if previous else {}
        if self._version is None:
            last_version = last_rt.get(RT_VERSION)
            if not last_version:
                self._version = DEFAULT_VERSION
            elif last_rt.get(RT_HASH) == digest:
                self._version = last_version
            else:
                self._version = bump_version(last_version)
        run_number = int(last_rt.get(RT_RUN, "0") or 0) + 1
        name = self._name
        if self._add_run_number and run_number > 1:
            name = f"{self._name} #{run_number}"
        runtime = {
            RT_VERSION: self._version,
            RT_HASH: digest,
            RT_NAME: self._pipeline_key(),
            RT_RUN: str(run_number),
            "progress": "0",
            RT_DEFAULT_QUEUE: self._default_queue or "",
            **self._extra_runtime,
        }
        runtime.update({RT_NODE + n: json.dumps(node_state(v)) for n, v in self._nodes.items()})
        if not draft:  # this process runs it from now on (see recovery)
            runtime[RT_CONTROLLER] = controller_identity()
            runtime.update(heartbeat_values())
        # git takes a few subprocesses: recorded by a thread while the run starts
        script = script_info(with_packages=False, with_git=False)
        script["kind"] = self._script_kind
        script["steps"] = self._steps_mode
        if draft and self._from_code:  # the agent reruns this script, which builds the DAG
            script["from_code"] = True
        if self._attach_to:
            backend.set_params(self._attach_to, list(self._args.values()))
            backend.set_configs(
                self._attach_to, [ConfigObject(CONFIG_DAG, json.dumps(dag), "json")]
            )
            backend.set_runtime(self._attach_to, runtime)
            if self._parent_task is None:  # a rerun: named as runs are numbered
                backend.update_task(self._attach_to, name=name)
            rec = backend.get_task(self._attach_to)
            if rec.status != TaskStatus.in_progress:
                rec = backend.set_status(self._attach_to, TaskStatus.in_progress)
            return rec
        record = backend.create_task(
            NewTask(
                name=name,
                project=self._project,
                type=str(TaskTypes.controller),
                status=TaskStatus.created if draft else TaskStatus.in_progress,
                tags=sorted(set(["pipeline", *self._tags])),
                script=script,
                params=list(self._args.values()),
                configs=[ConfigObject(CONFIG_DAG, json.dumps(dag), "json")],
                runtime=runtime,
                user=_user(),
                parent=self._parent_task,
            )
        )
        self._git_thread = threading.Thread(
            target=self._record_git, args=(backend, record.id, script), daemon=True
        )
        self._git_thread.start()
        return record

    def _record_git(self, backend: Backend, task_id: str, script: dict[str, Any]) -> None:
        try:
            backend.update_task(task_id, script=add_git_info(dict(script)))
        except StepLineError:
            pass

    # -- watching and stopping -------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run ends (``timeout`` in minutes); True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(None if timeout is None else float(timeout) * 60)
        return not self._thread.is_alive()

    def stop(
        self, timeout: float | None = None, mark_failed: bool = False, mark_aborted: bool = False
    ) -> None:
        """Stop a running pipeline: running steps are killed (their tasks end ``stopped``) and
        pending ones skipped. The pipeline's task ends failed with ``mark_failed``, stopped
        with ``mark_aborted``, else as its steps decide."""
        self._stop_marks = (mark_failed, mark_aborted)
        if self._scheduler is not None and self.is_running():
            self._scheduler.stop("stopped by the user", failed=mark_failed)
        self.wait(timeout)

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def is_successful(self, fail_on_step_fail: bool = True, fail_condition: str = "all") -> bool:
        """True when the run ended and nothing failed. ``fail_condition``: 'all' (a failed or
        aborted step or run), 'failed' (failed only) or 'aborted' (aborted only). Cached steps
        count as succeeded."""
        if self.is_running() or self._outcome is None:
            return False
        if fail_condition not in ("all", "failed", "aborted"):
            raise ValidationError("fail_condition must be 'all', 'failed' or 'aborted'")
        out = self._outcome
        bad_status = {"all": (NodeStatus.failed, NodeStatus.aborted),
                      "failed": (NodeStatus.failed,),
                      "aborted": (NodeStatus.aborted,)}[fail_condition]  # fmt: skip
        if fail_condition in ("all", "failed") and out.failed and not out.aborted:
            return False
        if fail_condition in ("all", "aborted") and out.aborted:
            return False
        if fail_on_step_fail:
            for node in self._nodes.values():
                if node.status in bad_status and not (
                    node.continue_on_fail if node.status == NodeStatus.failed
                    else node.continue_on_abort
                ):  # fmt: skip
                    return False
        return True

    def elapsed(self) -> float:
        """Minutes since the run started (-1 before it started)."""
        if self._started is None:
            return -1.0
        return ((self._ended or time.time()) - self._started) / 60.0

    def get_pipeline_dag(self) -> dict[str, Node]:
        return dict(self._nodes)

    def get_processed_nodes(self) -> list[Node]:
        return [n for n in self._nodes.values() if n.status in FINAL]

    def get_running_nodes(self) -> list[Node]:
        return [n for n in self._nodes.values() if n.status in (NodeStatus.running,
                                                                  NodeStatus.queued)]  # fmt: skip

    def update_execution_plot(self) -> None:
        """The DAG and each step's state are recorded as they change; nothing to do."""

    # -- stored pipelines ------------------------------------------------------------------------
    @classmethod
    def get(
        cls,
        pipeline_id: str | None = None,
        pipeline_project: str | None = None,
        pipeline_name: str | None = None,
        pipeline_version: str | None = None,
        pipeline_tags: Sequence[str] | None = None,
        shallow_search: bool = False,
    ) -> PipelineController:
        """A stored pipeline run: by id, or the newest run of the highest version of the
        pipeline ``pipeline_project/pipeline_name`` (optionally of ``pipeline_version``, with
        ``pipeline_tags``)."""
        backend = get_backend()
        if pipeline_id:
            return stored_pipeline(_controller_record(pipeline_id))
        if not pipeline_name:
            raise ValidationError("PipelineController.get needs pipeline_id or pipeline_name")
        runtime = {RT_NAME: f"{(pipeline_project or '').strip('/')}/{pipeline_name}"}
        if pipeline_project is None:
            runtime = {}
        records = backend.find_tasks(
            TaskFilter(
                type=[str(TaskTypes.controller)],
                runtime=runtime or None,
                tags=list(pipeline_tags) if pipeline_tags else None,
                order_by="-created",
            )
        )
        best: tuple[tuple[int, ...], float, TaskRecord] | None = None
        for rec in records:
            rt = backend.get_runtime(rec.id)
            key = rt.get(RT_NAME, "")
            if not runtime and key.rsplit("/", 1)[-1] != pipeline_name:
                continue
            version = rt.get(RT_VERSION) or DEFAULT_VERSION
            if pipeline_version is not None and version != str(pipeline_version):
                continue
            m = _SEMVER.match(version)
            rank = tuple(int(x or 0) for x in m.groups()) if m else (0,)
            if best is None or (rank, rec.created) > (best[0], best[1]):
                best = (rank, rec.created, rec)
        if best is None:
            where = f"{pipeline_project}/{pipeline_name}" if pipeline_project else pipeline_name
            raise NotFoundError(
                f"no stored run of pipeline {where!r}"
                + (f" version {pipeline_version}" if pipeline_version else "")
                + "; see `stepline pipelines list`"
            )
        return stored_pipeline(best[2])

    @classmethod
    def clone(
        cls,
        pipeline_controller: PipelineController | Task | str,
        name: str | None = None,
        comment: str | None = None,
        parent: str | None = None,
        project: str | None = None,
        version: str | None = None,
    ) -> PipelineController:
        """A draft copy of a stored pipeline run (its DAG, arguments and code), to change
        (``pipe.task.set_parameters({"Args/x": 1})``) and ``enqueue``."""
        source = _controller_record(pipeline_controller)
        record = clone_run(
            get_backend(), source.id, name=name, comment=comment, parent=parent,
            project=project, version=version,
        )  # fmt: skip
        return stored_pipeline(record)

    @classmethod
    def enqueue(
        cls,
        pipeline_controller: PipelineController | Task | str,
        queue_name: str | None = None,
        queue_id: str | None = None,
        force: bool = False,
    ) -> Any:
        """Queue a stored (draft) pipeline for an agent; ``queue_name`` defaults to
        ``services``."""
        record = _controller_record(pipeline_controller)
        return Task.enqueue(
            record.id, queue_name=queue_name or (None if queue_id else "services"),
            queue_id=queue_id, force=force,
        )  # fmt: skip

    @classmethod
    def resume(
        cls,
        pipeline_controller: PipelineController | Task | str,
        from_step: str | None = None,
        step_args: Mapping[str, Any] | None = None,
        queue_name: str | None = None,
        wait: bool = True,
    ) -> Task:
        """Run a failed, aborted or interrupted run again as a new attempt, a run linked to it
        that reuses every step it completed (whatever their cache setting) and runs the others
        with the same arguments. ``from_step`` re-executes that step and everything downstream
        of it, with ``step_args`` as new values of that step's arguments. The attempt is
        queued on ``queue_name`` for an agent, else run here in a process of its own
        (``wait=False`` returns once it started). Returns the attempt's task."""
        import subprocess
        import sys

        from stepline.pipeline.recovery import resume_run

        backend = get_backend()
        source = _controller_record(pipeline_controller)
        values = {
            k: v if isinstance(v, str) else pv.encode(v)[0] for k, v in (step_args or {}).items()
        }
        record = resume_run(
            backend, source.id, from_step=from_step, values=values, queue=queue_name
        )
        task = Task(record, backend)
        if queue_name is None:
            proc = subprocess.Popen([sys.executable, "-m", "stepline.runner", record.id])
            if wait:
                proc.wait()
                task.reload()
        elif wait:
            task.wait_for_status(
                status=[str(s) for s in TASK_FINAL], raise_on_status=(), check_interval_sec=0.2
            )
        return task

    # -- from inside a step ----------------------------------------------------------------------
    @classmethod
    def _pipeline_task(cls) -> Task:
        current = Task.current_task()
        if current is None:
            if cls._current is not None and cls._current._task is not None:
                return cls._current._task
            raise StepLineError(
                "PipelineController.get_logger()/upload_artifact() work inside a pipeline "
                "step or the controller; no pipeline is running here"
            )
        if current.task_type == str(TaskTypes.controller):
            return current
        pipe_id = current.get_runtime_properties().get("_pipeline_id")
        if not pipe_id:
            raise StepLineError(f"task {current.id} is not a step of a pipeline")
        cached = getattr(current, "_pipeline_task", None)
        if cached is None or cached.id != pipe_id:
            cached = Task.get_task(task_id=pipe_id)
            current._pipeline_task = cached  # type: ignore[attr-defined]
        return cached

    @classmethod
    def get_logger(cls) -> Any:
        """The logger of the running pipeline's task (from a step or the controller)."""
        return cls._pipeline_task().get_logger()

    @classmethod
    def upload_artifact(
        cls, name: str, artifact_object: Any, metadata: Mapping[str, Any] | None = None,
        delete_after_upload: bool = False, auto_pickle: bool = True, preview: Any = None,
        wait_on_upload: bool = False, serialization_function: Any = None,
    ) -> bool:  # fmt: skip
        """Store an artifact on the running pipeline's task."""
        return cls._pipeline_task().upload_artifact(
            name, artifact_object, metadata=metadata, delete_after_upload=delete_after_upload,
            auto_pickle=auto_pickle, preview=preview, wait_on_upload=wait_on_upload,
            serialization_function=serialization_function,
        )  # fmt: skip

    @classmethod
    def upload_model(
        cls, model_name: str, model_local_path: str, upload_uri: str | None = None
    ) -> Any:
        """Store a model file on the running pipeline's task (as an artifact and an output
        model record of that name)."""
        from pathlib import Path

        from stepline.core.ids import new_id
        from stepline.core.records import ModelRecord

        task = cls._pipeline_task()
        task.upload_artifact(model_name, Path(model_local_path), wait_on_upload=True)
        rec = task.artifacts[model_name].record
        return task._backend.add_model(
            ModelRecord(id=new_id(), task_id=task.id, name=model_name, url=rec.url)
        )


def bump_version(version: str) -> str:
    m = _SEMVER.match(version or "")
    if not m:
        return DEFAULT_VERSION
    major, minor, patch = (int(x) if x is not None else 0 for x in m.groups())
    return f"{major}.{minor}.{patch + 1}"


def _packages(packages: str | Sequence[str] | None) -> list[str]:
    if packages is None:
        return []
    if isinstance(packages, str):
        if os.path.isfile(packages):
            with open(packages) as fh:
                return [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        return [packages]
    return [str(p) for p in packages]


def look_outside(backend: Backend, run_id: str, running: Sequence[str]) -> Outside:
    """The scheduler's look at the store (one read): whether the run's task has ended, and
    which of its ``running`` step tasks were stopped, by someone else."""
    seen = Outside()
    for rec in backend.find_tasks(TaskFilter(ids=[run_id, *running], archived=None)):
        why = rec.status_reason or rec.status_message
        if rec.id == run_id:
            if rec.status in TASK_FINAL:
                seen.run = (rec.status, why)
        elif rec.status == TaskStatus.stopped:
            seen.steps[rec.id] = why
    return seen


def run_stored_pipeline(task_id: str) -> int:
    """Run a stored pipeline task (a clone of an earlier run, or a pipeline used as a step of
    another pipeline) from its stored DAG, with its stored arguments."""
    record = get_backend().get_task(task_id)
    pipe = stored_pipeline(record)
    pipe._task = None
    pipe._attach_to = task_id
    mode = (record.script or {}).get("steps") or "local"
    if mode == "queue":
        ok = pipe.start()
    else:
        ok = pipe.start_locally(run_pipeline_steps_locally=True, in_process=mode == "in_process")
    return 0 if ok else 1


def _task_to_attach(name: str, project: str) -> str | None:
    """The stored controller task this process was started to run (``STEPLINE_TASK_ID``),
    when it is a run of the pipeline ``project/name``."""
    task_id = os.environ.get(ENV_TASK_ID)
    if not task_id:
        return None
    backend = get_backend()
    try:
        record = backend.get_task(task_id)
    except NotFoundError:
        return None
    if record.type != str(TaskTypes.controller):
        return None
    configs = {c.name: c.value for c in backend.get_configs(task_id)}
    try:
        dag = json.loads(configs.get(CONFIG_DAG) or "{}")
    except ValueError:
        dag = {}
    if dag.get("name") not in (None, name) or dag.get("project") not in (None, project):
        return None
    return task_id


def _controller_record(pipeline_controller: Any) -> TaskRecord:
    backend = get_backend()
    if isinstance(pipeline_controller, PipelineController):
        if pipeline_controller.id is None:
            raise ValidationError("this PipelineController has no stored run yet")
        return backend.get_task(pipeline_controller.id)
    if isinstance(pipeline_controller, Task):
        return pipeline_controller.data
    return backend.get_task(str(pipeline_controller))


def stored_pipeline(record: TaskRecord) -> PipelineController:
    """The pipeline a stored run holds: its task, arguments and DAG (from the configuration
    object ``Pipeline``)."""
    backend = get_backend()
    configs = {c.name: c.value for c in backend.get_configs(record.id)}
    if CONFIG_DAG not in configs:
        raise ValidationError(
            f"task {record.id} holds no pipeline (no configuration {CONFIG_DAG!r})"
        )
    dag = json.loads(configs[CONFIG_DAG])
    pipe = PipelineController(
        name=dag.get("name") or record.name,
        project=dag.get("project") or record.project,
        version=backend.get_runtime(record.id).get(RT_VERSION) or None,
    )
    pipe._attach_to = None
    pipe._task = Task(record, backend)
    for p in backend.get_params(record.id):
        if p.section == ARGS_SECTION:
            pipe._args[p.name] = p
    for name, entry in dag.get("nodes", {}).items():
        node = Node(
            name=name,
            base_task_id=entry.get("base_task_id"),
            parents=list(entry.get("parents") or []),
            queue=entry.get("queue"),
            timeout=entry.get("time_limit"),
            parameters=dict(entry.get("parameters") or {}),
            configurations=dict(entry.get("configurations") or {}),
            task_overrides=dict(entry.get("task_overrides") or {}),
            cache_executed_step=bool(entry.get("cache_executed_step")),
            clone_task=entry.get("clone_task", True),
            continue_on_fail=bool(entry.get("continue_on_fail")),
            continue_on_abort=bool(entry.get("continue_on_abort")),
            skip_children_on_fail=entry.get("skip_children_on_fail", True),
            skip_children_on_abort=entry.get("skip_children_on_abort", True),
            monitor_metrics=list(entry.get("monitor_metrics") or []),
            monitor_artifacts=list(entry.get("monitor_artifacts") or []),
            monitor_models=list(entry.get("monitor_models") or []),
            retry_on_failure=entry.get("retry_on_failure"),
            stage=entry.get("stage"),
            job_type=entry.get("job_type"),
        )
        fn = entry.get("function")
        if fn and "source" in fn:  # a decorator's DAG keeps step code on the step tasks only
            node.function = FunctionSpec(**fn)
        pipe._nodes[name] = node
    return pipe
