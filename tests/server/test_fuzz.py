"""Fuzzing the server's REST API from its own OpenAPI document (schemathesis).

A real server (uvicorn in a thread, on loopback) over a fresh SQLite store answers requests
that schemathesis generates from ``/api/v1/openapi.json``: requests that fit the document
(positive) and requests that break it (negative), aimed at made-up ids (generated) or at a
task, artifact, queue and agent that exist (existing). Whatever comes in, the server answers:
never a 5xx nor a dropped connection, every error is the API's JSON ``{"error", "message",
"detail"}`` (no stack trace), statuses and answers fit the document (whose 4XX answers are
that JSON), and a body with a field the document does not name is refused.

The long polls are bounded: ``/claim`` and ``/tasks/watch`` get their wait set to 0 (a wait
anywhere in 0..60 s is a valid request, and the fuzz must not sit in it) and ``/stream`` is
asked for ``once=true`` (otherwise it is an endless event stream). ``test_long_polls_end``
checks that a short wait does end.

The tests after the fuzz send what schemathesis does not (JSON's lone surrogate escapes, NaN)
and check the regressions the fuzz found (a model id given twice, a task name filter that is
not a regular expression, an unexpected error that made the server drop the connection).

Schemathesis is driven through ``APIOperation.as_strategy`` and Hypothesis rather than
``@schema.parametrize()``: the schema comes from a server that a fixture starts, and the lazy
fixture loader (``schemathesis.pytest.from_fixture``) does not work with this pytest.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from stepline.backend.sql.store import SqlBackend
from stepline.core.records import (
    AgentRecord,
    ArtifactRecord,
    ConfigObject,
    LogLine,
    NewTask,
    Param,
    ScalarPoint,
)
from tests.serverproc import Served, serve

#: examples per operation and pass: 4 passes x ~50 operations take ~25 s on 2 cores
#: (STEPLINE_FUZZ_EXAMPLES=200 for a deeper run by hand)
MAX_EXAMPLES = int(os.environ.get("STEPLINE_FUZZ_EXAMPLES", "15"))
#: long polls and the field that says how long they may wait
LONG_POLLS = {"/api/v1/claim": "wait", "/api/v1/tasks/watch": "timeout"}
STREAM = "/api/v1/stream"


@dataclass
class FuzzServer:
    served: Served
    backend: SqlBackend
    folder: Path
    session: requests.Session

    @property
    def url(self) -> str:
        return self.served.url


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    root = tmp_path_factory.mktemp("fuzz")
    backend = SqlBackend(f"sqlite:///{root / 'stepline.db'}", str(root / "artifacts"), home=root)
    served = serve(backend)
    session = requests.Session()
    try:
        yield FuzzServer(served, backend, root, session)
    finally:
        session.close()
        served.stop()
        backend.close()


def seed(server: FuzzServer, n: int) -> dict[str, str]:
    """A task with parameters, configuration, runtime values, an artifact, metrics and log
    lines; a queue holding a second task; an agent on that queue. Returns the path
    parameters that name them."""
    b = server.backend
    task = b.create_task(
        NewTask(
            name=f"fuzz {n}", project="fuzz", tags=["a"], runtime={"k": "v"},
            params=[Param(section="General", name="lr", value="0.1", type="float")],
            configs=[ConfigObject(name="cfg", value="{}", content_type="json")],
        )
    )  # fmt: skip
    data = server.folder / f"seed-{n}.bin"
    data.write_bytes(b"fuzz bytes")
    b.put_artifact(
        ArtifactRecord(task_id=task.id, name="data", type="bytes", url="", hash="", size=0),
        str(data),
        move=True,
    )
    b.add_scalars([ScalarPoint(task.id, "loss", "train", i, 1.0 / (i + 1)) for i in range(3)])
    b.add_log([LogLine(task.id, f"line {i}") for i in range(3)])
    queue = b.create_queue(f"fuzz-{n}")
    waiting = b.create_task(NewTask(name=f"queued {n}", project="fuzz"))
    b.enqueue(waiting.id, queue.name)
    agent = f"agent-{n}"
    b.register_agent(AgentRecord(id=agent, name="fuzz", queues=[queue.name]))
    return {"task_id": task.id, "artifact": "data", "queue": queue.name, "agent_id": agent}


def path_parameters(path: str, existing: dict[str, str]) -> dict[str, str]:
    """The ``existing`` things named in ``path``'s parameters."""
    params: dict[str, str] = {}
    if "{task_id}" in path:
        params["task_id"] = existing["task_id"]
    if "{agent_id}" in path:
        params["agent_id"] = existing["agent_id"]
    if "{name}" in path:
        params["name"] = existing["queue"] if path.startswith("/api/v1/queues/") else (
            existing["artifact"]
        )  # fmt: skip
    return params


