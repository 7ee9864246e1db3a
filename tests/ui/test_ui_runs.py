"""The web UI in a real browser against a real server: a run's DAG while it runs and after,
a step's log and artifacts, a new run with a changed argument, abort, a 1,000-step run, and
the other pages. Screenshots of each page go to ``build/screenshots``.

The pipelines run as they would for a user: a script runs the controller with its steps as
child processes, on the same embedded store the server reads; new runs from the UI are
queued on ``services`` and run by a real agent.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from stepline.core.records import TaskFilter
from tests.agentproc import AgentProc, start_agent
from tests.ui import gated_pipeline
from tests.ui.bigrun import make_big_run
from tests.ui.conftest import UiServer, store

pytestmark = pytest.mark.slow

SCRIPT = Path(gated_pipeline.__file__)
#: how long a test waits for the page to show a change
SEEN = 30_000


def until(check: Callable[[], object], timeout: float = 30.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


class Runs:
    """Starts gated runs on the server's store and finds them."""

    def __init__(self, server: UiServer, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, size: int, gate: Path) -> str:
        known = {r.id for r in self.runs()}
        log = self.tmp / f"run-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), str(size), str(gate)],
                cwd=self.tmp, env=self.server.env, stdout=out, stderr=out,
            )  # fmt: skip
        self.procs.append(proc)
        found = until(
            lambda: [r.id for r in self.runs() if r.id not in known], what="the run's task"
        )
        assert isinstance(found, list)
        return str(found[0])

    def runs(self) -> list:
        with store(self.server.home) as backend:
            return backend.find_tasks(TaskFilter(project="ui", type=["controller"]))

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


@pytest.fixture(scope="module")
def runs(ui_server: UiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    r = Runs(ui_server, tmp_path_factory.mktemp("runs"))
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def services_agent(ui_server: UiServer) -> Iterator[AgentProc]:
    agent = start_agent(ui_server.home, ["services"], name="ui-services")
    try:
        yield agent
    finally:
        agent.stop()


def node(page: Page, step: str):  # type: ignore[no-untyped-def]
    return page.locator(f'svg.dag g.node[data-step="{step}"]')


def test_run_page_follows_a_run_then_shows_a_steps_log_and_artifacts(
    page: Page, ui_server: UiServer, runs: Runs, tmp_path: Path, screenshot
) -> None:
    gate = tmp_path / "gate"
    run_id = runs.start(3, gate)
    page.goto(f"{ui_server.url}/runs/{run_id}")
    # while it runs: the first step done, the middle one running, the last one waiting
    expect(node(page, "wait_gate")).to_have_attribute("data-status", "running", timeout=SEEN)
    expect(node(page, "prepare")).to_have_attribute("data-status", "completed")
    expect(node(page, "finish")).to_have_attribute("data-status", "pending")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "in_progress")
    # the running step's log, tailed live
    node(page, "wait_gate").click()
    expect(page.locator("#step-panel h2")).to_have_text("wait_gate")
    expect(page.locator("#log")).to_contain_text("waiting for the gate (1)", timeout=SEEN)
    screenshot(page, "run-running")
    gate.write_text("open")
    # after: every step completed, without reloading the page
    for step in ("prepare", "wait_gate", "finish"):
        expect(node(page, step)).to_have_attribute("data-status", "completed", timeout=SEEN)
    expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")
    expect(page.locator("#log")).to_contain_text("gate open", timeout=SEEN)
    # a finished step: its artifacts with a preview and a download link
    node(page, "prepare").click()
    expect(page.locator("#step-panel h2")).to_have_text("prepare")
    row = page.locator('#step-panel tr[data-artifact="values"]')
    expect(row).to_be_visible()
    href = row.locator("a.download").get_attribute("href")
    assert href is not None
    got = httpx.get(ui_server.url + href)
    assert got.status_code == 200 and len(got.content) > 0
    expect(page.locator("#step-panel #log")).to_contain_text("preparing 3 values")
    # the step's parameters: the ones the pipeline set are marked
    expect(page.locator('#step-panel tr[data-param="kwargs/size"]')).to_have_class(
        re.compile("overridden")
    )
    screenshot(page, "run-step-panel")
    page.locator("[data-back]").click()
    expect(page.locator('#run-panel tr[data-param="Args/size"]')).to_contain_text("3")
    expect(page.locator("#run-panel")).to_contain_text("total / value")
    screenshot(page, "run-completed")


