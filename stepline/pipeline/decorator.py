"""``PipelineDecorator``: pipelines written as plain Python functions.

``@PipelineDecorator.component`` makes a function a step; ``@PipelineDecorator.pipeline`` makes
a function the pipeline's logic. Calling the pipeline function creates the pipeline's task and
starts the one ``Scheduler`` in dynamic mode; the logic then runs in the calling thread, and
each component call adds a node to the running scheduler and returns at once:

* the result is a ``LazyResult`` proxy. Passed to another component it becomes that step's
  input by reference (the new step waits for the old one, and nothing is downloaded here);
  used in the logic (an attribute, an operator, ``bool``, ``str``, iteration, ...) it waits
  for its step and loads the value;
* independent calls therefore run in parallel, as far as the executor's workers allow;
* the DAG grows as the code runs (loops, ``if`` on results) and is stored as it grows.

A component called inside another component's run becomes a nested step (``CALLER_NAME``):
it runs at once, in the caller's process, as a task of its own, and appears in the DAG. A
pipeline function called inside another pipeline's logic becomes one step of it, whose task is
the inner pipeline's own task.

Modes: ``debug_pipeline()`` runs the steps in threads of this process, calling the user's own
function objects (breakpoints work), ``run_locally()`` runs each step's stored code in a
process of its own. Both go through the same scheduler, runner, cache and store.
"""

from __future__ import annotations

import functools
import inspect
import json
import operator
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from stepline.backend import Backend, get_backend
from stepline.core import params as pv
from stepline.core.errors import ArtifactNotFoundError, StepLineError, ValidationError
from stepline.core.records import ConfigObject, NewTask, Param
from stepline.core.status import TaskStatus, TaskTypes
from stepline.pipeline import runner
from stepline.pipeline.cache import cache_key, cache_parts
from stepline.pipeline.code import StepCode, build_step_code
from stepline.pipeline.controller import _NAME, CONFIG_DAG, PipelineController, _packages
from stepline.pipeline.dag import FINAL, SUCCEEDED, FunctionSpec, Node, NodeStatus
from stepline.pipeline.executors import Executor, InProcessExecutor, ProcessExecutor
from stepline.pipeline.references import PIPELINE, Ref
from stepline.pipeline.run import (
    RT_CACHE_KEY,
    RT_CACHE_PARTS,
    RT_NODE,
    RT_PIPELINE,
    RT_PIPELINE_NAME,
    RT_STEP,
    ArtifactInput,
    PipelineRun,
    find_cached,
    function_script,
    is_param_value,
    node_state,
)
from stepline.pipeline.scheduler import Launch
from stepline.pipeline.views import last_line
from stepline.sdk.artifacts import Artifact
from stepline.sdk.task import ARGS_SECTION, Task

#: runtime property of a step task: the nested steps its component called (JSON list)
RT_NESTED = "_nested_steps"
#: runtime property of a nested step's task: the step that called it
RT_NESTED_IN = "_nested_in"
#: Seconds between rewrites of a growing pipeline's stored DAG (node states are written
#: every ``FLUSH_INTERVAL`` regardless).
DAG_INTERVAL = 0.5
DEFAULT_RETURN = "return_object"
_STEP_NAME = re.compile(r"[^A-Za-z0-9_.\-]")

#: ``_ctx.pipeline``: the pipeline whose logic runs in this thread
_ctx = threading.local()


class StepFailedError(StepLineError, ValueError):
    """A step whose value the pipeline logic used failed (or was aborted)."""


class PipelineFailedError(StepLineError):
    """The pipeline's run ended failed although its logic returned."""


# -- values flowing between steps ------------------------------------------------------------
@dataclass(frozen=True)
class StepOutput:
    """A return value of an earlier step, as a later step's input (by reference)."""

    step: str
    name: str

    def ref(self) -> Ref:
        return Ref("${" + f"{self.step}.{self.name}" + "}", self.step, "return", self.name)

    def describe(self) -> str:
        return self.ref().text


@dataclass
class _Deferred:
    """An input that holds step outputs inside lists, tuples or dicts: its value is built when
    the step launches (its parents are done then)."""

    value: Any
    steps: list[str]

    def describe(self) -> str:
        return f"<{type(self.value).__name__} of {', '.join(self.steps)}>"


def _has_proxy(value: Any) -> bool:
    kind = type(value)
    if kind is LazyResult:
        return True
    if kind in (list, tuple, set, frozenset):
        return any(_has_proxy(v) for v in value)
    if kind is dict:
        return any(_has_proxy(v) for v in value.values())
    return False


def _to_outputs(value: Any, steps: dict[str, None]) -> Any:
    """``value`` with every proxy replaced by its ``StepOutput`` (collecting the steps)."""
    kind = type(value)
    if kind is LazyResult:
        steps[value._step] = None
        return StepOutput(value._step, value._name)
    if kind in (list, tuple, set, frozenset):
        return kind(_to_outputs(v, steps) for v in value)
    if kind is dict:
        return {k: _to_outputs(v, steps) for k, v in value.items()}
    return value


def _resolve_deep(value: Any) -> Any:
    """``value`` with every proxy replaced by the value it stands for."""
    kind = type(value)
    if kind is LazyResult:
        return value._get()
    if kind in (list, tuple, set, frozenset):
        return kind(_resolve_deep(v) for v in value) if _has_proxy(value) else value
    if kind is dict:
        return {k: _resolve_deep(v) for k, v in value.items()} if _has_proxy(value) else value
    return value


