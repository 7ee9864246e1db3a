"""What the pages show, read from the store with ``Backend`` calls (and the SQL store's
``get_runtimes`` when it has it, so a list of runs costs one read, not one per run)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from stepline.backend.protocol import Backend
from stepline.core.errors import NotFoundError, StepLineError
from stepline.core.records import (
    AgentRecord,
    ArtifactRecord,
    Param,
    TaskFilter,
    TaskRecord,
)
from stepline.core.status import FINAL, TaskStatus, TaskTypes
from stepline.pipeline.recovery import NOT_ARGS, ResumePlan, runtimes
from stepline.pipeline.views import (
    ARGS_SECTION,
    CONFIG_DAG,
    INTERRUPTED,
    RT_NAME,
    RT_RUN,
    RT_VERSION,
    RunView,
    last_line,
    run_summary,
    task_duration,
)
from stepline.server.pipelines import resume_queue

#: most runs read for the pipelines page and a runs table
MAX_RUNS = 5000
#: log lines shown at first in a panel (the rest is a download)
LOG_TAIL = 400
#: most points drawn per series of a plot
PLOT_POINTS = 600
#: artifacts up to this size whose type is text get an inline preview of their start
PREVIEW_BYTES = 4096
TEXT_TYPES = ("json", "text", "str", "csv", "yaml", "markdown")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")

_RUN_SUFFIX = re.compile(r" #\d+$")


def shown_status(rec: TaskRecord) -> str:
    """The status a run's badge shows: its status, or ``interrupted`` for a run stopped
    because its controller died (``pipeline.recovery``)."""
    if rec.status == TaskStatus.stopped and rec.status_message == INTERRUPTED:
        return INTERRUPTED
    return rec.status.value


def pipeline_key(rec: TaskRecord, runtime: dict[str, str]) -> str:
    """``project/name`` of the pipeline ``rec`` is a run of."""
    key = runtime.get(RT_NAME)
    if key:
        return key
    return f"{rec.project}/{_RUN_SUFFIX.sub('', rec.name)}"


def split_key(key: str, project: str) -> str:
    """The pipeline's name out of its key."""
    prefix = project.strip("/") + "/"
    return key[len(prefix) :] if key.startswith(prefix) else key.rsplit("/", 1)[-1]


def version_key(version: str | None) -> tuple[Any, ...]:
    parts = []
    for p in re.split(r"[.\-+]", version or ""):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return tuple(parts)


@dataclass
class Run:
    summary: dict[str, Any]
    key: str
    user: str
    where: str


def controller_runs(
    backend: Backend, project: str | None = None, limit: int = MAX_RUNS
) -> list[Run]:
    records = backend.find_tasks(
        TaskFilter(project=project, type=[str(TaskTypes.controller)], limit=limit)
    )
    rts = runtimes(
        backend,
        [r.id for r in records],
        [RT_NAME, RT_VERSION, RT_RUN, "progress", "_agent", "_queue"],
    )
    agents = agent_names(backend)
    out = []
    for rec in records:
        rt = rts.get(rec.id, {})
        agent = rt.get("_agent")
        where = agents.get(agent, agent) if agent else "this machine"
        if rt.get("_queue"):
            where = f"{where} ({rt['_queue']})"
        summary = run_summary(rec, rt)
        summary["shown"] = shown_status(rec)
        out.append(Run(summary, pipeline_key(rec, rt), rec.user, where))
    return out


def agent_names(backend: Backend) -> dict[str, str]:
    try:
        return {a.id: a.name for a in backend.get_agents()}
    except StepLineError:
        return {}


@dataclass
class Pipeline:
    key: str
    project: str
    name: str
    versions: list[str]
    runs: int
    last: dict[str, Any]


def pipelines(backend: Backend) -> list[Pipeline]:
    by_key: dict[str, list[Run]] = {}
    for run in controller_runs(backend):
        by_key.setdefault(run.key, []).append(run)
    out = []
    for key, runs in by_key.items():
        last = runs[0].summary  # newest first
        versions = sorted(
            {r.summary["version"] for r in runs if r.summary["version"]},
            key=version_key,
            reverse=True,
        )
        project = last["project"]
        out.append(Pipeline(key, project, split_key(key, project), versions, len(runs), last))
    out.sort(key=lambda p: (p.project.lower(), p.name.lower()))
    return out


