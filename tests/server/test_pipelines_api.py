"""``/api/v1/pipelines``: a pipeline run through the HTTP client (debug mode, the server in a
thread of the test) is listed with its version and progress, and its detail (steps in graph
order, arguments, metrics) matches what ``stepline pipelines show --json`` prints through the
same server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stepline.backend import reset_backend
from stepline.backend.sql.store import SqlBackend
from stepline.cli.main import app
from stepline.pipeline.controller import PipelineController
from tests.serverproc import ServedBackend


def make_numbers(count=3):
    return list(range(1, count + 1))


def total(numbers, scale=1):
    return sum(numbers) * scale


@pytest.fixture
def client(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServedBackend]:
    inner = SqlBackend(
        f"sqlite:///{home / 'server.db'}", str(home / "server-artifacts"), home=home / "srv"
    )
    served = ServedBackend(inner, home / "client")
    monkeypatch.setenv("STEPLINE_API", served.url)
    reset_backend(served)
    yield served
    reset_backend()


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
