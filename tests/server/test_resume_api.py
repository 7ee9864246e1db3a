"""``POST /api/v1/pipelines/{id}/resume`` over a real server (a thread of the test) on a real
store: a failed run resumed as a draft reuses the step it completed; the default queue is the
one the run was taken from, else ``services``; a running run, a completed run without a step,
an unknown step, a bad value and an unknown queue are refused with the API's error JSON and
nothing is made. Then the server's reaper (a ``stepline server`` process): a run whose
controller stopped sending heartbeats is marked interrupted with nobody asking, while a run
that keeps beating is left alone."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stepline.backend.protocol import Backend
from stepline.backend.sql.store import SqlBackend
from stepline.core.records import ConfigObject, NewTask, TaskFilter, TaskRecord
from stepline.core.status import TaskStatus
from stepline.pipeline.controller import PipelineController
from stepline.pipeline.recovery import RT_CONTROLLER, RT_HEARTBEAT, RT_REUSE
from stepline.pipeline.views import RT_RESUME_OF, RunView
from tests.faults import wait_until
from tests.serverproc import ServedBackend, running_server

PROJECT = "resume-api"


def make_numbers():
    return [1, 2, 3]


def check(numbers, flag: str, scale: int = 1):
    import os

    if os.path.exists(flag):
        raise RuntimeError(f"the flag {flag} is set")
    return sum(numbers) * scale


def double(value):
    return value * 2


def run(flag: Path) -> tuple[str, bool]:
    """A three-step run, in this process; its middle step fails while ``flag`` exists."""
    pipe = PipelineController(name="flagged", project=PROJECT, version="1.0.0")
    pipe.add_parameter("flag", str(flag))
    pipe.add_function_step("make", make_numbers, function_return=["numbers"])
    pipe.add_function_step(
        "check", check,
        function_kwargs={"numbers": "${make.numbers}", "flag": "${pipeline.flag}", "scale": 2},
        function_return=["value"],
    )  # fmt: skip
    pipe.add_function_step(
        "finish", double, function_kwargs={"value": "${check.value}"}, function_return=["out"]
    )
    ok = pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
    assert pipe.id is not None
    return pipe.id, bool(ok)


def controllers(backend: Backend) -> set[str]:
    return {r.id for r in backend.find_tasks(TaskFilter(type=["controller"], archived=None))}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "detail"}, body
    return dict(body)


@pytest.fixture
def failed(client: ServedBackend, tmp_path: Path) -> str:
    flag = tmp_path / "flag"
    flag.write_text("fail")
    run_id, ok = run(flag)
    assert not ok
    steps = {s.name: s.status for s in RunView.load(client, client.get_task(run_id)).steps}
    assert steps == {"make": "completed", "check": "failed", "finish": "skipped"}
    return run_id


def test_a_failed_run_resumed_as_a_draft_reuses_what_it_completed(
    client: ServedBackend, failed: str
) -> None:
    http = client._client
    r = http.post(f"/pipelines/{failed}/resume", json={"queue": None})
    assert r.status_code == 201, r.text
    draft = r.json()
    assert draft["id"] != failed
    assert (draft["status"], draft["project"], draft["version"]) == ("created", PROJECT, "1.0.0")
    rt = client.get_runtime(draft["id"])
    make_task = RunView.load(client, client.get_task(failed)).steps[0].task
    assert rt[RT_RESUME_OF] == failed
    assert json.loads(rt[RT_REUSE]) == {"make": make_task}
    assert client.get_task(draft["id"]).parent == failed
    # both runs know of each other
    assert http.get(f"/pipelines/{draft['id']}").json()["resume_of"] == failed
    assert http.get(f"/pipelines/{failed}").json()["resumed_by"] == [draft["id"]]

    # from a step, with a new value for one of its arguments
    r = http.post(
        f"/pipelines/{failed}/resume",
        json={"from_step": "check", "args": {"scale": "5"}, "queue": None},
    )
    assert r.status_code == 201, r.text
    rt = client.get_runtime(r.json()["id"])
    assert json.loads(rt[RT_REUSE]) == {"make": make_task}
    assert json.loads(rt["_rerun"]) == ["check", "finish"]
    assert json.loads(rt["_step_args"]) == {"check": {"kwargs/scale": ["5", "int"]}}


def test_the_default_queue_is_the_runs_own_else_services(
    client: ServedBackend, failed: str
) -> None:
    http = client._client
    # the run ran here: its attempt goes to services (a queue every store has)
    r = http.post(f"/pipelines/{failed}/resume", json={})
    assert r.status_code == 201, r.text
    first = r.json()["id"]
    assert r.json()["status"] == "queued"
    assert client.queue_tasks("services") == [first]
    # a run an agent took from a queue (the agent records which) is resumed on that queue
    client.create_queue("pipelines")
    client.set_runtime(failed, {"_queue": "pipelines"})
    r = http.post(f"/pipelines/{failed}/resume", json={})
    assert r.status_code == 201, r.text
    assert client.queue_tasks("pipelines") == [r.json()["id"]]
    assert client.queue_tasks("services") == [first]
    # ... when it still exists
    client.set_runtime(failed, {"_queue": "gone"})
    missing = error_of(http.post(f"/pipelines/{failed}/resume", json={}), 404)
    assert "queue 'gone' does not exist" in missing["message"]
    # a queue named in the request wins
    r = http.post(f"/pipelines/{failed}/resume", json={"queue": "services"})
    assert r.status_code == 201, r.text
    assert r.json()["id"] in client.queue_tasks("services")


def running_run(backend: Backend, beat: float) -> TaskRecord:
    """A controller task holding a one-step pipeline, in progress, last heard of at ``beat``
    from this process (alive)."""
    rec = backend.create_task(
        NewTask(
            name="running",
            project=PROJECT,
            type="controller",
            configs=[ConfigObject("Pipeline", json.dumps({"nodes": {"a": {"parents": []}}}))],
        )
    )
    backend.set_status(rec.id, TaskStatus.in_progress)
    backend.set_runtime(
        rec.id,
        {
            RT_HEARTBEAT: f"{beat:.3f}",
            RT_CONTROLLER: json.dumps({"host": socket.gethostname(), "pid": os.getpid()}),
        },
    )
    return backend.get_task(rec.id)


def test_refused_resumes_name_the_problem_and_make_nothing(
    client: ServedBackend, failed: str, tmp_path: Path
) -> None:
    http = client._client
    completed, ok = run(tmp_path / "no-flag")
    assert ok
    live = running_run(client, time.time())
    before = controllers(client)

    def refused(run_id: str, body: dict[str, Any], status: int = 422) -> str:
        message = error_of(http.post(f"/pipelines/{run_id}/resume", json=body), status)["message"]
        assert controllers(client) == before, f"a run was made for {body}"
        return str(message)

    assert "from_step" in refused(completed, {"queue": None})
    unknown = refused(failed, {"from_step": "nope", "queue": None})
    assert "'nope'" in unknown and "make, check, finish" in unknown
    typed = refused(failed, {"from_step": "check", "args": {"scale": "x"}, "queue": None})
    assert "scale" in typed and "int" in typed
    bogus = refused(failed, {"from_step": "check", "args": {"bogus": "1"}, "queue": None})
    assert "'bogus'" in bogus and "scale" in bogus
    assert "from_step" in refused(failed, {"args": {"scale": "3"}, "queue": None})
    assert "queue 'gpu' does not exist" in refused(failed, {"queue": "gpu"}, 404)
    running = refused(live.id, {"queue": None})
    assert "in_progress" in running and f"stepline pipelines abort {live.id}" in running
    # what is not a resume request at all
    refused(failed, {"from_step": 3})
    refused(failed, {"queue": None, "extra": 1})
    refused("0123456789abcdef0123456789abcdef", {"queue": None}, 404)
    assert client.get_task(live.id).status == TaskStatus.in_progress


def test_the_pages_link_a_run_and_its_resumes(
    client: ServedBackend, failed: str, tmp_path: Path
) -> None:
    api = client._client
    with httpx.Client(base_url=client.url, timeout=30) as http:
        page = http.get(f"/runs/{failed}").text
        assert 'id="resume-run"' in page and 'id="resume-dialog"' in page
        assert 'id="resume-run" data-resume' in page and "hidden>Resume<" not in page
        assert "resumed by" not in page
        draft = api.post(f"/pipelines/{failed}/resume", json={"queue": None}).json()["id"]
        page = http.get(f"/runs/{draft}").text
        assert f'class="resume-of" href="/runs/{failed}"' in page
        assert "hidden>Resume<" in page  # a draft has nothing to resume yet
        page = http.get(f"/runs/{failed}").text
        assert f'class="resumed-by" href="/runs/{draft}"' in page
        state = http.get(f"/runs/{failed}/state").json()
        assert state["links"]["resumed_by"] == [[draft, draft[:8], "flagged"]]
        assert (state["shown"], state["resumable"]) == ("failed", True)
        # what the dialog offers to change when re-running from a step
        got = http.get(f"/runs/{failed}/steps/check/args").json()
        assert {a["name"]: (a["value"], a["type"]) for a in got["args"]} == {
            "flag": (str(tmp_path / "flag"), "str"),
            "scale": ("2", "int"),
        }
        assert http.get(f"/runs/{failed}/steps/finish/args").json()["args"] == []
        missing = error_of(http.get(f"/runs/{failed}/steps/nope/args"), 404)
        assert "make, check, finish" in missing["message"]


# -- the server's reaper -------------------------------------------------------------------------
@pytest.fixture
def beating(backend: SqlBackend) -> Iterator[Callable[[str], None]]:
    """``beat(run_id)``: from now on a thread of the test sends the run's heartbeats, as
    its controller would (every 0.1 s), until the test ends."""
    ids: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.1):
            for run_id in list(ids):
                backend.set_runtime(run_id, {RT_HEARTBEAT: f"{time.time():.3f}"})

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield ids.append
    stop.set()
    thread.join(5)


def test_the_server_marks_runs_whose_controller_died_interrupted(
    home: Path, backend: SqlBackend, beating: Callable[[str], None]
) -> None:
    alive = running_run(backend, time.time())
    beating(alive.id)
    with running_server(home, STEPLINE_RUN_HEARTBEAT="0.2", STEPLINE_RUN_TIMEOUT="10") as server:
        reaped = []
        for _ in range(2):  # the second one after the live run has outlived a few looks
            dead = running_run(backend, time.time() - 3600)
            reaped.append(dead.id)
            wait_until(
                lambda: backend.get_task(dead.id).status != TaskStatus.in_progress,  # noqa: B023
                "the server to reap the run",
                timeout=10,
            )
            rec = backend.get_task(dead.id)
            assert (rec.status, rec.status_message) == (TaskStatus.stopped, "interrupted")
            assert "sent no heartbeat for 36" in rec.status_reason, rec.status_reason
        assert backend.get_task(alive.id).status == TaskStatus.in_progress
        said = [f"pipeline run {run_id} was interrupted" for run_id in reaped]
        wait_until(
            lambda: all(line in "".join(server.output or []) for line in said),
            f"the server's log to say {said}",
            timeout=10,
        )
        server.stop()
