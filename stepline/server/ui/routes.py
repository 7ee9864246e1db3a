"""The pages of the web UI and the fragments their JavaScript fetches.

Every page is whole HTML from the server (it shows without JavaScript). Parts that change
while you look (a runs table, a run's steps, the queues) are fetched again through a *live*
endpoint: ``...?etag=E`` answers at once when what it shows differs from ``E``, else waits
(woken by the server's writes, or looking again every half second for writers that bypass
the server) for up to ``LIVE_WAIT`` seconds. A page left open costs one request per change,
not one per second.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from stepline.backend.protocol import Backend
from stepline.core.display import fmt_duration, fmt_size, fmt_time
from stepline.core.errors import NotFoundError, ValidationError
from stepline.core.status import FINAL, TaskStatus
from stepline.pipeline.views import ARGS_SECTION, RunView
from stepline.server.hub import OUTPUT, QUEUES, TASKS, Hub
from stepline.server.ui import charts, data
from stepline.server.ui.dag import layout

#: longest wait of a live request
LIVE_WAIT = 20.0
#: least time between two looks of one live request (a burst of writes is one answer)
LIVE_GAP = 0.15
STATUSES = [s.value for s in TaskStatus]
NODE_STATUSES = [
    "pending",
    "queued",
    "running",
    "completed",
    "cached",
    "failed",
    "skipped",
    "aborted",
]


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("stepline.server", "ui/templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ts=fmt_time, dur=fmt_duration, size=fmt_size)
    env.globals.update(chart=charts.line_chart, NODE_STATUSES=NODE_STATUSES, STATUSES=STATUSES)
    return env


#: the stylesheet, script and icon
STATIC = Path(__file__).parent / "static"
_env_made: list[Environment] = []


def env() -> Environment:
    """The one template environment (made on first use)."""
    if not _env_made:
        from stepline import __version__

        made = _env()
        made.globals["version"] = __version__
        _env_made.append(made)
    return _env_made[0]


def render(name: str, request: Request, code: int = 200, **ctx: Any) -> HTMLResponse:
    html = env().get_template(name).render(request=request, path=request.url.path, **ctx)
    return HTMLResponse(html, status_code=code)


def not_found(request: Request) -> HTMLResponse:
    return render(
        "error.html", request, code=404, title="Not found",
        message=f"There is no page at {request.url.path}.",
    )  # fmt: skip


def _etag(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def router(hub: Hub) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    page = render

    def be(request: Request) -> Backend:
        return request.app.state.backend

    def fragment(name: str, **ctx: Any) -> str:
        return env().get_template(name).render(**ctx)

    async def live(
        request: Request, look: Callable[[], dict[str, Any]], etag: str | None
    ) -> JSONResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (LIVE_WAIT if etag else 0)
        while True:
            events = hub.snapshot(TASKS, OUTPUT, QUEUES)
            payload = await run_in_threadpool(look)
            tag = _etag(payload)
            left = deadline - loop.time()
            if tag != etag or left <= 0 or await request.is_disconnected():
                return JSONResponse({"etag": tag, **payload}, headers={"Cache-Control": "no-store"})
            await hub.sleep(events, min(left, hub.external_poll))
            await asyncio.sleep(LIVE_GAP)

    def guarded(request: Request, build: Callable[[], HTMLResponse]) -> HTMLResponse:
        try:
            return build()
        except NotFoundError as exc:
            return page("error.html", request, code=404, title="Not found", message=str(exc))
        except ValidationError as exc:
            return page("error.html", request, code=422, title="Cannot show this", message=str(exc))

    # -- pages ---------------------------------------------------------------------------------
    @r.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/pipelines", status_code=307)

    @r.get("/login", response_class=HTMLResponse)
    def login(request: Request, next: str = "/pipelines") -> HTMLResponse:
        target = next if next.startswith("/") and not next.startswith("//") else "/pipelines"
        return page("login.html", request, next=target)

    @r.get("/pipelines", response_class=HTMLResponse)
    def pipelines_page(request: Request) -> HTMLResponse:
        rows = data.pipelines(be(request))
        return page("pipelines.html", request, pipelines=rows, title="Pipelines")

    @r.get("/pipelines/rows")
    async def pipelines_rows(request: Request, etag: str | None = None) -> JSONResponse:
        def look() -> dict[str, Any]:
            rows = data.pipelines(be(request))
            return {"html": fragment("pipelines_rows.html", pipelines=rows)}

        return await live(request, look, etag)

    @r.get("/runs", response_class=HTMLResponse)
    def runs_page(
        request: Request, project: str | None = None, pipeline: str | None = None
    ) -> HTMLResponse:
        def build() -> HTMLResponse:
            backend = be(request)
            runs = data.runs_of(backend, project, pipeline)
            newest = runs[0].summary["id"] if runs else None
            form = _new_run_form(backend, newest) if newest else None
            return page(
                "runs.html",
                request,
                runs=runs,
                project=project or "",
                pipeline=pipeline or "",
                versions=sorted(
                    {r.summary["version"] or "" for r in runs} - {""},
                    key=data.version_key,
                    reverse=True,
                ),
                form=form,
                title=pipeline or "Pipeline runs",
            )

        return guarded(request, build)

    @r.get("/runs/rows")
    async def runs_rows(
        request: Request,
        project: str | None = None,
        pipeline: str | None = None,
        etag: str | None = None,
    ) -> JSONResponse:
        def look() -> dict[str, Any]:
            runs = data.runs_of(be(request), project, pipeline)
            return {"html": fragment("runs_rows.html", runs=runs)}

        return await live(request, look, etag)

    @r.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(run_id: str, request: Request) -> HTMLResponse:
        def build() -> HTMLResponse:
            backend = be(request)
            view = RunView.load(backend, backend.get_task(run_id))
            parents = {s.name: s.parents for s in view.steps}
            shape = layout(parents)
            state = data.run_state(view, data.run_links(backend, view))
            rt = view.runtime
            key = data.pipeline_key(view.task, rt)
            return page(
                "run.html",
                request,
                view=view,
                run=view.to_json(),
                shape=shape,
                state=state,
                steps={s.name: s for s in view.steps},
                args=data.arg_rows(backend, view.task),
                source=data.source_run(backend, view.task),
                artifacts=[data.preview(backend, a) for a in backend.get_artifacts(run_id)],
                pipeline=data.split_key(key, view.task.project),
                form=_new_run_form(backend, run_id),
                resume=data.resume_form(backend, view),
                title=view.task.name,
            )

        return guarded(request, build)

    @r.get("/runs/{run_id}/info", response_class=HTMLResponse)
    def run_info(run_id: str, request: Request) -> HTMLResponse:
        """The run's panel: arguments, rolled-up metrics, artifacts."""
        backend = be(request)
        view = RunView.load(backend, backend.get_task(run_id))
        html = fragment(
            "run_info.html",
            run=view.to_json(),
            state=data.run_state(view),
            args=data.arg_rows(backend, view.task),
            artifacts=[data.preview(backend, a) for a in backend.get_artifacts(run_id)],
        )
        return HTMLResponse(html)

    @r.get("/runs/{run_id}/state")
    async def run_state(run_id: str, request: Request, etag: str | None = None) -> JSONResponse:
        def look() -> dict[str, Any]:
            backend = be(request)
            view = RunView.load(backend, backend.get_task(run_id))
            return data.run_state(view, data.run_links(backend, view))

        return await live(request, look, etag)

    @r.get("/runs/{run_id}/steps/{step}", response_class=HTMLResponse)
    def step_panel(run_id: str, step: str, request: Request) -> HTMLResponse:
        backend = be(request)
        view = RunView.load(backend, backend.get_task(run_id))
        found = next((s for s in view.steps if s.name == step), None)
        if found is None:
            raise NotFoundError(f"run {run_id} has no step {step!r}")
        node = data.dag_nodes(backend, run_id).get(step, {})
        ended = view.task.status in FINAL  # a step of an ended run can be re-run from
        if not found.task:
            html = fragment(
                "step_pending.html", step=found, node=node, run_id=run_id, run_ended=ended
            )
            return HTMLResponse(html)
        panel = data.task_panel(backend, found.task, run_id=run_id, step=step, node=node)
        data.cache_reuse(backend, panel, found.cached_from, view)
        html = fragment("panel.html", p=panel, step=found, standalone=False, run_ended=ended)
        return HTMLResponse(html)

    @r.get("/runs/{run_id}/steps/{step}/args")
    def step_args(run_id: str, step: str, request: Request) -> JSONResponse:
        """The arguments of a step a resume from it can give new values (the resume
        dialog's form)."""
        backend = be(request)
        view = RunView.load(backend, backend.get_task(run_id))
        return JSONResponse(data.step_args(backend, view, step))

    @r.get("/tasks", response_class=HTMLResponse)
    def tasks_page(
        request: Request,
        project: str | None = None,
        status: str | None = None,
        type: str | None = None,
        steps: bool = False,
    ) -> HTMLResponse:
        def build() -> HTMLResponse:
            backend = be(request)
            if status and status not in STATUSES:
                raise ValidationError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
            records = data.tasks_list(
                backend, project=project, status=status, kind=type, steps=steps
            )
            return page(
                "tasks.html",
                request,
                tasks=records,
                projects=backend.list_projects(),
                project=project or "",
                status=status or "",
                type=type or "",
                steps=steps,
                title="Tasks",
            )

        return guarded(request, build)

    @r.get("/tasks/{task_id}", response_class=HTMLResponse)
    def task_page(task_id: str, request: Request) -> HTMLResponse:
        def build() -> HTMLResponse:
            backend = be(request)
            panel = data.task_panel(backend, task_id)
            run = None
            if panel.runtime.get("_pipeline_id"):
                try:
                    run = backend.get_task(panel.runtime["_pipeline_id"])
                except NotFoundError:
                    run = None
            return page("task.html", request, p=panel, run=run, title=panel.task.name)

        return guarded(request, build)

    @r.get("/tasks/{task_id}/panel", response_class=HTMLResponse)
    def task_fragment(task_id: str, request: Request) -> HTMLResponse:
        panel = data.task_panel(be(request), task_id)
        return HTMLResponse(fragment("panel.html", p=panel, step=None, standalone=False))

    @r.get("/tasks/{task_id}/log.txt", response_class=PlainTextResponse)
    def task_log(task_id: str, request: Request) -> PlainTextResponse:
        backend = be(request)
        backend.get_task(task_id)
        lines = backend.get_log(task_id)
        text = "".join(ln.text if ln.text.endswith("\n") else ln.text + "\n" for ln in lines)
        return PlainTextResponse(
            text, headers={"Content-Disposition": f'attachment; filename="{task_id}.log"'}
        )

    @r.get("/queues", response_class=HTMLResponse)
    def queues_page(request: Request) -> HTMLResponse:
        queues, agents, tasks = data.queues_view(be(request))
        return page(
            "queues.html", request, queues=queues, agents=agents, tasks=tasks, now=time.time(),
            title="Queues and agents",
        )  # fmt: skip

    @r.get("/queues/rows")
    async def queues_rows(request: Request, etag: str | None = None) -> JSONResponse:
        def look() -> dict[str, Any]:
            queues, agents, tasks = data.queues_view(be(request))
            # the ages of heartbeats are shown by the browser: leave them out of the etag
            seen = [(a.id, a.running, round(a.last_seen / 5)) for a in agents]
            html = fragment(
                "queues_rows.html", queues=queues, agents=agents, tasks=tasks, now=time.time()
            )
            return {"html": html, "seen": seen}

        return await live(request, look, etag)

    @r.get("/compare", response_class=HTMLResponse)
    def compare_page(
        request: Request, a: Annotated[str, Query()], b: Annotated[str, Query()]
    ) -> HTMLResponse:
        def build() -> HTMLResponse:
            backend = be(request)
            views = [RunView.load(backend, backend.get_task(i)) for i in (a, b)]
            names = sorted(set(views[0].args) | set(views[1].args))
            metrics = _metric_rows(views)
            plots = _shared_plots(backend, views)
            place: dict[str, int] = {}  # a step's position in the first run that has it
            for v in views:
                for i, step in enumerate(v.steps):
                    place.setdefault(step.name, i)
            steps = sorted(place, key=place.__getitem__)
            by_step = [{s.name: s for s in v.steps} for v in views]
            return page(
                "compare.html", request, views=views, names=names, metrics=metrics,
                plots=plots, steps=steps, by_step=by_step, title="Compare runs",
            )  # fmt: skip

        return guarded(request, build)

    return r