def test_new_run_with_a_changed_argument_completes_with_it(
    page: Page, ui_server: UiServer, runs: Runs, services_agent: AgentProc, tmp_path: Path,
    screenshot,
) -> None:  # fmt: skip
    gate = tmp_path / "gate"
    gate.write_text("open")
    source = runs.start(4, gate)
    page.goto(f"{ui_server.url}/runs/{source}")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "completed", timeout=SEEN)
    page.locator("#new-run").click()
    dialog = page.locator("dialog#new-run-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator('input[name="arg:size"]')).to_have_value("4")
    dialog.locator('input[name="arg:size"]').fill("6")
    dialog.locator("select[name=queue]").select_option("services")
    screenshot(page, "new-run-dialog")
    dialog.locator("button[type=submit]").click()
    page.wait_for_url(
        lambda url: bool(re.search(r"/runs/[0-9a-f]{32}$", url)) and source not in url, timeout=SEEN
    )
    new_id = page.url.rsplit("/", 1)[-1]
    assert new_id != source
    expect(page.locator("#run-status")).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    expect(node(page, "finish")).to_have_attribute("data-status", "completed")
    # the changed value is marked, and the run used it: 0+1+...+5
    arg = page.locator('#run-panel tr[data-param="Args/size"]')
    expect(arg).to_have_class(re.compile("overridden"))
    expect(arg).to_contain_text("6")
    with store(ui_server.home) as backend:
        metrics = backend.get_last_scalars(new_id)
    assert metrics["total"]["value"]["last"] == 15, services_agent.output()
    page.reload()
    expect(page.locator("#run-panel")).to_contain_text("15")
    screenshot(page, "new-run-completed")


@pytest.mark.allow_page_errors  # the browser logs the refused request (422) as an error
def test_a_bad_argument_is_refused_in_the_dialog(
    page: Page, ui_server: UiServer, runs: Runs, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.write_text("open")
    source = runs.start(2, gate)
    before = len(runs.runs())
    page.goto(f"{ui_server.url}/runs/{source}")
    page.locator("#new-run").click()
    dialog = page.locator("dialog#new-run-dialog")
    dialog.locator('input[name="arg:size"]').fill("many")
    dialog.locator("button[type=submit]").click()
    expect(dialog.locator(".error")).to_contain_text("size", timeout=SEEN)
    assert len(runs.runs()) == before  # nothing was made


def test_abort_a_running_run(
    page: Page, ui_server: UiServer, runs: Runs, tmp_path: Path, screenshot
) -> None:
    run_id = runs.start(3, tmp_path / "never")
    page.goto(f"{ui_server.url}/runs/{run_id}")
    expect(node(page, "wait_gate")).to_have_attribute("data-status", "running", timeout=SEEN)
    page.once("dialog", lambda d: d.accept())
    page.locator("#abort-run").click()
    expect(page.locator("#run-status")).to_have_attribute("data-status", "stopped", timeout=SEEN)
    expect(node(page, "wait_gate")).to_have_attribute("data-status", "aborted", timeout=SEEN)
    expect(node(page, "finish")).to_have_attribute("data-status", "skipped", timeout=SEEN)
    expect(page.locator("#abort-run")).to_be_hidden()
    screenshot(page, "run-aborted")
    with store(ui_server.home) as backend:
        steps = backend.find_tasks(TaskFilter(parent=run_id, archived=None))
        assert {s.name: s.status.value for s in steps}.get("wait_gate") == "stopped"


def test_abort_one_step(page: Page, ui_server: UiServer, runs: Runs, tmp_path: Path) -> None:
    run_id = runs.start(3, tmp_path / "never")
    page.goto(f"{ui_server.url}/runs/{run_id}#step=wait_gate")
    expect(node(page, "wait_gate")).to_have_attribute("data-status", "running", timeout=SEEN)
    page.locator("svg.dag g.node[data-step=wait_gate]").click()
    page.once("dialog", lambda d: d.accept())
    page.locator("#abort-step").click()
    expect(node(page, "wait_gate")).to_have_attribute("data-status", "aborted", timeout=SEEN)
    expect(page.locator("#run-status")).not_to_have_attribute(
        "data-status", "in_progress", timeout=SEEN
    )


def test_a_thousand_step_run_page_loads(page: Page, ui_server: UiServer, screenshot) -> None:
    run_id = make_big_run(ui_server.home)
    started = time.perf_counter()
    page.goto(f"{ui_server.url}/runs/{run_id}")
    group = page.locator("svg.dag g.node.group")
    expect(group).to_have_attribute("data-count", "998")
    expect(group).to_have_attribute("data-status", "completed")
    expect(node(page, "gather")).to_have_attribute("data-status", "completed")
    loaded = time.perf_counter() - started
    assert page.locator("svg.dag g.node").count() == 3  # the fan-out is one box
    screenshot(page, "run-1000-steps")
    group.click()
    member = page.locator("#step-panel [data-member]").nth(500)
    expect(member).to_be_visible()
    member.click()
    expect(page.locator("#step-panel .task-panel")).to_be_visible()
    expect(page.locator("#step-panel h2")).to_have_text(re.compile(r"^shard"))
    print(f"1,000-step run page shown in {loaded * 1000:.0f} ms")


def test_pipelines_runs_compare_tasks_and_queues_pages(
    page: Page, ui_server: UiServer, runs: Runs, services_agent: AgentProc, tmp_path: Path,
    screenshot,
) -> None:  # fmt: skip
    gate = tmp_path / "gate"
    gate.write_text("open")
    a = runs.start(2, gate)
    b = runs.start(5, gate)
    page.goto(f"{ui_server.url}/")
    row = page.locator('#pipelines tr[data-pipeline="ui/gated"]')
    expect(row).to_be_visible()
    screenshot(page, "pipelines")
    row.locator("a").first.click()
    page.wait_for_url(re.compile(r"/runs\?"))
    for run_id in (a, b):
        expect(page.locator(f'#runs tr[data-run="{run_id}"]')).to_have_attribute(
            "data-status", "completed", timeout=SEEN
        )
    # a run started now appears in the open table by itself
    c = runs.start(1, gate)
    expect(page.locator(f'#runs tr[data-run="{c}"]')).to_be_visible(timeout=SEEN)
    # filter by status
    page.locator("select[data-filter-col=status]").select_option("completed")
    expect(page.locator(f'#runs tr[data-run="{a}"]')).to_be_visible()
    page.locator("select[data-filter-col=status]").select_option("failed")
    expect(page.locator(f'#runs tr[data-run="{a}"]')).to_be_hidden()
    page.locator("select[data-filter-col=status]").select_option("")
    screenshot(page, "runs")
    page.locator(f'#runs tr[data-run="{a}"] input.pick').check()
    page.locator(f'#runs tr[data-run="{b}"] input.pick').check()
    page.locator("#compare").click()
    page.wait_for_url(re.compile(r"/compare\?"))
    size = page.locator('tr[data-arg="size"]')
    expect(size).to_have_class(re.compile("differs"))
    expect(size).to_contain_text("2")
    expect(size).to_contain_text("5")
    expect(page.locator('tr[data-metric="total/value"]')).to_contain_text("10")
    screenshot(page, "compare")
    page.goto(f"{ui_server.url}/tasks?steps=true")
    expect(page.locator("#tasks tbody tr").first).to_be_visible()
    screenshot(page, "tasks")
    with store(ui_server.home) as backend:
        step = backend.find_tasks(TaskFilter(parent=a, name="^finish$"))[0]
    page.goto(f"{ui_server.url}/tasks/{step.id}")
    expect(page.locator("figure.plot[data-title=total]")).to_be_visible()
    expect(page.locator("#log")).to_contain_text("total 1")
    screenshot(page, "task")
    page.goto(f"{ui_server.url}/queues")
    expect(page.locator('#queues tr[data-queue="services"]')).to_be_visible()
    expect(page.locator("#agents tr[data-alive='1']").first).to_contain_text("ui-services")
    screenshot(page, "queues")
