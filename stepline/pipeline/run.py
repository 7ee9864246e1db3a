"""One run of a pipeline: turns ready nodes into step tasks and records what happened.

``PipelineRun`` implements the scheduler's ``StepHooks`` for every execution mode. For a ready
node it resolves the ``${...}`` references against the steps that already ran, runs the
user's callbacks, looks the step up in the cache, and creates (or clones) the step's task in
one store transaction. When a node changes status it records that on the pipeline's task
(runtime property ``_node/NAME``, progress) and, once the step is done, rolls the monitored
metrics, artifacts and models up onto the pipeline's task.
"""

from __future__ import annotations

import fnmatch
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from stepline.backend import Backend
from stepline.core import params as pv
from stepline.core.errors import StepLineError, ValidationError
from stepline.core.ids import new_id
from stepline.core.records import (
    ArtifactRecord,
    ConfigObject,
    ModelRecord,
    NewTask,
    Param,
    ScalarPoint,
    TaskFilter,
    TaskRecord,
)
from stepline.core.status import TaskStatus
from stepline.pipeline import runner
from stepline.pipeline.actions import RT_STEP
from stepline.pipeline.cache import cache_key, cache_parts, explain_miss
from stepline.pipeline.dag import FINAL, SUCCEEDED, FunctionSpec, Node, NodeStatus, _Job
from stepline.pipeline.recovery import ResumePlan, heartbeat_interval, heartbeat_values, runtimes
from stepline.pipeline.references import PIPELINE, Ref, substitute
from stepline.pipeline.runner import KWARGS, KWARGS_ARTIFACTS, RETURN
from stepline.sdk.code import local_modules
from stepline.sdk.task import Task

# runtime properties of step tasks
RT_PIPELINE = "_pipeline_id"
RT_CACHE_KEY = "_cache_key"
RT_CACHE_PARTS = "_cache_parts"
RT_RETRIES = "_retries"
RT_PIPELINE_NAME = "_step_of_pipeline"
# runtime properties of the pipeline task
RT_NODE = "_node/"
#: Seconds between writes of the steps' state to the pipeline's task (changes are batched).
FLUSH_INTERVAL = 0.05


