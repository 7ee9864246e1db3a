"""``/api/v1/pipelines``: a pipeline run through the HTTP client (debug mode, the server in a
thread of the test) is listed with its version and progress, and its detail (steps in graph
order, arguments, metrics) matches what ``stepline pipelines show --json`` prints through the
same server. Then the actions: a new run with new arguments, aborting a run or a task."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from stepline.cli.main import app
from stepline.core.records import NewTask
from stepline.pipeline.controller import PipelineController
from stepline.pipeline.views import RunView
from tests.serverproc import ServedBackend


def make_numbers(count=3):
    return list(range(1, count + 1))


def total(numbers, scale=1):
    return sum(numbers) * scale


def test_runs_and_a_run_through_the_api(client: ServedBackend) -> None:
    pipe = PipelineController(name="numbers", project="api-pipes", version="2.1.0")
    pipe.add_parameter("scale", 3)
    pipe.add_function_step("make", make_numbers, function_return=["numbers"])
    pipe.add_function_step(
        "sum", total, function_kwargs={"numbers": "${make.numbers}", "scale": "${pipeline.scale}"},
        function_return=["value"],
    )  # fmt: skip
    assert pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
    run_id = pipe.id
    assert run_id is not None

    runs = client._call("GET", "/pipelines", params={"project": "api-pipes"})
    assert [(r["id"], r["version"], r["status"], r["progress"]) for r in runs] == [
        (run_id, "2.1.0", "completed", 100)
    ]
    detail = client._call("GET", f"/pipelines/{run_id}")
    assert [s["name"] for s in detail["steps"]] == ["make", "sum"]
    assert detail["steps"][1]["parents"] == ["make"]
    assert {s["status"] for s in detail["steps"]} == {"completed"}
    assert detail["args"] == {"scale": "3"}

    result = CliRunner().invoke(app, ["pipelines", "show", run_id, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    for key in ("id", "version", "status", "args", "metrics"):
        assert shown[key] == detail[key]
    assert [s["name"] for s in shown["steps"]] == ["make", "sum"]

    r = client._client.get("/pipelines/0123456789abcdef0123456789abcdef")
    assert r.status_code == 404 and r.json()["error"] == "TaskNotFoundError"


# -- actions -----------------------------------------------------------------------------------
def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "detail"}, body
    return dict(body)


def test_a_new_run_and_aborts_through_the_api(client: ServedBackend) -> None:
    pipe = PipelineController(name="again", project="api-pipes", version="1.0.0")
    pipe.add_parameter("scale", 3)
    pipe.add_function_step("make", make_numbers, function_return=["numbers"])
    assert pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
    run_id = pipe.id
    assert run_id is not None
    http = client._client

    # a draft with a new value
    r = http.post(f"/pipelines/{run_id}/runs", json={"args": {"scale": "5"}, "queue": None})
    assert r.status_code == 201, r.text
    draft = r.json()
    assert draft["id"] != run_id
    assert (draft["status"], draft["version"], draft["project"]) == (
        "created",
        "1.0.0",
        "api-pipes",
    )
    params = {p.key: (p.value, p.type) for p in client.get_params(draft["id"])}
    assert params["Args/scale"] == ("5", "int")

    # queued (the default queue is services)
    missing = error_of(http.post(f"/pipelines/{run_id}/runs", json={"queue": "gpu"}), 404)
    assert "queue 'gpu' does not exist" in missing["message"]
    r = http.post(f"/pipelines/{run_id}/runs", json={"args": {"Args/scale": "7"}})
    assert r.status_code == 201, r.text
    queued = r.json()
    assert queued["status"] == "queued"
    assert client.queue_tasks("services") == [queued["id"]]

    # refused, naming what is wrong; nothing is made
    runs_before = client._call("GET", "/pipelines", params={"project": "api-pipes"})
    bogus = error_of(http.post(f"/pipelines/{run_id}/runs", json={"args": {"bogus": "1"}}), 422)
    assert "'Args/bogus'" in bogus["message"] and "Args/scale" in bogus["message"]
    typed = error_of(http.post(f"/pipelines/{run_id}/runs", json={"args": {"scale": "x"}}), 422)
    assert "int" in typed["message"]
    error_of(http.post(f"/pipelines/{run_id}/runs", json={"args": {}, "extra": 1}), 422)
    error_of(http.post(f"/pipelines/{run_id}/runs", json={"args": {"scale": 5}}), 422)
    step_id = RunView.load(client, client.get_task(run_id)).steps[0].task
    assert step_id is not None
    not_run = error_of(http.post(f"/pipelines/{step_id}/runs", json={}), 422)
    assert "is not a pipeline run" in not_run["message"]
    error_of(http.post("/pipelines/0123456789abcdef0123456789abcdef/runs", json={}), 404)
    assert client._call("GET", "/pipelines", params={"project": "api-pipes"}) == runs_before

    # abort the queued run: it leaves its queue
    r = http.post(f"/pipelines/{queued['id']}/abort", json={"reason": "not today"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "stopped" and r.json()["id"] == queued["id"]
    assert client.get_task(queued["id"]).status_reason == "not today"
    assert client.queue_tasks("services") == []
    # aborting an ended run again changes nothing
    assert http.post(f"/pipelines/{queued['id']}/abort").json()["status"] == "stopped"

    # abort tasks: a run (with its steps), a plain task, then one that ended
    child = client.create_task(NewTask(name="step", project="api-pipes", parent=draft["id"]))
    r = http.post(f"/tasks/{draft['id']}/abort")
    assert r.status_code == 200, r.text
    assert r.json() == {"stopped": [draft["id"], child.id]}
    plain = client.create_task(NewTask(name="plain", project="api-pipes"))
    assert http.post(f"/tasks/{plain.id}/abort", json={}).json() == {"stopped": [plain.id]}
    assert client.get_task(plain.id).status_message == "aborted"
    ended = error_of(http.post(f"/tasks/{plain.id}/abort"), 409)
    assert ended["error"] == "InvalidTransitionError" and "'stopped'" in ended["message"]
    error_of(http.post(f"/tasks/{draft['id']}/abort"), 409)
    error_of(http.post("/tasks/0123456789abcdef0123456789abcdef/abort"), 404)