def _new_run_form(backend: Backend, run_id: str) -> dict[str, Any]:
    rec = backend.get_task(run_id)
    args = [p for p in backend.get_params(run_id) if p.section == ARGS_SECTION]
    queues = [q.name for q in backend.get_queues()]
    default = "services" if "services" in queues or not queues else queues[0]
    return {
        "run_id": run_id,
        "name": rec.name,
        "args": args,
        "queues": queues or ["services"],
        "queue": default,
    }


def _metric_rows(views: list[RunView]) -> list[tuple[str, str, list[float | None]]]:
    keys = sorted({(t, s) for v in views for t, ss in v.metrics.items() for s in ss})
    rows = []
    for title, series in keys:
        values = []
        for v in views:
            last = v.metrics.get(title, {}).get(series, {}).get("last")
            values.append(float(last) if isinstance(last, (int, float)) else None)
        rows.append((title, series, values))
    return rows


def _shared_plots(
    backend: Backend, views: list[RunView]
) -> list[tuple[str, dict[str, list[tuple[int, float]]]]]:
    """Each title both runs report, their series drawn together (series named by run)."""
    per_run = [dict(data._plots(backend, v.task.id)) for v in views]
    out = []
    for title in per_run[0]:
        if title not in per_run[1] or title.startswith(":"):
            continue
        merged: dict[str, list[tuple[int, float]]] = {}
        for label, plots in zip(("A", "B"), per_run, strict=True):
            for series, pts in plots[title].items():
                merged[f"{label} {series}"] = pts
        out.append((title, merged))
    return out