def load_return(backend: Backend, task_id: str, name: str, step: str) -> Any:
    """The return value ``name`` of the step whose task is ``task_id``."""
    known, value = runner.returned(task_id, name)
    if known:
        return value
    params = backend.get_params(task_id)
    for p in params:
        if p.section == runner.RETURN and p.name == name:
            return pv.decode(p.value, p.type)
    recs = backend.get_artifacts(task_id)
    for rec in recs:
        if rec.name == name:
            return Artifact(rec, backend).get()
    raise ArtifactNotFoundError(
        f"step {step!r} (task {task_id}) stored no return value {name!r} (it has: "
        f"{', '.join(r.name for r in recs) or 'no artifacts'}); check the component's "
        "return_values"
    )


_MISSING = object()


class LazyResult:
    """The result of a component call: stands for the step's return value.

    Passing it to another component makes a dependency without loading anything. Any use of
    it (attributes, operators, ``bool``, ``str``, iteration, indexing, ``isinstance``) waits
    for the step and loads the value once. ``type(result)`` is still ``LazyResult`` and
    ``result is None`` is False even when the value is None: compare with ``== None`` or use
    the value (``result.value``... any attribute) instead.
    """

    __slots__ = ("__weakref__", "_name", "_owner", "_step", "_value")

    def __init__(self, owner: PipelineDecorator, step: str, name: str) -> None:
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_step", step)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_value", _MISSING)

    def _get(self) -> Any:
        value = object.__getattribute__(self, "_value")
        if value is _MISSING:
            value = self._owner._result(self._step, self._name)
            object.__setattr__(self, "_value", value)
        return value

    # isinstance(result, SomeType) checks the value's type
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._get())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._get(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._get(), name)

    def __dir__(self) -> list[str]:
        return dir(self._get())

    def __repr__(self) -> str:
        return repr(self._get())

    def __str__(self) -> str:
        return str(self._get())

    def __format__(self, spec: str) -> str:
        return format(self._get(), spec)

    def __bytes__(self) -> bytes:
        return bytes(self._get())

    def __bool__(self) -> bool:
        return bool(self._get())

    def __hash__(self) -> int:
        return hash(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._get())

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._get())

    def __next__(self) -> Any:
        return next(self._get())

    def __contains__(self, item: Any) -> bool:
        return item in self._get()

    def __getitem__(self, key: Any) -> Any:
        return self._get()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._get()[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._get()[key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get()(*args, **kwargs)

    def __enter__(self) -> Any:
        return self._get().__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._get().__exit__(*exc)

    def __int__(self) -> int:
        return int(self._get())

    def __float__(self) -> float:
        return float(self._get())

    def __complex__(self) -> complex:
        return complex(self._get())

    def __index__(self) -> int:
        return operator.index(self._get())

    def __round__(self, ndigits: int | None = None) -> Any:
        return round(self._get(), ndigits)

    def __trunc__(self) -> Any:
        import math

        return math.trunc(self._get())

    def __floor__(self) -> Any:
        import math

        return math.floor(self._get())

    def __ceil__(self) -> Any:
        import math

        return math.ceil(self._get())

    def __neg__(self) -> Any:
        return -self._get()

    def __pos__(self) -> Any:
        return +self._get()

    def __abs__(self) -> Any:
        return abs(self._get())

    def __invert__(self) -> Any:
        return ~self._get()

    def __pow__(self, other: Any, modulo: Any = None) -> Any:
        value = self._get()
        return pow(value, other) if modulo is None else pow(value, other, modulo)

    def __rpow__(self, other: Any) -> Any:
        return pow(other, self._get())

    def __fspath__(self) -> Any:
        import os

        return os.fspath(self._get())

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        import numpy

        return numpy.asarray(self._get(), *args, **kwargs)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # pickling (or copying) a result stores the value itself
        return (_identity, (self._get(),))


def _identity(value: Any) -> Any:
    return value


def _binary(op: Callable[[Any, Any], Any]) -> tuple[Any, Any]:
    def forward(self: LazyResult, other: Any) -> Any:
        return op(self._get(), other)

    def reflected(self: LazyResult, other: Any) -> Any:
        return op(other, self._get())

    return forward, reflected


for _name, _op in {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "matmul": operator.matmul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "divmod": divmod,
    "lshift": operator.lshift, "rshift": operator.rshift,
    "and": operator.and_, "xor": operator.xor, "or": operator.or_,
}.items():  # fmt: skip
    _fwd, _rev = _binary(_op)
    setattr(LazyResult, f"__{_name}__", _fwd)
    setattr(LazyResult, f"__r{_name}__", _rev)
for _name, _op in {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}.items():  # fmt: skip
    setattr(LazyResult, f"__{_name}__", _binary(_op)[0])


# -- components ------------------------------------------------------------------------------
@dataclass
class ComponentOptions:
    """A component's decorator arguments; the JSON-able ones travel with nested components."""

    return_values: list[str] = field(default_factory=lambda: [DEFAULT_RETURN])
    name: str | None = None
    cache: bool = False
    packages: list[str] | str | None = None
    parents: list[str] = field(default_factory=list)
    execution_queue: str | None = None
    continue_on_fail: bool = False
    continue_behaviour: dict[str, bool] | None = None
    docker: str | None = None
    task_type: str | None = None
    tags: list[str] = field(default_factory=list)
    monitor_metrics: list[Any] = field(default_factory=list)
    monitor_artifacts: list[Any] = field(default_factory=list)
    monitor_models: list[Any] = field(default_factory=list)
    retry_on_failure: Any = None
    stage: str | None = None
    # not JSON-able: used where the component was defined only
    helper_functions: list[Callable[..., Any]] = field(default_factory=list)
    pre_execute_callback: Callable[..., Any] | None = None
    post_execute_callback: Callable[..., Any] | None = None
    status_change_callback: Callable[..., Any] | None = None

    def portable(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("helper_functions", "pre_execute_callback", "post_execute_callback",
                    "status_change_callback"):  # fmt: skip
            out.pop(key)
        if not isinstance(out["retry_on_failure"], (int, type(None))):
            out["retry_on_failure"] = None
        return out


def _return_names(return_values: Any) -> list[str]:
    if return_values is None:
        return []
    items = [return_values] if isinstance(return_values, str) else list(return_values)
    names: list[str] = []
    for item in items:
        names.extend(n.strip() for n in str(item).split(",") if n.strip())
    for n in names:
        if not n.isidentifier():
            raise ValidationError(
                f"return value name {n!r} must be a Python identifier, e.g. 'data_frame'"
            )
    if len(set(names)) != len(names):
        raise ValidationError(f"return_values {names} name a value twice")
    return names


_building: set[int] = set()


class Component:
    """A function decorated with ``@PipelineDecorator.component``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        options: ComponentOptions,
        stored_code: Mapping[str, Any] | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.options = options
        self.step_name = options.name or fn.__name__
        self.signature = inspect.signature(fn)
        for p in self.signature.parameters.values():
            if p.kind == p.VAR_POSITIONAL:
                raise ValidationError(
                    f"component {self.step_name!r}: *{p.name} cannot be passed to a step; "
                    "take a list argument instead"
                )
        self._stored = dict(stored_code) if stored_code else None
        self._code: StepCode | None = None
        self._nests = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<component {self.step_name}>"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else functools.partial(self, obj)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(_ctx, "pipeline", None)
        if owner is not None:
            return owner._call_component(self, args, kwargs)
        step = _running_step()
        if step is not None:
            return _run_nested(step, self, args, kwargs)
        # not in a pipeline's logic or a step (another thread, or no pipeline): a plain call
        return self.fn(*args, **kwargs)

    def code(self) -> StepCode:
        """The step's stored code, built on first use (helpers defined below the component in
        its module exist by then)."""
        with self._lock:
            if self._code is not None:
                return self._code
            if self._stored is not None:
                self._code = StepCode(
                    source=self._stored["source"],
                    function_name=self._stored["function_name"],
                    module_dir=self._stored.get("module_dir", ""),
                    entry_point=self._stored.get("entry_point", ""),
                    parameters=list(self.signature.parameters.values()),
                )
                self._nests = bool(self._stored.get("nests"))
                return self._code
            nested: list[str] = []

            def declare(name: str, value: Any) -> str | None:
                if type(value) is not Component:
                    return None
                nested.append(name)
                return value._declaration(name)

            _building.add(id(self))
            try:
                self._code = build_step_code(self.fn, self.options.helper_functions, extra=declare)
            finally:
                _building.discard(id(self))
            self._nests = bool(nested)
            return self._code

    @property
    def nests(self) -> bool:
        """Its code calls other components (nested steps)."""
        self.code()
        return self._nests

    def _declaration(self, name: str) -> str:
        """Code that re-creates this component inside another component's stored code."""
        if id(self) in _building:
            raise ValidationError(
                f"component {self.step_name!r} calls itself through other components; a "
                "nested step cannot call its caller"
            )
        code = self.code()
        data = {
            "options": self.options.portable(),
            "code": {
                "source": code.source,
                "function_name": code.function_name,
                "module_dir": code.module_dir,
                "entry_point": code.entry_point,
                "nests": self._nests,
            },
        }
        text = json.dumps(data)
        return (
            f"from stepline.pipeline.decorator import restore_component as _stepline_restore\n"
            f"{name} = _stepline_restore({text!r})\n"
        )

    def spec(self, kwargs: dict[str, Any], docker: str = "") -> FunctionSpec:
        code = self.code()
        opts = self.options
        return FunctionSpec(
            function_name=code.function_name,
            source=code.source,
            kwargs=kwargs,
            returns=list(opts.return_values),
            module_dir=code.module_dir,
            entry_point=code.entry_point,
            packages=_packages(opts.packages),
            task_type=str(TaskTypes(opts.task_type or TaskTypes.data_processing)),
            docker=opts.docker or docker,
            tags=list(opts.tags),
            references=False,
        )

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by name, defaults included (``**extra`` flattened)."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"component {self.step_name!r}: {exc}") from None
        bound.apply_defaults()
        out: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if self.signature.parameters[name].kind == inspect.Parameter.VAR_KEYWORD:
                out.update(value)
            else:
                out[name] = value
        return out


def restore_component(text: str) -> Component:
    """Re-create a component inside a step's stored code (see ``Component._declaration``)."""
    data = json.loads(text)
    code = data["code"]
    fn = runner.load_function(
        {"function": code["function_name"], "source": code["source"],
         "module_dir": code.get("module_dir", "")}
    )  # fmt: skip
    return Component(fn, ComponentOptions(**data["options"]), stored_code=code)


def _running_step() -> Task | None:
    """The function step this code runs in (in a step's thread or a step's process)."""
    task = getattr(Task._thread, "task", None) or Task._current
    if task is None or task.task_type == str(TaskTypes.controller):
        return None
    if (task.script or {}).get("kind") != "function":
        return None
    return task


# -- nested steps: a component called while a step runs --------------------------------------
_nested_lock = threading.Lock()
_nested_names: dict[str, list[str]] = {}  # caller task id -> nested step names


def _run_nested(step: Task, comp: Component, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Run ``comp`` now, in this thread, as a step task of the caller's pipeline."""
    backend = step._backend
    runtime = backend.get_runtime(step.id)
    pipe_id = runtime.get(RT_PIPELINE)
    if not pipe_id:
        return comp.fn(*args, **kwargs)
    caller = runtime.get(RT_STEP) or step.name
    base = f"{caller}_{comp.step_name}"
    with _nested_lock:
        if step.id not in _nested_names:  # a retry runs in a new process: names stay unique
            _nested_names[step.id] = list(json.loads(runtime.get(RT_NESTED) or "[]"))
        names = _nested_names[step.id]
        name, n = base, 0
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
        backend.set_runtime(step.id, {RT_NESTED: json.dumps(names)})
    params: list[Param] = []
    key_params: dict[str, str] = {}
    for arg, value in comp.bind(args, kwargs).items():
        if is_param_value(value):
            p = Task._param(runner.KWARGS, arg, value)
            key_params[p.key] = f"{p.type}:{p.value}"
        else:
            art = f"{name}.{arg}"
            step.upload_artifact(art, value, wait_on_upload=True)
            rec = step.artifacts[art].record
            p = Task._param(runner.KWARGS_ARTIFACTS, arg, f"{step.id}/{art}")
            key_params[p.key] = f"str:sha256:{rec.hash}"
        params.append(p)
    spec = comp.spec({})
    script = function_script(spec)
    parts = cache_parts(script, key_params, {}, list(spec.packages), spec.docker)
    key = cache_key(parts)
    node = Node(name=name, parents=[caller], job_type="function", cache_key=key)
    node.job_started = time.time()
    hit = find_cached(backend, key) if comp.options.cache else None
    if hit is not None:
        task_id, status, failure = hit.id, TaskStatus.completed, ""
        node.cached_from = hit.id
        node.status = NodeStatus.cached
    else:
        record = backend.create_task(
            NewTask(
                name=name,
                project=step.project,
                type=spec.task_type,
                status=TaskStatus.in_progress,
                parent=step.id,
                tags=list(spec.tags),
                script=script,
                params=params,
                runtime={
                    RT_PIPELINE: pipe_id,
                    RT_STEP: name,
                    RT_PIPELINE_NAME: runtime.get(RT_PIPELINE_NAME, ""),
                    RT_NESTED_IN: caller,
                    RT_CACHE_KEY: key,
                    RT_CACHE_PARTS: json.dumps(parts, sort_keys=True),
                },
                user=step._record.user,
            )
        )
        task_id = record.id
        runner.hand_over(record, params, comp.fn)
        runner.capture_thread_consoles(True)
        try:
            status, failure = runner.run_in_thread(task_id, backend)
        finally:
            runner.capture_thread_consoles(False)
        node.status = NodeStatus.completed if status == TaskStatus.completed else NodeStatus.failed
    node.executed = task_id
    node.job_ended = time.time()
    if failure:
        node.status_message = last_line(failure)
    state = node_state(node)
    state["nested_in"] = caller
    backend.set_runtime(pipe_id, {RT_NODE + name: json.dumps(state)})
    if node.status not in SUCCEEDED:
        if comp.options.continue_on_fail:
            return None if len(spec.returns) <= 1 else (None,) * len(spec.returns)
        raise StepFailedError(
            f'Pipeline step "{name}", Task ID={task_id} failed: {node.status_message}'
        )
    values = [load_return(backend, task_id, r, name) for r in spec.returns]
    runner.forget([task_id])
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


# -- the pipeline ----------------------------------------------------------------------------
@dataclass
class _PipelineSpec:
    """What ``@PipelineDecorator.pipeline`` was given."""

    fn: Callable[..., Any]
    settings: dict[str, Any]
    return_value: str | None
    args_map: dict[str, list[str]]
    execution_queue: str | None
    start_controller_locally: bool
    max_workers: int | None

    def new(self) -> PipelineDecorator:
        pipe = PipelineDecorator(**self.settings)
        pipe._spec = self
        return pipe


class _InnerPipeline:
    """Runs a pipeline used as a step of another pipeline (``LocalRun`` for the scheduler)."""

    def __init__(self, pipe: PipelineDecorator, args: Sequence[Any], kwargs: Mapping[str, Any],
                 return_name: str) -> None:  # fmt: skip
        self.pipe = pipe
        self.args = args
        self.kwargs = kwargs
        self.return_name = return_name

    def run(self) -> tuple[TaskStatus, str]:
        return self.pipe._execute_as_step(self.args, self.kwargs, self.return_name)

    def stop(self, reason: str) -> None:
        if self.pipe._scheduler is not None:
            self.pipe._scheduler.stop(reason, failed=True)


class DecoratorRun(PipelineRun):
    """``PipelineRun`` for a pipeline whose steps are added while it runs."""

    pipeline: PipelineDecorator

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dag_dirty = False
        self._dag_written = 0.0
        self._dag_timer: threading.Timer | None = None

    def dag_changed(self) -> None:
        self._dag_dirty = True
        self._wake.set()

    def flush(self) -> None:
        super().flush()
        if not self._dag_dirty:
            return
        wait = DAG_INTERVAL - (time.monotonic() - self._dag_written)
        if wait > 0 and not self._closing:
            if self._dag_timer is None or not self._dag_timer.is_alive():
                self._dag_timer = threading.Timer(wait, self._wake.set)
                self._dag_timer.daemon = True
                self._dag_timer.start()
            return
        self._dag_dirty = False
        self._dag_written = time.monotonic()
        dag = self.pipeline._dag_config()
        self.backend.set_configs(self.task.id, [ConfigObject(CONFIG_DAG, json.dumps(dag), "json")])

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._dag_timer is not None:
                self._dag_timer.cancel()
            with self.pipeline._cond:
                self.pipeline._cond.notify_all()

    def on_status(self, node: Node, previous: NodeStatus) -> None:
        try:
            super().on_status(node, previous)
        finally:
            if node.status in FINAL:
                with self.pipeline._cond:
                    self.pipeline._cond.notify_all()

    def launch(self, node: Node) -> Any:
        inner = self.pipeline._inner.get(node.name)
        if inner is None:
            return super().launch(node)
        spec, args, kwargs = inner
        pipe = spec.new()
        pipe._mode = self.pipeline._mode
        pipe._parent_task = self.task.id
        pipe._extra_runtime = {
            RT_PIPELINE: self.task.id,
            RT_STEP: node.name,
            RT_PIPELINE_NAME: self.pipeline_name,
        }
        args, kwargs = _resolve_deep(list(args)), _resolve_deep(dict(kwargs))
        pipe._set_args(args, kwargs)
        record = pipe._create_task(self.backend)
        pipe._attach_to = record.id
        self.log(
            f"step {node.name}: running pipeline {spec.settings['name']!r} as task {record.id}"
        )
        return Launch(
            task_id=record.id,
            local=_InnerPipeline(pipe, args, kwargs, spec.return_value or DEFAULT_RETURN),
        )

    def _input(self, node: Node, arg: str, raw: Any, where: str) -> Any:
        assert node.function is not None
        if node.function.references:
            return super()._input(node, arg, raw, where)
        if type(raw) is StepOutput:
            return self.resolve(raw.ref(), where)
        if type(raw) is _Deferred:
            value = self._build(raw.value, where)
            return value if is_param_value(value) else self.store_input(node.name, arg, value)
        return raw

    def _build(self, value: Any, where: str) -> Any:
        kind = type(value)
        if kind is StepOutput:
            got = self.resolve(value.ref(), where)
            if isinstance(got, ArtifactInput):
                return runner.load_artifact_ref(self.backend, got.ref)
            return got
        if kind in (list, tuple, set, frozenset):
            return kind(self._build(v, where) for v in value)
        if kind is dict:
            return {k: self._build(v, where) for k, v in value.items()}
        return value

    def on_finished(self, node: Node) -> None:
        try:
            super().on_finished(node)
        finally:
            if node.name in self.pipeline._nesting and node.status != NodeStatus.cached:
                self._merge_nested(node)

    def _merge_nested(self, caller: Node) -> None:
        """Add the nested steps the caller's component ran to the DAG."""
        if not isinstance(caller.executed, str):
            return
        names = json.loads(self.backend.get_runtime(caller.executed).get(RT_NESTED) or "[]")
        if not names:
            return
        states = self.backend.get_runtime(self.task.id)
        for name in names:
            raw = states.get(RT_NODE + name)
            if not raw or name in self.nodes:
                continue
            st = json.loads(raw)
            node = Node(
                name=name,
                parents=[caller.name],
                job_type="nested",
                executed=st.get("task"),
                status=NodeStatus(st.get("status", "completed")),
                job_started=st.get("started"),
                job_ended=st.get("ended"),
                cached_from=st.get("cached_from") or "",
                cache_key=st.get("cache_key") or "",
                status_message=st.get("message") or "",
                # its failure reached its caller, which failed with it or handled it
                continue_on_fail=True,
            )
            self.nodes[name] = node
            with self._lock:
                self._dirty[name] = node
        self.dag_changed()


class PipelineDecorator(PipelineController):
    """Pipelines from decorated functions; see the module docstring."""

    #: how pipelines started from now on run their steps: "debug", "local" or None (remote)
    _mode_default: ClassVar[str | None] = None
    _default_queue_all: ClassVar[str | None] = None
    _running: ClassVar[list[PipelineDecorator]] = []
    _running_lock: ClassVar[threading.Lock] = threading.Lock()
    _run_class = DecoratorRun

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store_source = False
        self._script_kind = "decorator"
        self._mode: str | None = PipelineDecorator._mode_default
        self._spec: _PipelineSpec | None = None
        self._cond = threading.Condition()
        self._names_lock = threading.Lock()
        self._inner: dict[str, tuple[_PipelineSpec, Sequence[Any], Mapping[str, Any]]] = {}
        self._nesting: set[str] = set()
        self._control: dict[str, None] = {}  #: steps the logic waited for, not yet parents
        self._taken: set[str] = set()  #: step names given out
        #: every node the logic added, in order (the scheduler's dict gets them a moment later)
        self._added: dict[str, Node] = {}

    # -- the class-level API -----------------------------------------------------------------
    @classmethod
    def component(
        cls,
        _func: Callable[..., Any] | None = None,
        *,
        return_values: str | Sequence[str] | None = (DEFAULT_RETURN,),
        name: str | None = None,
        cache: bool = False,
        packages: str | Sequence[str] | None = None,
        parents: Sequence[str] | None = None,
        execution_queue: str | None = None,
        continue_on_fail: bool = False,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        task_type: str | None = None,
        auto_connect_frameworks: Any = None,
        auto_connect_arg_parser: Any = None,
        repo: str | None = None,
        repo_branch: str | None = None,
        repo_commit: str | None = None,
        helper_functions: Sequence[Callable[..., Any]] | None = None,
        monitor_metrics: Sequence[Any] | None = None,
        monitor_artifacts: Sequence[Any] | None = None,
        monitor_models: Sequence[Any] | None = None,
        retry_on_failure: int | Callable[..., bool] | None = None,
        pre_execute_callback: Callable[..., Any] | None = None,
        post_execute_callback: Callable[..., Any] | None = None,
        status_change_callback: Callable[..., Any] | None = None,
        tags: str | Sequence[str] | None = None,
        output_uri: str | bool | None = None,
        draft: bool = False,
        working_dir: str | None = None,
        continue_behaviour: Mapping[str, bool] | None = None,
        stage: str | None = None,
        **_: Any,
    ) -> Any:
        """Make a function a pipeline step. ``return_values`` names its results (one name:
        one value; several: a tuple, unpacked into one result per name)."""
        if name is not None and (not _NAME.match(name) or name == PIPELINE):
            raise ValidationError(
                f"component name {name!r} must be letters, digits, '_', '-' or '.'"
            )
        options = ComponentOptions(
            return_values=_return_names(return_values),
            name=name,
            cache=bool(cache),
            packages=packages if packages is None or isinstance(packages, str) else list(packages),
            parents=list(parents or []),
            execution_queue=execution_queue,
            continue_on_fail=bool(continue_on_fail),
            continue_behaviour=dict(continue_behaviour) if continue_behaviour else None,
            docker=docker,
            task_type=str(TaskTypes(task_type)) if task_type else None,
            tags=[tags] if isinstance(tags, str) else list(tags or []),
            monitor_metrics=list(monitor_metrics or []),
            monitor_artifacts=list(monitor_artifacts or []),
            monitor_models=list(monitor_models or []),
            retry_on_failure=retry_on_failure,
            stage=stage,
            helper_functions=list(helper_functions or []),
            pre_execute_callback=pre_execute_callback,
            post_execute_callback=post_execute_callback,
            status_change_callback=status_change_callback,
        )

        def wrap(fn: Callable[..., Any]) -> Component:
            if not callable(fn) or getattr(fn, "__name__", "") == "<lambda>":
                raise ValidationError("@PipelineDecorator.component decorates a 'def' function")
            return Component(fn, options)

        return wrap(_func) if _func is not None else wrap

    @classmethod
    def pipeline(
        cls,
        _func: Callable[..., Any] | None = None,
        *,
        name: str,
        project: str,
        version: str | None = None,
        return_value: str | None = None,
        default_queue: str | None = None,
        pool_frequency: float = 0.2,
        add_pipeline_tags: bool = False,
        target_project: str | bool | None = None,
        abort_on_failure: bool = False,
        pipeline_execution_queue: str | None = "services",
        multi_instance_support: bool | str = False,
        add_run_number: bool = True,
        args_map: Mapping[str, Sequence[str]] | None = None,
        start_controller_locally: bool = False,
        retry_on_failure: int | Callable[..., bool] | None = None,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        packages: str | Sequence[str] | None = None,
        repo: str | None = None,
        repo_branch: str | None = None,
        repo_commit: str | None = None,
        artifact_serialization_function: Callable[[Any], bytes] | None = None,
        artifact_deserialization_function: Callable[[bytes], Any] | None = None,
        output_uri: str | bool | None = None,
        skip_global_imports: bool = False,
        working_dir: str | None = None,
        enable_local_imports: bool = True,
        max_workers: int | None = None,
        **_: Any,
    ) -> Any:
        """Make a function the logic of a pipeline: calling it runs the pipeline, with the
        function's arguments stored as the pipeline's arguments (section ``Args``, or as
        ``args_map`` {section: [argument, ...]} says)."""
        settings = {
            "name": name, "project": project, "version": version,
            "add_pipeline_tags": add_pipeline_tags, "target_project": target_project,
            "abort_on_failure": abort_on_failure, "add_run_number": add_run_number,
            "retry_on_failure": retry_on_failure, "docker": docker, "packages": packages,
            "skip_global_imports": skip_global_imports, "max_workers": max_workers,
        }  # fmt: skip
        if return_value is not None and not str(return_value).isidentifier():
            raise ValidationError(f"return_value {return_value!r} must be a Python identifier")
        amap = {str(k): [str(a) for a in v] for k, v in (args_map or {}).items()}

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            params = inspect.signature(fn).parameters
            for section, names in amap.items():
                unknown = [a for a in names if a not in params]
                if unknown:
                    raise ValidationError(
                        f"args_map section {section!r} names {', '.join(unknown)}, which "
                        f"{fn.__name__}() does not take"
                    )
            spec = _PipelineSpec(
                fn=fn,
                settings=settings,
                return_value=return_value,
                args_map=amap,
                execution_queue=pipeline_execution_queue,
                start_controller_locally=start_controller_locally,
                max_workers=max_workers,
            )
            if default_queue:
                spec.settings["_default_queue"] = default_queue

            @functools.wraps(fn)
            def run_pipeline(*args: Any, **kwargs: Any) -> Any:
                outer = getattr(_ctx, "pipeline", None)
                if outer is not None:
                    return outer._call_pipeline(spec, args, kwargs)
                return spec.new()._execute(args, kwargs)

            run_pipeline._stepline_pipeline = spec  # type: ignore[attr-defined]
            return run_pipeline

        return wrap(_func) if _func is not None else wrap

    @classmethod
    def debug_pipeline(cls) -> None:
        """Run pipelines started from now on in this process: each step runs in a thread,
        calling the component's own function (breakpoints work), and is still recorded."""
        PipelineDecorator._mode_default = "debug"

    @classmethod
    def run_locally(cls) -> None:
        """Run pipelines started from now on here, each step in a process of its own."""
        PipelineDecorator._mode_default = "local"

    @classmethod
    def set_default_execution_queue(cls, default_execution_queue: str | None) -> None:
        """The queue of steps whose component names none (remote mode)."""
        PipelineDecorator._default_queue_all = default_execution_queue

    @classmethod
    def get_current_pipeline(cls) -> PipelineDecorator | None:
        """The pipeline whose logic runs in this thread (or, from another thread, the last
        one started in this process)."""
        return getattr(_ctx, "pipeline", None) or cls._fallback_pipeline()

    @classmethod
    def wait_for_multi_pipelines(cls) -> list[Any]:
        """Pipelines run to their end when called, so there is nothing to wait for."""
        return []

    @classmethod
    def _fallback_pipeline(cls) -> PipelineDecorator | None:
        with cls._running_lock:
            return cls._running[-1] if cls._running else None

    # -- running the logic -------------------------------------------------------------------
    def _set_args(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        assert self._spec is not None
        sig = inspect.signature(self._spec.fn)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"pipeline {self._name!r}: {exc}") from None
        bound.apply_defaults()
        section_of = {a: s for s, names in self._spec.args_map.items() for a in names}
        self._args.clear()
        for name, value in bound.arguments.items():
            section = section_of.get(name, ARGS_SECTION)
            shown = value if not _has_proxy(value) and is_param_value(value) else repr(value)[:500]
            key = name if section == ARGS_SECTION else f"{section}/{name}"
            self._args[key] = Task._param(section, name, shown)
        return dict(bound.arguments)

    def _prepare(self) -> Executor:
        spec = self._spec
        assert spec is not None
        self._pick_default_queue()
        if self._attach_to and self._parent_task is None:
            # this process runs a stored run (an agent, or a rerun): the steps run as stored
            mode = (get_backend().get_task(self._attach_to).script or {}).get("steps")
            self._mode = {"in_process": "debug", "local": "local"}.get(mode or "")
        workers = spec.max_workers
        if self._mode == "debug":
            self._steps_mode = "in_process"
            return InProcessExecutor(workers)
        if self._mode == "local":
            self._steps_mode = "local"
            return ProcessExecutor(workers)
        return self._queue_executor()

    def _pick_default_queue(self) -> None:
        """Steps naming no queue go to the pipeline's ``default_queue``, else the one set for
        all pipelines (``set_default_execution_queue``), else ``default``."""
        own = self._spec.settings.get("_default_queue") if self._spec else None
        self._default_queue = own or self._default_queue_all

    def _sends_itself(self) -> str | None:
        """The queue this call sends the pipeline to (remote mode, not yet on an agent)."""
        spec = self._spec
        if spec is None or self._mode is not None or self._attach_to:
            return None
        if spec.start_controller_locally:
            return None
        return spec.execution_queue

    def _stored_values(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments, with the values stored on the run this process was started
        for (a clone with new values) in place of those the code passes."""
        assert self._spec is not None
        bound = inspect.signature(self._spec.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        assert self._attach_to
        stored = {
            (p.name if p.section == ARGS_SECTION else f"{p.section}/{p.name}"): p
            for p in get_backend().get_params(self._attach_to)
        }
        section_of = {a: s for s, names in self._spec.args_map.items() for a in names}
        for name, value in values.items():
            section = section_of.get(name, ARGS_SECTION)
            p = stored.get(name if section == ARGS_SECTION else f"{section}/{name}")
            if p is not None and not _has_proxy(value) and is_param_value(value):
                values[name] = pv.decode(p.value, p.type)
        return values

    def _dag_nodes(self) -> list[Node]:
        return list({**self._added, **self._nodes}.values())

    def get_pipeline_dag(self) -> dict[str, Node]:
        """Every step so far, those the logic has just called included."""
        return {node.name: node for node in self._dag_nodes()}

    def _definition_hash(self, dag: Mapping[str, Any]) -> str:
        import hashlib

        assert self._spec is not None
        try:
            text = inspect.getsource(self._spec.fn)
        except (OSError, TypeError):
            text = self._spec.fn.__qualname__
        body = json.dumps([text, {n: [p.value, p.type] for n, p in self._args.items()}])
        return hashlib.sha256(body.encode()).hexdigest()

    def _execute(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Run the pipeline: its logic in this thread, its steps as the mode says; or, in
        remote mode, store it and send it to an agent (this process then exits, as in the
        reference)."""
        queue = self._sends_itself()
        if queue is not None:
            self._set_args(args, kwargs)
            self._pick_default_queue()
            record = self._enqueue_self(queue)
            print(
                f"stepline: pipeline {self._name!r} queued on {queue!r} as task {record.id}; "
                f"an agent runs it (stepline agent --queue {queue}); follow it with: "
                f"stepline pipelines show {record.id}"
            )
            raise SystemExit(0)
        if self._attach_to:
            try:
                args, kwargs = (), self._stored_values(args, kwargs)
            except TypeError as exc:
                raise TypeError(f"pipeline {self._name!r}: {exc}") from None
        executor = self._prepare()
        try:
            self._set_args(args, kwargs)
        except BaseException:
            executor.shutdown()
            raise
        result, error = self._run_logic(executor, args, kwargs, self._spec_return())
        if error is not None:
            raise error
        if self._error is not None:
            raise self._error
        if not self.is_successful():
            reason = self._outcome.reason if self._outcome else "it did not finish"
            raise PipelineFailedError(f"pipeline {self._name!r} (task {self.id}) failed: {reason}")
        return result

    def _execute_as_step(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], return_name: str
    ) -> tuple[TaskStatus, str]:
        executor = self._prepare()
        _, error = self._run_logic(executor, args, kwargs, return_name)
        if error is not None or self._error is not None or not self.is_successful():
            reason = self._logic_failure or (self._outcome.reason if self._outcome else "")
            return TaskStatus.failed, reason or f"pipeline {self._name!r} failed"
        return TaskStatus.completed, ""

    def _spec_return(self) -> str | None:
        return self._spec.return_value if self._spec else None

    def _run_logic(
        self,
        executor: Executor,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        return_name: str | None,
    ) -> tuple[Any, BaseException | None]:
        assert self._spec is not None
        self._run(executor, wait=False, dynamic=True)
        assert self._task is not None and self._scheduler is not None
        task = self._task
        outer = getattr(_ctx, "pipeline", None)
        _ctx.pipeline = self
        previous_task = Task._bind_thread(task)
        runner.capture_thread_consoles(True)
        with PipelineDecorator._running_lock:
            PipelineDecorator._running.append(self)
        result: Any = None
        error: BaseException | None = None
        try:
            result = _resolve_deep(self._spec.fn(*args, **kwargs))
            if return_name:
                runner.store_results(task, {"returns": [return_name]}, result)
                task.flush(wait_for_uploads=True)
        except KeyboardInterrupt as exc:
            error = exc
            self._stop_marks = (False, True)
            self._scheduler.stop("interrupted (Ctrl-C)")
        except BaseException as exc:
            error = exc
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            task.get_logger()._log_lines(text.rstrip("\n").split("\n"), "error")
            self._logic_failure = f"the pipeline function raised {type(exc).__name__}: {exc}"
            self._scheduler.stop(self._logic_failure, failed=True)
        finally:
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, runner.ThreadConsole):
                    stream.flush_thread()
            runner.capture_thread_consoles(False)
            Task._bind_thread(previous_task)
            _ctx.pipeline = outer
            with PipelineDecorator._running_lock:
                if self in PipelineDecorator._running:
                    PipelineDecorator._running.remove(self)
            self._scheduler.close()
            self._join()
        return result, error

    def _join(self) -> None:
        assert self._thread is not None and self._scheduler is not None
        try:
            self._thread.join()
        except KeyboardInterrupt:
            self._scheduler.stop("interrupted (Ctrl-C)")
            self._thread.join()
            raise

    # -- component calls ---------------------------------------------------------------------
    def _unique(self, base: str) -> str:
        base = _STEP_NAME.sub("_", base) or "step"
        if base == "pipeline":
            base = "pipeline_step"
        name, n = base, 0
        while name in self._nodes or name in self._inner or name in self._taken:
            n += 1
            name = f"{base}_{n}"
        self._taken.add(name)
        return name

    def _inputs(
        self, node_name: str, values: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """The step's kwargs as stored on its node, and the steps they come from."""
        kwargs: dict[str, Any] = {}
        steps: dict[str, None] = {}
        for arg, value in values.items():
            if type(value) is LazyResult:
                steps[value._step] = None
                kwargs[arg] = StepOutput(value._step, value._name)
            elif _has_proxy(value):
                found: dict[str, None] = {}
                kwargs[arg] = _Deferred(_to_outputs(value, found), list(found))
                steps.update(found)
            elif pv.is_basic(value):
                kwargs[arg] = value
            elif is_param_value(value):  # a copy: the caller may change its list later
                copy = json.loads(json.dumps(value))
                kwargs[arg] = tuple(copy) if type(value) is tuple else copy
            else:
                assert self._pipeline_run is not None
                kwargs[arg] = self._pipeline_run.store_input(node_name, arg, value)
        return kwargs, list(steps)

    def _call_component(
        self, comp: Component, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        scheduler = self._scheduler
        if scheduler is None:
            raise StepLineError(f"pipeline {self._name!r} is not running")
        values = comp.bind(args, kwargs)
        opts = comp.options
        with self._names_lock:
            name = self._unique(comp.step_name)
        for parent in opts.parents:
            if parent not in self._taken:
                raise ValidationError(
                    f"component {comp.step_name!r}: parent {parent!r} is not a step that ran "
                    f"before it (steps so far: {', '.join(sorted(self._taken)) or 'none'})"
                )
        spec_kwargs, from_steps = self._inputs(name, values)
        parents = list(dict.fromkeys([*from_steps, *opts.parents, *self._control]))
        self._control.clear()
        node = Node(
            name=name,
            function=comp.spec(spec_kwargs, self._docker),
            parents=parents,
            queue=opts.execution_queue,
            cache_executed_step=opts.cache,
            monitor_metrics=list(opts.monitor_metrics),
            monitor_artifacts=list(opts.monitor_artifacts),
            monitor_models=list(opts.monitor_models),
            pre_execute_callback=opts.pre_execute_callback,
            post_execute_callback=opts.post_execute_callback,
            status_change_callback=opts.status_change_callback,
            retry_on_failure=opts.retry_on_failure,
            return_artifacts=list(opts.return_values),
            stage=opts.stage,
            job_type="function",
            explicit_docker_image=opts.docker,
        )
        self._continue(node, opts.continue_on_fail, opts.continue_behaviour)
        if self._mode == "debug":
            node.call = comp.fn
        if comp.nests:
            self._nesting.add(name)
        self._added[name] = node
        scheduler.add_node(node)
        if isinstance(self._pipeline_run, DecoratorRun):
            self._pipeline_run.dag_changed()
        proxies = tuple(LazyResult(self, name, r) for r in opts.return_values)
        if not proxies:
            return None
        return proxies[0] if len(proxies) == 1 else proxies

    def _call_pipeline(
        self, spec: _PipelineSpec, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        scheduler = self._scheduler
        if scheduler is None:
            raise StepLineError(f"pipeline {self._name!r} is not running")
        with self._names_lock:
            name = self._unique(str(spec.settings["name"]))
        steps: dict[str, None] = {}
        _to_outputs([list(args), dict(kwargs)], steps)
        self._inner[name] = (spec, args, kwargs)
        parents = list(dict.fromkeys([*steps, *self._control]))
        self._control.clear()
        node = Node(name=name, parents=parents, job_type="pipeline")
        self._added[name] = node
        scheduler.add_node(node)
        if isinstance(self._pipeline_run, DecoratorRun):
            self._pipeline_run.dag_changed()
        return LazyResult(self, name, spec.return_value or DEFAULT_RETURN)

    def _result(self, step: str, name: str) -> Any:
        """Wait for ``step`` to end; its return value ``name`` (see ``LazyResult``)."""
        with self._cond:
            while True:
                node = self._nodes.get(step)
                if node is not None and node.status in FINAL:
                    break
                if self._scheduler is None or self._scheduler.finished.is_set():
                    raise StepLineError(f"pipeline {self._name!r} ended before step {step!r} ran")
                self._cond.wait(1.0)
        if node.status in SUCCEEDED:
            self._control[step] = None
            for p in node.parents:
                self._control.pop(p, None)
            assert isinstance(node.executed, str)
            return load_return(self._store(), node.executed, name, step)
        if node.status == NodeStatus.skipped:
            return None
        if node.status == NodeStatus.failed and node.continue_on_fail:
            return None
        if node.status == NodeStatus.aborted and node.continue_on_abort:
            return None
        what = "failed" if node.status == NodeStatus.failed else "was aborted"
        detail = f": {node.status_message}" if node.status_message else ""
        raise StepFailedError(f'Pipeline step "{step}", Task ID={node.executed} {what}{detail}')

    def _store(self) -> Backend:
        assert self._pipeline_run is not None
        return self._pipeline_run.backend