def runs_of(backend: Backend, project: str | None, pipeline: str | None) -> list[Run]:
    runs = controller_runs(backend, project)
    if pipeline:
        key = f"{(project or '').strip('/')}/{pipeline}"
        runs = [
            r for r in runs if r.key == key or (not project and split_key(r.key, "") == pipeline)
        ]
    return runs


# -- a run --------------------------------------------------------------------------------------
def dag_nodes(backend: Backend, run_id: str) -> dict[str, dict[str, Any]]:
    """The stored DAG's entry of each step (parameters, queue, flags)."""
    for c in backend.get_configs(run_id):
        if c.name == CONFIG_DAG:
            try:
                nodes = json.loads(c.value).get("nodes") or {}
            except (ValueError, AttributeError):
                return {}
            return {str(k): v for k, v in nodes.items() if isinstance(v, dict)}
    return {}


def run_state(view: RunView, links: dict[str, Any] | None = None) -> dict[str, Any]:
    """What changes while a run goes: its status and each step's status and times, and
    (``links``, see ``run_links``) the runs it resumes or that resume it."""
    rec = view.task
    shown = shown_status(rec)
    message = rec.status_message or rec.status_reason
    if shown == INTERRUPTED:  # the badge says it: the message tells why
        message = last_line(rec.status_reason) or message
    return {
        "status": rec.status.value,
        "shown": shown,
        "final": rec.status in FINAL,
        "resumable": rec.status in (TaskStatus.failed, TaskStatus.stopped),
        "progress": view.progress,
        "started": rec.started,
        "completed": rec.completed,
        "message": message,
        "steps": {s.name: [s.status, s.started, s.ended, s.task or ""] for s in view.steps},
        "links": links or {"resume_of": None, "resumed_by": []},
    }


def run_links(backend: Backend, view: RunView) -> dict[str, Any]:
    """The run this one resumes and the runs that resume it, each as ``[id, text, name]``:
    the run resumed is named (with its run number), the runs resuming it by run number (the
    start of the id for one that has not started); a run since deleted is left out."""
    ids = ([view.resume_of] if view.resume_of else []) + view.resumed_by
    if not ids:
        return {"resume_of": None, "resumed_by": []}
    found = {r.id: r for r in backend.find_tasks(TaskFilter(ids=ids, archived=None))}
    numbers = runtimes(backend, list(found), [RT_RUN])

    def link(run_id: str, named: bool) -> list[str] | None:
        rec = found.get(run_id)
        if rec is None:
            return None
        number = numbers.get(run_id, {}).get(RT_RUN)
        label = f"#{number}" if number else run_id[:8]
        text = label
        if named:
            text = rec.name if rec.name.endswith(f" {label}") else f"{rec.name} ({label})"
        return [run_id, text, rec.name]

    return {
        "resume_of": link(view.resume_of, True) if view.resume_of else None,
        "resumed_by": [x for x in (link(i, False) for i in view.resumed_by) if x is not None],
    }


def step_args(backend: Backend, view: RunView, step: str) -> dict[str, Any]:
    """The arguments of a run's step that a resume from it can change (``pipeline.recovery``):
    ``{"step", "args": [{"name", "value", "type"}], "note"}``; ``note`` says why there are
    none."""
    found = next((s for s in view.steps if s.name == step), None)
    if found is None:
        raise NotFoundError(
            f"run {view.task.id} has no step {step!r}; its steps: "
            f"{', '.join(s.name for s in view.steps) or 'none'}"
        )
    if not found.task:
        return {"step": step, "args": [], "note": "This step never ran: it runs again with the "
                "arguments the pipeline gives it."}  # fmt: skip
    args = [
        {
            "name": p.name if p.section == "kwargs" else p.key,
            "value": p.value,
            "type": p.type,
        }
        for p in backend.get_params(found.task)
        if p.section not in NOT_ARGS
    ]
    note = "" if args else "This step takes no arguments that can be set as values."
    return {"step": step, "args": args, "note": note}


