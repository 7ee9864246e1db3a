"""The UI's pages and fragments over a real server (a thread of the test) on a real store,
without a browser: what each page says about a cached step, escaping of names from users,
HTML errors for pages and the live endpoints' long poll."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from stepline.pipeline.controller import PipelineController
from tests.serverproc import ServedBackend

EVIL = '<img src=x onerror="alert(1)">'


def make_numbers():
    return [1, 2, 3]


def total(numbers, scale=1):
    print("summing", numbers)
    return sum(numbers) * scale


@pytest.fixture
def http(client: ServedBackend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=client.url, timeout=30) as c:
        yield c


def run(scale: int, project: str = "ui-pages", name: str = "numbers") -> str:
    pipe = PipelineController(name=name, project=project, version="1.0.0")
    pipe.add_parameter("scale", scale)
    pipe.add_function_step(
        "make", make_numbers, function_return=["numbers"], cache_executed_step=True
    )
    pipe.add_function_step(
        "sum", total, function_kwargs={"numbers": "${make.numbers}", "scale": "${pipeline.scale}"},
        function_return=["value"],
    )  # fmt: skip
    assert pipe.start_locally(run_pipeline_steps_locally=True, in_process=True)
    assert pipe.id is not None
    return pipe.id


def test_a_cached_step_says_which_task_it_reused_and_why(
    client: ServedBackend, http: httpx.Client
) -> None:
    first = run(2)
    second = run(3)
    page = http.get(f"/runs/{second}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'data-step="make" data-status="cached"' in page.text
    assert 'data-step="sum" data-status="completed"' in page.text
    panel = http.get(f"/runs/{second}/steps/make").text
    assert "reused task" in panel and "same cache key" in panel
    first_make = next(
        s for s in http.get(f"/api/v1/pipelines/{first}").json()["steps"] if s["name"] == "make"
    )
    assert first_make["task"][:8] in panel
    # the step that ran: its parameters, the ones the pipeline set marked, and its log
    panel = http.get(f"/runs/{second}/steps/sum").text
    assert 'data-param="kwargs/scale" class="overridden"' in panel
    assert "summing [1, 2, 3]" in panel
    # the run's arguments: the value is marked only for a run cloned from another
    info = http.get(f"/runs/{second}/info").text
    assert 'data-param="Args/scale"' in info and "overridden" not in info


def test_names_from_users_are_escaped(client: ServedBackend, http: httpx.Client) -> None:
    run_id = run(1, project=EVIL, name=EVIL)
    for url in ("/pipelines", f"/runs/{run_id}", "/tasks", f"/tasks/{run_id}"):
        text = http.get(url).text
        assert EVIL not in text, url
        assert "&lt;img" in text, url


def test_unknown_pages_and_runs_are_html_errors(client: ServedBackend, http: httpx.Client) -> None:
    r = http.get("/runs/0123456789abcdef0123456789abcdef")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    assert "0123456789abcdef0123456789abcdef" in r.text
    r = http.get("/no/such/page")
    assert r.status_code == 404 and "There is no page at /no/such/page" in r.text
    # the API keeps answering JSON
    r = http.get("/api/v1/no/such/route")
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError"
    r = http.get("/tasks?status=bogus")
    assert r.status_code == 422 and "unknown status" in r.text and "bogus" in r.text


def test_live_endpoint_waits_until_something_changes(
    client: ServedBackend, http: httpx.Client
) -> None:
    first = run(2)
    now = http.get("/runs/rows", params={"project": "ui-pages"}).json()
    assert first in now["html"]
    # with the current etag the request waits; a new run answers it
    got: dict[str, object] = {}

    def wait() -> None:
        t0 = time.monotonic()
        got["body"] = http.get(
            "/runs/rows", params={"project": "ui-pages", "etag": now["etag"]}
        ).json()
        got["seconds"] = time.monotonic() - t0

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive(), "the live request answered before anything changed"
    second = run(5)
    waiter.join(20)
    body = got["body"]
    assert isinstance(body, dict) and second in body["html"] and body["etag"] != now["etag"]