class PipelineRun:
    def __init__(
        self,
        *,
        backend: Backend,
        pipeline: Any,
        task: TaskRecord,
        nodes: dict[str, Node],
        args: Mapping[str, Any],
        step_project: str,
        pipeline_name: str,
        add_pipeline_tags: bool,
        retry_on_failure: int | Callable[..., bool] | None,
        start_in_progress: bool,
        step_task_created_callback: Callable[..., Any] | None = None,
        step_task_completed_callback: Callable[..., Any] | None = None,
        adopt_running: bool = False,
        plan: ResumePlan | None = None,
    ) -> None:
        self.backend = backend
        self.pipeline = pipeline
        self.task = task
        self.nodes = nodes
        self.args = dict(args)
        self.step_project = step_project
        self.pipeline_name = pipeline_name
        self.add_pipeline_tags = add_pipeline_tags
        self.retry_on_failure = retry_on_failure
        self.start_in_progress = start_in_progress
        self.created_cb = step_task_created_callback
        self.completed_cb = step_task_completed_callback
        #: a resumed run may take over a step task of the run it resumes that is still running
        #: on an agent (only a queue executor can follow a task it did not start)
        self.adopt_running = adopt_running
        #: what this run reuses of the run it resumes (empty for a run that resumes none)
        self.plan = plan or ResumePlan()
        self._rerun = set(self.plan.rerun)
        self._earlier = self._prefetch(self.plan)
        self._dirty: dict[str, Node] = {}
        self._lock = threading.Lock()
        # the run's own Task object when there is one: the logic's console and the run's
        # narration then share one logger and stay in order
        owner = getattr(pipeline, "_task", None)
        self._task_obj = owner if isinstance(owner, Task) else Task(task, backend)
        self._log = self._task_obj.get_logger()
        self._beat_every = heartbeat_interval()  # a bad setting fails the run's start
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name="stepline-dag", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        """Writes node state off the scheduler's path, at most every ``FLUSH_INTERVAL``, and
        the run's heartbeat (see ``recovery``) when there is nothing else to write."""
        while True:
            if not self._wake.wait(self._beat_every):
                try:
                    self.backend.set_runtime(self.task.id, heartbeat_values())
                except Exception:  # the next beat tries again
                    pass
                continue
            if not self._closing:
                self._closed.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # the writer must outlive any one failed write
                self.log(f"could not record the steps' state: {exc}")
            if self._closing:
                return

    def close(self) -> None:
        """Stop the background writer and write what is left."""
        self._closing = True
        self._closed.set()
        self._wake.set()
        self._writer.join(timeout=10)
        self.flush()
        self._log.flush()
        runner.forget([n.executed for n in self.nodes.values() if isinstance(n.executed, str)])

    def prepare_inputs(self) -> None:
        """Store the function steps' arguments that are not parameter values (a DataFrame, a
        model) as artifacts of the pipeline's task, once, before any step runs."""
        for node in self.nodes.values():
            if node.function is None:
                continue
            for arg, value in list(node.function.kwargs.items()):
                if isinstance(value, ArtifactInput) or is_param_value(value):
                    continue
                node.function.kwargs[arg] = self.store_input(node.name, arg, value)

    def store_input(self, step: str, arg: str, value: Any) -> ArtifactInput:
        """Store a step's argument that is not a parameter value as the artifact
        ``STEP.ARG`` of the pipeline's task."""
        name = f"{step}.{arg}"
        self._task_obj.upload_artifact(name, value, wait_on_upload=True)
        return ArtifactInput(self.task.id, name, self._task_obj.artifacts[name].record.hash)

    def log(self, text: str) -> None:
        self._log._log_lines([text], "info")

    # -- resolving references -----------------------------------------------------------------
    def _step_task(self, ref: Ref, where: str) -> str:
        node = self.nodes.get(ref.step)
        if node is None or not isinstance(node.executed, str):
            raise ValidationError(
                f"{where}: {ref.text}: step {ref.step!r} has not run (it is "
                f"{node.status.value if node else 'unknown'})"
            )
        return node.executed

    def resolve(self, ref: Ref, where: str, *, for_key: bool = False) -> Any:
        """The value a reference stands for. With ``for_key`` an artifact's URL is replaced by
        its content hash (what the cache key should depend on)."""
        if ref.step == PIPELINE:
            if ref.name not in self.args:
                raise ValidationError(f"{where}: {ref.text} names no pipeline argument")
            return self.args[ref.name]
        task_id = self._step_task(ref, where)
        if ref.kind == "id":
            return task_id
        if ref.kind == "artifact":
            rec = self._artifact(task_id, ref.name, ref, where)
            if for_key and ref.field == "url":
                return f"sha256:{rec.hash or rec.size}"
            return getattr(rec, ref.field) if ref.field != "name" else rec.name
        if ref.kind == "parameter":
            for p in self.backend.get_params(task_id):
                if p.key == ref.name:
                    return pv.decode(p.value, p.type)
            raise ValidationError(
                f"{where}: {ref.text}: task {task_id} of step {ref.step!r} has no parameter "
                f"{ref.name!r}"
            )
        if ref.kind == "model":
            models = [m for m in self.backend.get_models(task_id) if m.mode == ref.mode]
            try:
                model = models[ref.index]
            except IndexError:
                raise ValidationError(
                    f"{where}: {ref.text}: task {task_id} of step {ref.step!r} has "
                    f"{len(models)} {ref.mode} model(s)"
                )
            return getattr(model, ref.field)
        if ref.kind == "return":
            node = self.nodes[ref.step]
            if node.status not in SUCCEEDED:
                # a failed step whose children run anyway (skip_children_on_fail=False)
                return None
            known, value = runner.returned(task_id, ref.name)
            if known:
                return value
            for p in self.backend.get_params(task_id):
                if p.section == RETURN and p.name == ref.name:
                    return pv.decode(p.value, p.type)
            rec = self._artifact(task_id, ref.name, ref, where)
            return ArtifactInput(task_id, rec.name, rec.hash)
        raise ValidationError(f"{where}: {ref.text} cannot be resolved")

    def _artifact(self, task_id: str, name: str, ref: Ref, where: str) -> ArtifactRecord:
        recs = self.backend.get_artifacts(task_id)
        for rec in recs:
            if rec.name == name:
                return rec
        raise ValidationError(
            f"{where}: {ref.text}: task {task_id} of step {ref.step!r} has no artifact "
            f"{name!r} (it has: {', '.join(r.name for r in recs) or 'none'})"
        )

    # -- launching ----------------------------------------------------------------------------
    def launch(self, node: Node) -> Any:
        from stepline.pipeline.scheduler import Launch

        where = f"step {node.name!r}"
        if node.is_function:
            values, key_values = self._function_params(node, where)
            configs: dict[str, str] = {}
            base: TaskRecord | None = None
        else:
            base = self._base_task(node)
            values = substitute(dict(node.parameters), lambda r: self.resolve(r, where), where)
            key_values = substitute(
                dict(node.parameters), lambda r: self.resolve(r, where, for_key=True), where
            )
            configs = {
                k: _text(v)
                for k, v in substitute(
                    dict(node.configurations), lambda r: self.resolve(r, where), where
                ).items()
            }
        for key, (text, kind) in self.plan.step_args.get(node.name, {}).items():
            values[key] = key_values[key] = pv.decode(text, kind)  # a rerun's new values
        overrides = substitute(dict(node.task_overrides), lambda r: self.resolve(r, where), where)
        callbacks = node.pre_execute_callback is not None or self.created_cb is not None
        draft: TaskRecord | None = None
        if callbacks:
            unchanged = dict(values)
            draft = self._create(node, base, {}, [], {}, {}, draft=True)
            node.job = _Job(Task(draft, self.backend))
            for cb in (node.pre_execute_callback, self.created_cb):
                if cb is not None and cb(self.pipeline, node, values) is False:
                    self.backend.delete_task(draft.id)
                    node.job = None
                    return Launch(skip=True)
            # a value the callbacks changed counts in the cache key as it is now
            key_values = {
                k: key_values[k] if k in key_values and unchanged.get(k) == v else v
                for k, v in values.items()
            }
        script = self._script(node, base, overrides)
        params = self._all_params(node, base, values)
        key_params = self._all_params(node, base, key_values)
        parts = cache_parts(
            script,
            {p.key: f"{p.type}:{p.value}" for p in key_params},
            {**({c.name: c.value for c in self._base_configs(base)}), **configs},
            list(script.get("requirements") or []) if node.is_function else [],
            (script.get("container") or {}).get("image", "") or (node.explicit_docker_image or ""),
        )
        key = cache_key(parts)
        node.cache_key = key
        runtime = {
            RT_PIPELINE: self.task.id,
            RT_PIPELINE_NAME: self.pipeline_name,
            RT_STEP: node.name,
            RT_CACHE_KEY: key,
            RT_CACHE_PARTS: json.dumps(parts, sort_keys=True),
        }
        rule = node.retry_on_failure if node.retry_on_failure is not None else self.retry_on_failure
        if rule:  # a step that may be retried is re-queued once if its agent dies under it
            runtime["_requeue_on_agent_loss"] = "1"
        forced = node.name in self._rerun
        earlier = None if forced else self.plan.reuse.get(node.name)
        if earlier is not None:
            taken = self._reusable(node, earlier, key)
            if taken is not None:
                if draft is not None:
                    self.backend.delete_task(draft.id)
                node.cached_from = taken.id
                node.job = _Job(Task(taken, self.backend))
                source = self.plan.source
                if taken.status == TaskStatus.completed:
                    self.log(f"step {node.name}: reusing task {taken.id} of run {source}")
                    return Launch(task_id=taken.id, cached=True, note=f"reused from run {source}")
                self.log(f"step {node.name}: taking over task {taken.id} of run {source}")
                node.status_message = f"taken over from run {source}"
                return Launch(task_id=taken.id, adopt=True)
        if node.cache_executed_step and not node.force_recompute and not forced:
            hit = find_cached(self.backend, key)
            if hit is not None:
                if draft is not None:
                    self.backend.delete_task(draft.id)
                node.cached_from = hit.id
                node.job = _Job(Task(hit, self.backend))
                self.log(f"step {node.name}: cache hit, reusing task {hit.id}")
                return Launch(task_id=hit.id, cached=True)
            node.status_message = "cache miss: " + explain_miss(parts, self._previous_parts(node))
        if draft is not None:
            record = self._fill(draft.id, node, script, params, configs, runtime)
        else:
            record = self._create(node, base, script, params, configs, runtime)
        if self.start_in_progress and node.is_function:
            runner.hand_over(record, params, node.call)
        node.job = _Job(Task(record, self.backend))
        self.log(f"step {node.name}: launching task {record.id}")
        return Launch(task_id=record.id)

    def _prefetch(self, plan: ResumePlan) -> dict[str, tuple[TaskRecord, str | None]]:
        """The completed tasks a resumed run may reuse, with their cache keys, read at once
        (two reads instead of two per step)."""
        if not plan.reuse:
            return {}
        ids = list(set(plan.reuse.values()))
        found = self.backend.find_tasks(TaskFilter(ids=ids, archived=None))
        keys = runtimes(self.backend, ids, [RT_CACHE_KEY])
        return {
            r.id: (r, keys.get(r.id, {}).get(RT_CACHE_KEY))
            for r in found
            if r.status == TaskStatus.completed  # final: it cannot change meanwhile
        }

    def _reusable(self, node: Node, task_id: str, key: str) -> TaskRecord | None:
        """The task of the resumed run to reuse for ``node``: completed (or, with
        ``adopt_running``, still queued or running) and with the same cache key."""
        try:
            if task_id in self._earlier:
                rec, then = self._earlier[task_id]
            else:
                rec = self.backend.get_task(task_id)
                then = self.backend.get_runtime(task_id).get(RT_CACHE_KEY)
        except StepLineError as exc:
            self.log(f"step {node.name}: task {task_id} of the resumed run is gone ({exc})")
            return None
        running = rec.status in (TaskStatus.queued, TaskStatus.in_progress)
        if rec.status != TaskStatus.completed and not (running and self.adopt_running):
            self.log(f"step {node.name}: task {rec.id} of the resumed run is {rec.status.value}")
            return None
        if then != key:
            node.status_message = "not reused: its code or inputs changed since the resumed run"
            self.log(f"step {node.name}: task {rec.id} of the resumed run is not reused: its "
                     "code or inputs changed")  # fmt: skip
            return None
        return rec

    def _function_params(self, node: Node, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """{"kwargs/arg": value} and the same with artifact inputs by content hash."""
        assert node.function is not None
        values: dict[str, Any] = {}
        key_values: dict[str, Any] = {}
        for arg, raw in node.function.kwargs.items():
            value = self._input(node, arg, raw, where)
            if isinstance(value, ArtifactInput):
                values[f"{KWARGS_ARTIFACTS}/{arg}"] = value.ref
                key_values[f"{KWARGS_ARTIFACTS}/{arg}"] = f"sha256:{value.hash}"
            else:
                values[f"{KWARGS}/{arg}"] = value
                key_values[f"{KWARGS}/{arg}"] = value
        return values, key_values

    def _input(self, node: Node, arg: str, raw: Any, where: str) -> Any:
        """The value of one argument of a function step, its references resolved."""
        return substitute(raw, lambda r: self.resolve(r, where), where)

    def _base_task(self, node: Node) -> TaskRecord:
        if node.task_factory_func is not None:
            made = node.task_factory_func(node)
            task_id = getattr(made, "id", made)
            if not isinstance(task_id, str):
                raise ValidationError(
                    f"step {node.name!r}: base_task_factory must return a Task, got {made!r}"
                )
            node.base_task_id = task_id
        if not node.base_task_id:
            raise ValidationError(f"step {node.name!r} has no base task")
        return self.backend.get_task(node.base_task_id)

    def _base_configs(self, base: TaskRecord | None) -> list[ConfigObject]:
        return self.backend.get_configs(base.id) if base is not None else []

    def _script(
        self, node: Node, base: TaskRecord | None, overrides: Mapping[str, Any]
    ) -> dict[str, Any]:
        if node.function is not None:
            script = function_script(node.function)
        else:
            assert base is not None
            script = json.loads(json.dumps(base.script or {}))
        for key, value in overrides.items():
            path = key.split(".")
            if path[0] == "script":
                path = path[1:]
            if not path:
                continue
            target = script
            for part in path[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    raise ValidationError(
                        f"step {node.name!r}: task_overrides key {key!r} goes through a value "
                        "that is not a section"
                    )
            target[path[-1]] = value
        return script

    def _all_params(
        self, node: Node, base: TaskRecord | None, values: Mapping[str, Any]
    ) -> list[Param]:
        merged: dict[str, Param] = {}
        if base is not None:
            for p in self.backend.get_params(base.id):
                merged[p.key] = p
        for key, value in values.items():
            section, _, name = key.partition("/")
            old = merged.get(key)
            param = Task._param(section, name, value, old.description if old else "")
            if old is not None and isinstance(value, str) and old.type != "str":
                # a text override of a typed parameter keeps the parameter's type
                param.type = old.type
            merged[key] = param
        return list(merged.values())

    def _create(
        self,
        node: Node,
        base: TaskRecord | None,
        script: dict[str, Any],
        params: list[Param],
        configs: Mapping[str, str],
        runtime: Mapping[str, str],
        *,
        draft: bool = False,
    ) -> TaskRecord:
        tags = [f"pipe: {self.task.id}"] if self.add_pipeline_tags else []
        status = (
            TaskStatus.in_progress
            if self.start_in_progress and node.is_function and not draft
            else TaskStatus.created
        )
        if node.function is not None:
            fs = node.function
            return self.backend.create_task(
                NewTask(
                    name=fs.task_name or node.name,
                    project=fs.project_name or self.step_project,
                    type=fs.task_type,
                    status=status,
                    parent=self.task.id,
                    tags=tags + list(fs.tags),
                    script=script,
                    params=params,
                    runtime=dict(runtime),
                    user=self.task.user,
                )
            )
        assert base is not None
        if not node.clone_task:
            if base.status != TaskStatus.created:
                raise ValidationError(
                    f"step {node.name!r}: clone_base_task=False runs the base task {base.id} "
                    f"itself, but it is {base.status.value}; reset it or let the step clone it"
                )
            record = base
        else:
            record = self.backend.clone_task(
                base.id, name=node.name, project=self.step_project, parent=self.task.id
            )
            if tags:
                self.backend.set_tags(record.id, sorted(set(record.tags) | set(tags)))
        if draft:
            return record
        return self._fill(record.id, node, script, params, configs, runtime)

    def _fill(
        self,
        task_id: str,
        node: Node,
        script: dict[str, Any],
        params: list[Param],
        configs: Mapping[str, str],
        runtime: Mapping[str, str],
    ) -> TaskRecord:
        if script:
            self.backend.update_task(task_id, script=script)
        if params:
            self.backend.set_params(task_id, params, replace=node.is_function)
        if configs:
            self.backend.set_configs(task_id, [ConfigObject(k, v) for k, v in configs.items()])
        if runtime:
            self.backend.set_runtime(task_id, runtime)
        return self.backend.get_task(task_id)

    def _previous_parts(self, node: Node) -> dict[str, str] | None:
        found = self.backend.find_tasks(
            TaskFilter(
                runtime={RT_STEP: node.name, RT_PIPELINE_NAME: self.pipeline_name},
                archived=None,
                order_by="-created",
                limit=5,
            )
        )
        for rec in found:
            if rec.parent == self.task.id:
                continue
            runtime = self.backend.get_runtime(rec.id)
            parts = runtime.get(RT_CACHE_PARTS)
            if parts:
                try:
                    return dict(json.loads(parts))
                except ValueError:
                    return None
        return None

    # -- retries and ends ---------------------------------------------------------------------
    def should_retry(self, node: Node) -> bool:
        rule = node.retry_on_failure if node.retry_on_failure is not None else self.retry_on_failure
        if rule is None or rule is False:
            return False
        if callable(rule):
            return bool(rule(self.pipeline, node, node.retries))
        return node.retries < int(rule)

    def relaunch(self, node: Node) -> None:
        assert isinstance(node.executed, str)
        self.backend.set_status(node.executed, TaskStatus.created, message="retrying")
        self.backend.set_runtime(node.executed, {RT_RETRIES: str(node.retries)})
        if node.call is not None and self.start_in_progress:  # debug mode: the user's function
            runner.hand_over(self.backend.get_task(node.executed), None, node.call)
        self.log(f"step {node.name}: retry {node.retries} of task {node.executed}")

    def end_task(self, node: Node, status: TaskStatus, reason: str) -> None:
        """The scheduler ended the step (a time limit, an abort, a dead process): its status
        and reason win over whatever the step recorded while it was being killed."""
        if not isinstance(node.executed, str):
            return
        try:
            rec = self.backend.get_task(node.executed)
            if rec.status == status and rec.status_reason == reason:
                return
            self.backend.set_status(
                node.executed, status, message=reason[:200], reason=reason, force=True
            )
        except StepLineError:
            pass

    def task_status(self, task_id: str) -> tuple[TaskStatus, str]:
        rec = self.backend.get_task(task_id)
        return rec.status, rec.status_reason

    # -- recording ----------------------------------------------------------------------------
    def on_status(self, node: Node, previous: NodeStatus) -> None:
        with self._lock:
            self._dirty[node.name] = node
        self._wake.set()
        if node.status in FINAL:
            took = f" in {node.duration:.2f} s" if node.duration is not None else ""
            note = f" ({node.status_message})" if node.status_message else ""
            self.log(f"step {node.name}: {node.status.value}{took}{note}")
        if node.status_change_callback is not None:
            node.status_change_callback(self.pipeline, node, previous)

    def flush(self) -> None:
        """Write the nodes whose status changed, and the progress, in one transaction."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        values = {RT_NODE + name: json.dumps(node_state(node)) for name, node in dirty.items()}
        nodes = list(self.nodes.values())  # the scheduler may add nodes meanwhile
        done = sum(1 for n in nodes if n.status in FINAL)
        values["progress"] = str(int(100 * done / len(nodes)) if nodes else 100)
        values.update(heartbeat_values())
        self.backend.set_runtime(self.task.id, values)

    def on_finished(self, node: Node) -> None:
        try:
            if node.status in (NodeStatus.completed, NodeStatus.cached):
                self._roll_up(node)
        finally:
            if node.post_execute_callback is not None:
                node.post_execute_callback(self.pipeline, node)
            if self.completed_cb is not None:
                self.completed_cb(self.pipeline, node)

    def _roll_up(self, node: Node) -> None:
        if not isinstance(node.executed, str):
            return
        step_id = node.executed
        pipe_id = self.task.id
        if node.monitor_metrics:
            points: list[ScalarPoint] = []
            for src, dst in _metric_pairs(node.monitor_metrics):
                title, series = src
                to_title, to_series = dst
                for p in self.backend.get_scalars(step_id, title, series):
                    points.append(
                        ScalarPoint(pipe_id, to_title, to_series, p.iteration, p.value, p.timestamp)
                    )
            if points:
                self.backend.add_scalars(points)
        if node.monitor_artifacts:
            recs = {r.name: r for r in self.backend.get_artifacts(step_id)}
            for art_src, art_dst in _name_pairs(node.monitor_artifacts):
                rec = recs.get(art_src)
                if rec is None:
                    self.log(f"step {node.name}: monitored artifact {art_src!r} was not produced")
                    continue
                path = self.backend.artifact_local_path(rec)
                copy = ArtifactRecord(
                    task_id=pipe_id,
                    name=art_dst,
                    type=rec.type,
                    url="",
                    hash="",
                    size=0,
                    preview=rec.preview,
                    metadata={**rec.metadata, "source_task": step_id, "source_step": node.name},
                    content_type=rec.content_type,
                )
                self.backend.put_artifact(copy, path)
        if node.monitor_models:
            models = self.backend.get_models(step_id)
            for model_src, model_dst in _name_pairs(node.monitor_models):
                chosen = _pick_model(models, model_src)
                if chosen is None:
                    continue
                name = chosen.name if model_dst == model_src and "*" in model_src else model_dst
                self.backend.add_model(
                    ModelRecord(
                        id=new_id(),
                        task_id=pipe_id,
                        name=name,
                        url=chosen.url,
                        framework=chosen.framework,
                        metadata={**chosen.metadata, "source_task": step_id},
                    )
                )


def find_cached(backend: Backend, key: str) -> TaskRecord | None:
    """The newest completed, non-archived task whose cache key is ``key``."""
    found = backend.find_tasks(
        TaskFilter(
            runtime={RT_CACHE_KEY: key},
            status=[TaskStatus.completed],
            archived=False,
            order_by="-created",
            limit=1,
        )
    )
    return found[0] if found else None


class ArtifactInput:
    """An argument of a function step passed as an artifact (another step's return value, or
    a value stored on the pipeline's task): ``TASK_ID/NAME`` and the content hash."""

    def __init__(self, task_id: str, name: str, hash_: str) -> None:
        self.ref = f"{task_id}/{name}"
        self.hash = hash_

    def describe(self) -> str:
        return f"artifact {self.ref}"


def describe_input(value: Any) -> Any:
    """A function step's argument as the stored DAG shows it."""
    if is_param_value(value):
        return value
    describe = getattr(value, "describe", None)
    if callable(describe):
        return describe()
    return f"<{type(value).__name__}>"


def function_script(fs: FunctionSpec) -> dict[str, Any]:
    """The ``script`` section of a function step's task."""
    script: dict[str, Any] = {
        "kind": "function",
        "function": fs.function_name,
        "source": fs.source,
        "returns": list(fs.returns),
        "module_dir": fs.module_dir,
        # the local modules the code imports travel with it (to agents without the files)
        "modules": local_modules(fs.source, fs.module_dir) if fs.module_dir else {},
        "entry_point": fs.entry_point,
        "requirements": list(fs.packages),
    }
    if fs.docker:
        script["container"] = {"image": fs.docker}
    return script


def is_param_value(value: Any) -> bool:
    """Basic values, and lists/dicts of them that JSON gives back unchanged, travel as
    parameters; anything else (``{1: "a"}``, ``[(1, 2)]``, objects) as an artifact."""
    if pv.is_basic(value):
        return True
    kind = type(value)
    if kind not in (list, tuple, dict):
        return False
    try:
        back = json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return False
    if kind is tuple:
        back = tuple(back)
    try:
        return bool(back == value)
    except Exception:
        return False


def node_state(node: Node) -> dict[str, Any]:
    return {
        "status": node.status.value,
        "parents": list(node.parents),
        "task": node.executed if isinstance(node.executed, str) else None,
        "started": node.job_started,
        "ended": node.job_ended,
        "cached_from": node.cached_from or None,
        "cache_key": node.cache_key or None,
        "retries": node.retries,
        "message": node.status_message,
    }


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _metric_pairs(items: Any) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """monitor_metrics: (title, series) or ((title, series), (target_title, target_series))."""
    out = []
    for item in items:
        if len(item) == 2 and all(isinstance(x, (list, tuple)) for x in item):
            out.append(((str(item[0][0]), str(item[0][1])), (str(item[1][0]), str(item[1][1]))))
        else:
            out.append(((str(item[0]), str(item[1])), (str(item[0]), str(item[1]))))
    return out


def _name_pairs(items: Any) -> list[tuple[str, str]]:
    """monitor_artifacts / monitor_models: a name, or (source name, target name)."""
    return [
        (str(i[0]), str(i[1])) if isinstance(i, (list, tuple)) else (str(i), str(i)) for i in items
    ]


def _pick_model(models: list[ModelRecord], pattern: str) -> ModelRecord | None:
    outputs = [m for m in models if m.mode == "output"]
    if pattern == "*":
        return outputs[-1] if outputs else None
    if "*" in pattern:
        matching = sorted((m for m in outputs if fnmatch.fnmatchcase(m.name, pattern)),
                          key=lambda m: m.name)  # fmt: skip
        return matching[-1] if matching else None
    named = [m for m in outputs if m.name == pattern]
    return named[-1] if named else None
