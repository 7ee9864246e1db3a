"""The pipeline graph: nodes (steps), their statuses, and the checks made when a step is added.

A ``Node`` carries the reference system's fields (``name``, ``base_task_id``, ``parents``,
``parameters``, ``executed``, ``status``, ...) so callbacks written for it keep working. It is
plain data; the scheduler changes it, the controller persists it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stepline.core.errors import ValidationError
from stepline.pipeline.references import PIPELINE, Ref, find_refs


class NodeStatus(str, enum.Enum):
    pending = "pending"
    queued = "queued"
    running = "running"
    completed = "completed"
    cached = "cached"
    aborted = "aborted"
    failed = "failed"
    skipped = "skipped"

    def __str__(self) -> str:
        return self.value


#: A node in one of these is done and will not change again.
FINAL = frozenset(
    {NodeStatus.completed, NodeStatus.cached, NodeStatus.aborted, NodeStatus.failed,
     NodeStatus.skipped}
)  # fmt: skip
#: A node in one of these produced its outputs.
SUCCEEDED = frozenset({NodeStatus.completed, NodeStatus.cached})


@dataclass
class FunctionSpec:
    """What a function step runs: its stored code and how to call it."""

    function_name: str
    source: str  #: module-level code: imports, helper functions, the function
    kwargs: dict[str, Any] = field(default_factory=dict)  #: may hold ``${...}`` references
    returns: list[str] = field(default_factory=list)
    module_dir: str = ""  #: the folder of the defining module, put on sys.path when run
    entry_point: str = ""  #: the file the function came from
    packages: list[str] = field(default_factory=list)
    task_type: str = "data_processing"
    project_name: str | None = None
    task_name: str | None = None
    docker: str = ""
    tags: list[str] = field(default_factory=list)
    #: False (decorator pipelines): kwargs are literal values and step outputs, never parsed
    #: for ``${...}`` references
    references: bool = True


class _Job:
    """``node.job``: the reference exposes the step's task as ``node.job.task``."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def task_id(self) -> str:
        return str(self.task.id)


@dataclass(eq=False)
class Node:
    name: str
    base_task_id: str | None = None
    task_factory_func: Callable[..., Any] | None = None
    function: FunctionSpec | None = None
    queue: str | None = None
    parents: list[str] = field(default_factory=list)
    timeout: float | None = None  #: seconds
    parameters: dict[str, Any] = field(default_factory=dict)
    configurations: dict[str, Any] = field(default_factory=dict)
    task_overrides: dict[str, Any] = field(default_factory=dict)
    executed: str | bool | None = None  #: the task id once run, False when skipped
    status: NodeStatus = NodeStatus.pending
    clone_task: bool = True
    job: _Job | None = None
    job_type: str | None = None
    job_started: float | None = None
    job_ended: float | None = None
    job_code_section: str | None = None
    skip_job: bool = False
    cache_executed_step: bool = False
    return_artifacts: list[str] = field(default_factory=list)
    monitor_metrics: list[Any] = field(default_factory=list)
    monitor_artifacts: list[Any] = field(default_factory=list)
    monitor_models: list[Any] = field(default_factory=list)
    continue_on_fail: bool = False
    continue_on_abort: bool = False
    skip_children_on_fail: bool = True
    skip_children_on_abort: bool = True
    stage: str | None = None
    retry_on_failure: int | Callable[..., bool] | None = None
    pre_execute_callback: Callable[..., Any] | None = None
    post_execute_callback: Callable[..., Any] | None = None
    status_change_callback: Callable[..., Any] | None = None
    explicit_docker_image: str | None = None
    #: debug mode: the user's function, called in-process instead of the stored code
    call: Callable[..., Any] | None = None
    # -- run state --------------------------------------------------------------------------
    retries: int = 0
    cache_key: str = ""
    cached_from: str = ""  #: the task whose outputs a cached node reuses
    force_recompute: bool = False
    status_message: str = ""

    @property
    def is_function(self) -> bool:
        return self.function is not None

    @property
    def duration(self) -> float | None:
        if self.job_started is None:
            return None
        import time

        return (self.job_ended or time.time()) - self.job_started

    def refs(self) -> list[Ref]:
        """Every ``${...}`` reference this step's inputs hold."""
        where = f"step {self.name!r}"
        refs = find_refs(self.parameters, where + " parameter_override")
        refs += find_refs(self.configurations, where + " configuration_overrides")
        refs += find_refs(self.task_overrides, where + " task_overrides")
        if self.function is not None and self.function.references:
            refs += find_refs(self.function.kwargs, where + " function_kwargs")
        return refs


