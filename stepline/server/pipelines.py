"""``/api/v1/pipelines``: pipeline runs as the UI and scripts want them (a run's steps with
their status, its arguments and rolled-up metrics) built from the same store calls as the rest
of the API (``pipeline.views``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from stepline.backend.protocol import Backend
from stepline.core.records import TaskFilter
from stepline.core.status import TaskTypes
from stepline.pipeline.views import RunView, run_summary


def router() -> APIRouter:
    r = APIRouter()

    def be(request: Request) -> Backend:
        return request.app.state.backend

    @r.get("/pipelines", response_model=list[dict[str, Any]])
    def list_runs(
        request: Request,
        project: str | None = None,
        name: str | None = None,
        archived: bool = False,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> Any:
        """Pipeline runs (tasks of type controller), newest first: id, name, project,
        version, run number, status, progress, times."""
        backend = be(request)
        records = backend.find_tasks(
            TaskFilter(
                project=project, name=name, type=[str(TaskTypes.controller)],
                archived=None if archived else False, limit=limit,
            )
        )  # fmt: skip
        return [run_summary(rec, backend.get_runtime(rec.id)) for rec in records]

    @r.get("/pipelines/{run_id}", response_model=dict[str, Any])
    def show_run(run_id: str, request: Request) -> Any:
        """One run: its arguments, its steps in graph order (parents, status, task, times,
        cache reuse, retries, message) and its rolled-up metrics."""
        backend = be(request)
        return RunView.load(backend, backend.get_task(run_id)).to_json()

    return r