def aim_body(case: Case, existing: dict[str, str], upload: Callable[[], str]) -> None:
    """Point a (valid) request body at the existing things, so that writes reach the store."""

    def aim(obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        if isinstance(obj.get("task_id"), str):
            obj["task_id"] = existing["task_id"]
        if isinstance(obj.get("queue"), str):
            obj["queue"] = existing["queue"]
        if isinstance(obj.get("queues"), list):
            obj["queues"] = [existing["queue"], *obj["queues"][:2]]
        if isinstance(obj.get("upload"), str):
            obj["upload"] = upload()
        if isinstance(obj.get("known"), dict):
            obj["known"] = {existing["task_id"]: "queued", **obj["known"]}
        if "{agent_id}" in case.operation.path and isinstance(obj.get("id"), str):
            obj["id"] = existing["agent_id"]

    if isinstance(case.body, list):
        for item in case.body:
            aim(item)
    else:
        aim(case.body)


def no_waiting(case: Case) -> None:
    """A long poll's wait set to 0 when it is a valid one (an invalid one stays, to be
    refused)."""
    key = LONG_POLLS.get(case.operation.path)
    if key is None or not isinstance(case.body, dict):
        return
    value = case.body.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 60:
        case.body[key] = 0


def negatable(operation: Any, fixed: set[str]) -> bool:
    """Whether a request to ``operation`` can be made invalid: it has a JSON body or a query
    parameter that is not ``fixed`` (a path parameter is any string)."""
    raw = operation.definition.raw
    body = raw.get("requestBody", {}).get("content", {})
    query = {p["name"] for p in raw.get("parameters", []) if p.get("in") == "query"}
    return "application/json" in body or bool(query - fixed)


def unknown_fields(case: Case, components: dict[str, Any]) -> list[str]:
    """The fields of a JSON request body (an object, or each object of a list) that its
    schema in the document does not name."""
    raw = case.operation.definition.raw
    schema = raw.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = schema.get("schema", {})
    objects: list[Any] = [case.body]
    if "items" in schema:
        schema = schema["items"]
        objects = case.body if isinstance(case.body, list) else []
    ref = schema.get("$ref", "")
    known = components.get(ref.rsplit("/", 1)[-1], {}).get("properties") if ref else None
    if known is None:
        return []
    return [k for obj in objects if isinstance(obj, dict) for k in obj if k not in known]


def check_error_body(status: int, content_type: str, content: bytes) -> None:
    """An error is the API's JSON, with no trace of the server's insides."""
    if status < 400:
        return
    assert b"Traceback" not in content, content
    assert content_type.startswith("application/json"), (status, content_type, content)
    body = json.loads(content)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str), body
    assert isinstance(body.get("message"), str), body