def resume_form(backend: Backend, view: RunView) -> dict[str, Any]:
    """What the resume dialog offers: the run's steps, the queues, and the queue the attempt
    goes to unless changed (the one an agent took the run from, else ``services``)."""
    queues = [q.name for q in backend.get_queues()]
    default = resume_queue(backend, view.task.id)
    if default not in queues:
        queues.append(default)
    return {
        "run_id": view.task.id,
        "name": view.task.name,
        "steps": [s.name for s in view.steps],
        "queues": queues,
        "queue": default,
    }


def source_run(backend: Backend, rec: TaskRecord) -> TaskRecord | None:
    """The run ``rec`` was cloned from (a new run from the UI or ``pipelines run``)."""
    if not rec.parent:
        return None
    try:
        parent = backend.get_task(rec.parent)
    except NotFoundError:
        return None
    return parent if parent.type == str(TaskTypes.controller) else None


def arg_rows(backend: Backend, rec: TaskRecord) -> list[tuple[Param, str | None]]:
    """The run's arguments, each with the value it had in the run it was cloned from when
    that differs (None otherwise)."""
    args = [p for p in backend.get_params(rec.id) if p.section == ARGS_SECTION]
    source = source_run(backend, rec)
    before = (
        {p.name: p.value for p in backend.get_params(source.id) if p.section == ARGS_SECTION}
        if source
        else {}
    )
    return [
        (p, before[p.name] if p.name in before and before[p.name] != p.value else None)
        for p in args
    ]


# -- a task's panels -----------------------------------------------------------------------------
@dataclass
class ArtifactView:
    record: ArtifactRecord
    text: str | None = None  #: the start of a small text artifact
    image: bool = False


@dataclass
class InputView:
    arg: str
    task_id: str
    name: str


@dataclass
class TaskPanel:
    task: TaskRecord
    runtime: dict[str, str]
    params: dict[str, list[Param]]
    overridden: dict[str, str]  #: "Section/name" -> where the value came from
    configs: list[Any]
    inputs: list[InputView]
    artifacts: list[ArtifactView]
    models: list[Any]
    plots: list[tuple[str, dict[str, list[tuple[int, float]]]]]
    last_metrics: dict[str, dict[str, dict[str, float]]]
    log: list[Any]
    log_total: int
    duration: float | None
    agent: str
    queue: str
    cached_from: TaskRecord | None = None
    cached_why: str = ""
    #: the run whose task a reused step took, when the run it belongs to is a resume
    reused_run: TaskRecord | None = None
    step: str = ""
    run_id: str = ""
    node: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.task.status not in FINAL


def preview(backend: Backend, rec: ArtifactRecord) -> ArtifactView:
    view = ArtifactView(rec)
    if rec.content_type in IMAGE_TYPES:
        view.image = True
    elif (rec.type in TEXT_TYPES or rec.content_type.startswith("text/")) and rec.size:
        try:
            path = backend.artifact_local_path(rec, verify=False)
            with open(path, "rb") as fh:
                head = fh.read(PREVIEW_BYTES)
            view.text = head.decode("utf-8", errors="replace") + (
                "\n…" if rec.size > PREVIEW_BYTES else ""
            )
        except (OSError, StepLineError):
            view.text = None
    return view


def _plots(backend: Backend, task_id: str) -> list[tuple[str, dict[str, list[tuple[int, float]]]]]:
    by_title: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for pt in backend.get_scalars(task_id):
        by_title.setdefault(pt.title, {}).setdefault(pt.series, []).append((pt.iteration, pt.value))
    out = []
    for title in sorted(by_title, key=lambda t: (t.startswith(":"), t)):
        series = {}
        for name, points in by_title[title].items():
            points.sort()
            if len(points) > PLOT_POINTS:
                step = len(points) / PLOT_POINTS
                points = [points[int(i * step)] for i in range(PLOT_POINTS)] + [points[-1]]
            series[name] = points
        out.append((title, series))
    return out


