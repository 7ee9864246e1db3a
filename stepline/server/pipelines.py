"""``/api/v1/pipelines``: pipeline runs as the UI and scripts want them (a run's steps with
their status, its arguments and rolled-up metrics) built from the same store calls as the rest
of the API (``pipeline.views``), and what a user does to runs: run one again with new
arguments, abort a run or one task (``pipeline.actions``), resume a run that failed, was
aborted or was interrupted (``pipeline.recovery``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from stepline.backend.http import wire as w
from stepline.backend.protocol import Backend
from stepline.core.errors import InvalidTransitionError
from stepline.core.records import TaskFilter
from stepline.core.status import TaskTypes
from stepline.pipeline import actions, recovery
from stepline.pipeline.views import RunView, run_summary
from stepline.server.hub import QUEUES, TASKS, Hub


class NewRunW(w.Wire):
    """A new run of a pipeline: new values of some of its arguments (``name`` for an
    argument, ``Section/name`` for any parameter; values as text, checked against the stored
    types), and the queue an agent runs it from (``null``: the run is left a draft)."""

    args: dict[w.Name, w.Text] = {}
    queue: w.Name | None = "services"


class ResumeW(w.Wire):
    """A new attempt of a run that reuses the steps it completed (``pipeline.recovery``).
    ``from_step``: re-execute this step and every step downstream of it (``null``: only what
    did not complete); ``args``: new values of some of that step's arguments (``name`` or
    ``Section/name``, values as text checked against the stored types). ``queue``: the queue
    an agent runs the attempt from; left out, the queue the run was taken from when an agent
    ran it, else ``services`` (the server does not run pipelines itself); ``null``: the
    attempt is left a draft, to run with ``python -m stepline.runner ID``."""

    from_step: w.Name | None = None
    args: dict[w.Name, w.Text] = {}
    queue: w.Name | None = None


#: the queue a resumed run goes to when neither the request nor the run names one
RESUME_QUEUE = "services"


def resume_queue(backend: Backend, run_id: str) -> str:
    """Where an attempt of the run goes unless told: the queue an agent took the run from,
    else ``services``."""
    return recovery.source_queue(backend, run_id) or RESUME_QUEUE


class AbortW(w.Wire):
    """Why (kept as the stopped tasks' status reason)."""

    reason: w.Text = ""


class StoppedW(w.Wire):
    stopped: list[str]


def router(hub: Hub) -> APIRouter:
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
        """One run: its arguments, its steps in graph order (parents, status, task and its
        status, times, cache reuse, retries, message) and its rolled-up metrics."""
        backend = be(request)
        return RunView.load(backend, backend.get_task(run_id)).to_json()

    @r.post("/pipelines/{run_id}/runs", response_model=dict[str, Any], status_code=201)
    def new_run(run_id: str, body: NewRunW, request: Request) -> Any:
        """Run the pipeline again: a copy of this run (its graph, arguments and code) with
        the arguments given changed, queued for an agent. Answers the new run's summary."""
        backend = be(request)
        rec = actions.new_run(backend, run_id, body.args, queue=body.queue)
        hub.notify(TASKS, QUEUES)
        return run_summary(rec, backend.get_runtime(rec.id))

    @r.post("/pipelines/{run_id}/resume", response_model=dict[str, Any], status_code=201)
    def resume_run(run_id: str, body: ResumeW, request: Request) -> Any:
        """Resume a run that failed, was aborted or was interrupted: a new run linked to it
        (``resume_of``) reuses every step it completed and runs the rest with the same
        arguments; with ``from_step``, that step and those after it run again. A run still
        running, or a completed one without ``from_step``, is refused (422), as are an unknown
        step or a bad value (422) and an unknown queue (404); nothing is made then. Answers
        the new run's summary."""
        backend = be(request)
        queue = body.queue if "queue" in body.model_fields_set else resume_queue(backend, run_id)
        rec = recovery.resume_run(
            backend, run_id, from_step=body.from_step, values=body.args, queue=queue
        )
        hub.notify(TASKS, QUEUES)
        return run_summary(rec, backend.get_runtime(rec.id))

    @r.post("/pipelines/{run_id}/abort", response_model=dict[str, Any])
    def abort_run(run_id: str, request: Request, body: AbortW | None = None) -> Any:
        """Abort a run: its own task and every step task of it that has not ended are
        stopped (a running pipeline then kills its steps and skips the rest; agents end the
        steps they run). Answers the run's summary."""
        backend = be(request)
        stopped = actions.abort_run(backend, run_id, body.reason if body else "")
        if stopped:
            hub.notify(TASKS, QUEUES)
        return run_summary(backend.get_task(run_id), backend.get_runtime(run_id))

    @r.post("/tasks/{task_id}/abort", response_model=StoppedW)
    def abort_task(task_id: str, request: Request, body: AbortW | None = None) -> Any:
        """Abort a task that has not ended (a pipeline run: with its steps). A queued task
        leaves its queue; a running one is ended by its agent or its pipeline. Answers the
        ids of the tasks stopped; a task that already ended is refused (409)."""
        backend = be(request)
        reason = (body.reason if body else "") or "aborted by the user"
        rec = backend.get_task(task_id)
        if rec.type == str(TaskTypes.controller) and actions.is_pipeline_run(backend, rec):
            stopped = actions.abort_run(backend, task_id, reason)
            if not stopped:  # it ended, and so did its steps
                raise InvalidTransitionError(task_id, rec.status.value, "stopped")
        else:
            stopped = [actions.abort_task(backend, task_id, reason).id]
        hub.notify(TASKS, QUEUES)
        return {"stopped": stopped}

    return r