def add_referenced_parents(node: Node) -> None:
    """Steps named in references become parents."""
    for ref in node.refs():
        if ref.step != PIPELINE and ref.step not in node.parents and ref.step != node.name:
            node.parents.append(ref.step)


def validate(nodes: Mapping[str, Node], pipeline_args: Iterable[str]) -> None:
    """Check the whole graph: parents and referenced steps exist, references are well formed and
    name real return values and arguments, and there is no cycle. Raises ``ValidationError``
    naming the step and the text at fault."""
    args = set(pipeline_args)
    for node in nodes.values():
        check_node(nodes, node, args)
    cycle = find_cycle(nodes)
    if cycle:
        raise ValidationError("the pipeline has a cycle: " + " -> ".join(cycle))


def check_node(nodes: Mapping[str, Node], node: Node, args: Iterable[str]) -> None:
    """Check one step against the graph ``nodes`` (see ``validate``), all but cycles: a step
    added after its parents (as steps are) cannot close one, so adding N steps costs N checks
    of one step rather than N checks of the whole graph."""
    args = args if isinstance(args, (set, frozenset, dict)) else set(args)
    for ref in node.refs():
        if ref.step == PIPELINE:
            if ref.name not in args:
                raise ValidationError(
                    f"step {node.name!r}: {ref.text} names no pipeline argument "
                    f"(arguments: {', '.join(sorted(args)) or 'none'}); "
                    "declare it with add_parameter()"
                )
            continue
        if ref.step == node.name:
            raise ValidationError(f"step {node.name!r}: {ref.text} refers to the step itself")
        target = nodes.get(ref.step)
        if target is None:
            raise ValidationError(
                f"step {node.name!r}: {ref.text} names an unknown step {ref.step!r} "
                f"(steps: {', '.join(sorted(nodes)) or 'none'})"
            )
        if ref.kind == "return":
            returns = target.function.returns if target.function else None
            if returns is None:
                raise ValidationError(
                    f"step {node.name!r}: {ref.text}: step {ref.step!r} is not a function "
                    "step, so it has no return values; use .id, .artifacts.NAME.url or "
                    ".parameters.Section/key"
                )
            if ref.name not in returns:
                raise ValidationError(
                    f"step {node.name!r}: {ref.text}: step {ref.step!r} returns "
                    f"{', '.join(returns) or 'nothing'} (see its function_return)"
                )
    for parent in node.parents:
        if parent == node.name:
            raise ValidationError(f"step {node.name!r} lists itself as a parent")
        if parent not in nodes:
            raise ValidationError(
                f"step {node.name!r}: parent {parent!r} is not a step of this pipeline "
                f"(steps: {', '.join(sorted(nodes)) or 'none'}); add it first"
            )


def find_cycle(nodes: Mapping[str, Node]) -> list[str] | None:
    """A cycle through parent links as a list of step names (first == last), or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(nodes, white)
    for start in nodes:
        if color[start] != white:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        color[start] = grey
        while stack:
            name, i = stack[-1]
            parents = [p for p in nodes[name].parents if p in nodes]
            if i < len(parents):
                stack[-1] = (name, i + 1)
                nxt = parents[i]
                if color[nxt] == grey:
                    cycle = [*path[path.index(nxt) :], nxt]
                    return list(reversed(cycle))
                if color[nxt] == white:
                    color[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                color[name] = black
                stack.pop()
                path.pop()
    return None


class Linked(Protocol):
    """A step as the graph functions below need it: its name and its parents' names (a
    ``Node``, or a step as a stored run shows it)."""

    name: str
    parents: list[str]


def children_of(nodes: Mapping[str, Linked]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for node in nodes.values():
        for p in node.parents:
            if p in out:
                out[p].append(node.name)
    return out


def descendants(nodes: Mapping[str, Linked], names: Iterable[str]) -> set[str]:
    """The named steps and every step downstream of them."""
    kids = children_of(nodes)
    seen: set[str] = set()
    todo = [n for n in names if n in nodes]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(kids[n])
    return seen