def task_panel(
    backend: Backend,
    task_id: str,
    *,
    run_id: str = "",
    step: str = "",
    node: dict[str, Any] | None = None,
) -> TaskPanel:
    rec = backend.get_task(task_id)
    runtime = backend.get_runtime(task_id)
    params: dict[str, list[Param]] = {}
    for p in backend.get_params(task_id):
        params.setdefault(p.section, []).append(p)
    node = node or {}
    overridden = {}
    for key, value in (node.get("parameters") or {}).items():
        overridden[str(key)] = str(value)
    function = node.get("function")
    if not isinstance(function, dict):
        function = {}
    for key, value in (function.get("kwargs") or {}).items():
        overridden[f"kwargs/{key}"] = str(value)
        overridden[f"kwargs_artifacts/{key}"] = str(value)
    inputs = []
    for p in params.get("kwargs_artifacts", []):
        src, _, name = p.value.partition("/")
        inputs.append(InputView(p.name, src, name))
    artifacts = [preview(backend, a) for a in backend.get_artifacts(task_id)]
    agent_id = runtime.get("_agent", "")
    agent = agent_names(backend).get(agent_id, agent_id) if agent_id else ""
    panel = TaskPanel(
        task=rec,
        runtime=runtime,
        params=params,
        overridden=overridden,
        configs=[c for c in backend.get_configs(task_id) if c.name != CONFIG_DAG],
        inputs=inputs,
        artifacts=artifacts,
        models=backend.get_models(task_id),
        plots=_plots(backend, task_id),
        last_metrics=backend.get_last_scalars(task_id),
        log=backend.get_log(task_id, tail=LOG_TAIL),
        log_total=backend.count_log(task_id),
        duration=task_duration(rec),
        agent=agent,
        queue=runtime.get("_queue", ""),
        step=step,
        run_id=run_id,
        node=node,
    )
    return panel


def cache_reuse(
    backend: Backend, panel: TaskPanel, cached_from: str | None, view: RunView | None = None
) -> None:
    """For a cached step: the task reused and why (the same cache key); in a run that resumes
    another (``view``), a step's task reused from the resumed run says so, and which run it
    belongs to."""
    if not cached_from:
        return
    try:
        panel.cached_from = backend.get_task(cached_from)
    except NotFoundError:
        panel.cached_why = f"task {cached_from} (since deleted)"
        return
    key = panel.runtime.get("_cache_key", "")
    plan = None
    if view is not None and view.resume_of:
        try:
            plan = ResumePlan.of(view.runtime)
        except StepLineError:  # a damaged plan: the step shows as any cached one
            plan = None
    if plan is not None and plan.reuse.get(panel.step) == cached_from:
        owner = panel.cached_from.parent
        if owner:
            try:
                panel.reused_run = backend.get_task(owner)
            except NotFoundError:
                panel.reused_run = None
        panel.cached_why = (
            f"the step completed in the run this one resumes, and its cache key "
            f"{key[:12]}… (code and inputs) is unchanged"
            if key
            else "the step completed in the run this one resumes"
        )
        return
    panel.cached_why = (
        f"same cache key {key[:12]}…: code, parameters (inputs by content hash), "
        "configurations, packages and container are all unchanged"
        if key
        else "its inputs and code matched an earlier completed task"
    )


def queues_view(
    backend: Backend,
) -> tuple[list[dict[str, Any]], list[AgentRecord], dict[str, TaskRecord]]:
    queues = []
    wanted: set[str] = set()
    for q in backend.get_queues():
        ids = backend.queue_tasks(q.name)
        queues.append({"name": q.name, "pending": len(ids), "ids": ids[:50]})
        wanted.update(ids[:50])
    agents = backend.get_agents()
    for a in agents:
        wanted.update(a.running)
    tasks = (
        {r.id: r for r in backend.find_tasks(TaskFilter(ids=sorted(wanted), archived=None))}
        if wanted
        else {}
    )
    return queues, agents, tasks


def tasks_list(
    backend: Backend,
    *,
    project: str | None,
    status: str | None,
    kind: str | None,
    steps: bool,
    limit: int = 500,
) -> list[TaskRecord]:
    flt = TaskFilter(
        project=project or None,
        status=[TaskStatus(status)] if status else None,
        type=[kind] if kind else None,
        limit=limit * 3 if not steps else limit,
    )
    records = backend.find_tasks(flt)
    if not steps:
        controllers = {r.id for r in records if r.type == str(TaskTypes.controller)}
        parents = {r.parent for r in records if r.parent} - controllers
        if parents:
            controllers |= {
                r.id
                for r in backend.find_tasks(
                    TaskFilter(ids=sorted(parents), type=[str(TaskTypes.controller)], archived=None)
                )
            }
        records = [r for r in records if not (r.parent and r.parent in controllers)]
    return records[:limit]