#: Built-in checks. Left out: ``positive_data_acceptance`` (a request that fits the document
#: must get a 2xx): the store has rules the document cannot say (a body's agent id equal to
#: the path's, either ``upload`` or ``url``, the statuses a task may move to, which names are
#: safe as paths, the fields tasks can be ordered by) and answers those with 422 and the
#: error JSON, which the other checks cover. ``negative_data_rejection`` (a request that
#: breaks the document must get a 4xx): the server reads JSON as pydantic does by default
#: (``true`` is the number 1, ``0.0`` the boolean false or the integer 0, ``"5"`` the number
#: 5) and any text is a valid item of a query's list of text, which schemathesis takes for
#: invalid data that got through; ``unknown_fields`` below checks what can be told for sure.
#: ``max_response_time``: timing is not asserted.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fuzz_operation(
    server: FuzzServer,
    case_strategy: Any,
    mode: GenerationMode,
    existing: dict[str, str] | None,
    components: dict[str, Any],
) -> None:
    """Send ``MAX_EXAMPLES`` requests drawn from ``case_strategy`` and check each answer;
    raises what the checks found. ``components``: the document's schemas."""
    positive = mode == GenerationMode.POSITIVE

    def upload() -> str:
        r = server.session.post(f"{server.url}/api/v1/uploads", data=b"fuzz bytes", timeout=10)
        r.raise_for_status()
        return str(r.json()["id"])

    @given(case=case_strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        # no shrinking: each step is a request, and a failing run must stay short too;
        # schemathesis reports each failure with the request to reproduce it
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        if positive and existing is not None:  # edits that keep a valid request valid
            aim_body(case, existing, upload)
        no_waiting(case)
        response = case.call(session=server.session, timeout=10)
        case.validate_response(response, checks=CHECKS)
        content_type = response.headers.get("content-type", [""])[0]  # lower-case keys, lists
        check_error_body(response.status_code, content_type, response.content)
        unknown = unknown_fields(case, components)
        assert not unknown or 400 <= response.status_code < 500, (
            f"{case.operation.label} took fields it does not know: {unknown}"
        )

    run()


PASSES = [
    pytest.param(GenerationMode.POSITIVE, False, id="positive-generated"),
    pytest.param(GenerationMode.NEGATIVE, False, id="negative-generated"),
    pytest.param(GenerationMode.POSITIVE, True, id="positive-existing"),
    pytest.param(GenerationMode.NEGATIVE, True, id="negative-existing"),
]


@pytest.mark.parametrize(("mode", "aim_at_existing"), PASSES)
def test_no_request_breaks_the_server(
    fuzz_server: FuzzServer, mode: GenerationMode, aim_at_existing: bool
) -> None:
    """Every operation of the document, fuzzed; all failures are reported together."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/api/v1/openapi.json")
    components = schema.raw_schema["components"]["schemas"]
    failures: list[str] = []
    fuzzed = 0
    for n, path in enumerate(schema):
        for method in schema[path]:
            operation = schema[path][method]
            if aim_at_existing and "{" not in path and path != STREAM and method == "get":
                continue  # names nothing that exists: the generated pass has done it
            fixed = ({"once", "log"} if aim_at_existing else {"once"}) if path == STREAM else set()
            if mode == GenerationMode.NEGATIVE and not negatable(operation, fixed):
                continue  # nothing in the request can be made invalid
            existing = seed(fuzz_server, n) if aim_at_existing else None
            pinned = path_parameters(path, existing) if existing is not None else {}
            query = {}
            if path == STREAM:  # one batch of events, then the stream ends
                query["once"] = "true"
                if existing is not None:
                    query["log"] = existing["task_id"]
            strategy = operation.as_strategy(
                mode, path_parameters=pinned or None, query=query or None
            )
            try:
                fuzz_operation(fuzz_server, strategy, mode, existing, components)
            except BaseException as exc:  # several failures come as a BaseExceptionGroup
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                failures.append(f"{operation.label}: {exc}")
            fuzzed += 1
    assert fuzzed >= 10, f"only {fuzzed} operations were fuzzed"
    assert not failures, "\n\n".join(failures)
    # the server is still up and serving
    assert fuzz_server.served.thread.is_alive()
    assert httpx.get(f"{fuzz_server.url}/health", timeout=10).status_code == 200


def test_long_polls_end(fuzz_server: FuzzServer) -> None:
    """``/claim`` and ``/tasks/watch`` with a short wait answer once it is over (or at once,
    when there is something to answer), and ``/stream?once=true`` ends."""
    url = f"{fuzz_server.url}/api/v1"
    existing = seed(fuzz_server, 10_000)
    with httpx.Client(timeout=10) as client:
        start = time.monotonic()
        r = client.post(f"{url}/claim", json={"queues": ["empty"], "agent_id": "a", "wait": 0.2})
        assert r.status_code == 200 and r.json() is None, r.text
        r = client.post(f"{url}/tasks/watch", json={"known": {"nope": "created"}, "timeout": 0.2})
        assert r.status_code in (200, 404), r.text
        waited = time.monotonic() - start
        assert waited < 5, waited
        r = client.post(
            f"{url}/claim", json={"queues": [existing["queue"]], "agent_id": "a", "wait": 30}
        )
        assert r.status_code == 200 and r.json()["status"] == "in_progress", r.text
        r = client.post(
            f"{url}/tasks/watch", json={"known": {existing["task_id"]: "queued"}, "timeout": 30}
        )
        assert r.status_code == 200 and [t["id"] for t in r.json()] == [existing["task_id"]]
        r = client.get(f"{url}/stream", params={"once": "true", "since": 0})
        assert r.status_code == 200 and "event: task" in r.text, r.text
        assert time.monotonic() - start < 5
        for body in ({"queues": [], "agent_id": "a", "wait": 61}, {"known": {}, "timeout": -1}):
            path = "/claim" if "wait" in body else "/tasks/watch"
            r = client.post(f"{url}{path}", json=body)
            assert r.status_code == 422 and r.json()["error"] == "ValidationError", r.text


def test_a_model_id_that_exists_is_a_conflict(fuzz_server: FuzzServer) -> None:
    """A client may name its model; a second model of that id is a 409, not a 500."""
    task = fuzz_server.backend.create_task(NewTask(name="models", project="fuzz"))
    body = {"id": f"model-{uuid.uuid4().hex}", "task_id": task.id, "name": "m", "url": "file:///m"}
    with httpx.Client(timeout=10) as client:
        first = client.post(f"{fuzz_server.url}/api/v1/models", json=body)
        assert first.status_code == 201, first.text
        again = client.post(f"{fuzz_server.url}/api/v1/models", json={**body, "name": "other"})
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "ConflictError"


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/tasks"), ("POST", "/tasks/find"), ("GET", "/pipelines")]
)
def test_a_name_that_is_not_a_pattern_is_refused(
    fuzz_server: FuzzServer, method: str, path: str
) -> None:
    """A task filter's ``name`` is a regular expression; one that does not compile is the
    client's error (422), not the server's."""
    url = f"{fuzz_server.url}/api/v1{path}"
    with httpx.Client(timeout=10) as client:
        for name in ("(", "+x", "[a-"):
            if method == "GET":
                r = client.get(url, params={"name": name})
            else:
                r = client.post(url, json={"name": name})
            assert r.status_code == 422, r.text
            assert r.json()["error"] == "ValidationError", r.text
            assert "regular expression" in r.json()["message"], r.text


# -- what the fuzz cannot send: JSON that is not quite standard ------------------------------
LONE = "\\ud800"  # a JSON escape that decodes to a lone surrogate


def test_text_that_is_not_unicode_is_refused(fuzz_server: FuzzServer) -> None:
    """A lone surrogate (``"\\ud800"`` in JSON) anywhere in a body is a 422: the store cannot
    encode it, and one that got in would break every answer that carries it (the task list
    among them)."""
    task = fuzz_server.backend.create_task(NewTask(name="text", project="fuzz"))
    tid = task.id
    bodies = [
        ("POST", "/tasks", '{"name": "n", "project": "fuzz", "script": {"a": "%s"}}'),
        ("POST", "/tasks", '{"name": "n", "project": "fuzz", "script": {"%s": 1}}'),
        ("PATCH", f"/tasks/{tid}", '{"script": {"a": ["%s"]}}'),
        ("POST", f"/tasks/{tid}/params", '{"params": [{"section": "s", "name": "n", '
         '"value": "%s"}]}'),
        ("POST", f"/tasks/{tid}/configs", '{"configs": [{"name": "n", "value": "%s"}]}'),
        ("POST", f"/tasks/{tid}/runtime", '{"values": {"k": "%s"}}'),
        ("POST", "/log", '[{"task_id": "' + tid + '", "text": "%s"}]'),
        ("POST", "/events", '[{"task_id": "' + tid + '", "kind": "k", "title": "t", '
         '"series": "s", "iteration": 1, "payload": "%s"}]'),
        ("POST", "/models", '{"task_id": "' + tid + '", "name": "m", "url": "u", '
         '"metadata": {"a": "%s"}}'),
        ("PUT", "/agents/a1", '{"id": "a1", "name": "n", "info": {"a": "%s"}}'),
    ]  # fmt: skip
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=f"{fuzz_server.url}/api/v1", timeout=10) as client:
        for method, path, body in bodies:
            r = client.request(method, path, content=body % LONE, headers=headers)
            assert r.status_code == 422, (method, path, r.status_code, r.text)
            assert r.json()["error"] == "ValidationError", r.text
            # a surrogate pair is a character like any other
            r = client.request(method, path, content=body % "\\ud83d\\ude00", headers=headers)
            assert r.status_code < 300, (method, path, r.status_code, r.text)
        assert client.get("/tasks", params={"limit": 10_000}).status_code == 200
        assert client.get(f"/tasks/{tid}").status_code == 200


def test_a_nan_metric_is_refused(fuzz_server: FuzzServer) -> None:
    """NaN (Python's JSON lets it through) is no value the store can keep: a 422 that says so,
    and nothing of the batch is stored."""
    task = fuzz_server.backend.create_task(NewTask(name="nan", project="fuzz"))
    point = '{"task_id": "%s", "title": "loss", "series": "s", "iteration": %d, "value": %s}'
    batch = "[" + ", ".join([point % (task.id, 0, "1.5"), point % (task.id, 1, "NaN")]) + "]"
    url = f"{fuzz_server.url}/api/v1"
    r = httpx.post(f"{url}/scalars", content=batch, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "ValidationError", r.text
    assert fuzz_server.backend.get_scalars(task.id, None, None) == []


def test_a_server_error_keeps_the_connection(tmp_path: Path) -> None:
    """An unexpected error (here: a task whose stored status this version does not know) is a
    500 with the error JSON, and the connection stays usable: a client's next request on it
    is answered."""
    backend = SqlBackend(
        f"sqlite:///{tmp_path / 'stepline.db'}", str(tmp_path / "a"), home=tmp_path
    )
    served = serve(backend)
    try:
        task = backend.create_task(NewTask(name="odd", project="fuzz"))
        with sqlite3.connect(tmp_path / "stepline.db") as con:
            con.execute("UPDATE tasks SET status = 'from-the-future' WHERE id = ?", (task.id,))
        with httpx.Client(base_url=f"{served.url}/api/v1", timeout=10) as client:
            for i in range(10):
                r = client.get(f"/tasks/{task.id}")
                assert r.status_code == 500, r.text
                check_error_body(r.status_code, r.headers.get("content-type", ""), r.content)
                assert "ValueError" in r.json()["message"]
                r = client.post("/queues", json={"name": f"q{i}"})
                assert r.status_code == 201, r.text
    finally:
        served.stop()
        backend.close()
