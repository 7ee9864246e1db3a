"""Resuming runs from the web UI, in a real browser against a real server: a run whose
controller is killed shows *interrupted* (the server finds it, with no agent or user asking)
and a Resume button; resuming it on ``services`` (a real agent) reuses the step it completed
and ends completed, and the two runs link to each other. Then "Re-run from here" on a step
of a completed run, with a new value for that step's argument; a refused resume shows its
error in the dialog.

The controllers, the agent and the server send and judge heartbeats every 0.3 s here (the
default is 2 s) so that a dead controller is noticed within about a second.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from stepline.core.records import TaskFilter
from stepline.pipeline.views import RunView
from tests.agentproc import AgentProc, start_agent
from tests.faults import wait_until
from tests.serverproc import server_env, start_server
from tests.ui import gated_pipeline
from tests.ui.conftest import PageErrors, UiServer, store

pytestmark = pytest.mark.slow

SCRIPT = Path(gated_pipeline.__file__)
#: how long a test waits for the page to show a change (ms)
SEEN = 30_000
#: heartbeats of everything in these tests (seconds), and when a silent controller is dead
BEAT = {"STEPLINE_RUN_HEARTBEAT": "0.3", "STEPLINE_RUN_TIMEOUT": "10"}


@pytest.fixture(scope="module")
def ui_server(ui_home: Path) -> Iterator[UiServer]:
    """The UI's server (as in conftest), judging heartbeats every 0.3 s."""
    proc = start_server(ui_home, **BEAT)
    try:
        yield UiServer(proc.url, ui_home, server_env(ui_home, **BEAT), proc)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def services_agent(ui_server: UiServer) -> Iterator[AgentProc]:
    agent = start_agent(ui_server.home, ["services"], name="ui-resume", env=BEAT)
    try:
        yield agent
    finally:
        agent.stop()


class Script:
    """``gated_pipeline.py`` run as a user would, its steps child processes of it."""

    def __init__(self, server: UiServer, folder: Path, size: int, gate: Path) -> None:
        known = self.runs(server)
        self.log = folder / "run.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), str(size), str(gate)],
                cwd=folder, env=server.env, stdout=out, stderr=out,
            )  # fmt: skip
        found = wait_until(lambda: self.runs(server) - known, "the run's task", timeout=30)
        assert isinstance(found, set) and len(found) == 1
        self.run_id = found.pop()

    @staticmethod
    def runs(server: UiServer) -> set[str]:
        with store(server.home) as backend:
            return {r.id for r in backend.find_tasks(TaskFilter(project="ui", type=["controller"]))}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def scripts(tmp_path: Path) -> Iterator[Callable[[UiServer, int, Path], Script]]:
    made: list[Script] = []

    def start(server: UiServer, size: int, gate: Path) -> Script:
        made.append(Script(server, tmp_path, size, gate))
        return made[-1]

    yield start
    for s in made:
        s.close()


def node(page: Page, step: str):  # type: ignore[no-untyped-def]
    return page.locator(f'svg.dag g.node[data-step="{step}"]')


def new_run_url(source: str) -> Callable[[str], bool]:
    return lambda url: bool(re.search(r"/runs/[0-9a-f]{32}$", url)) and source not in url


def test_an_interrupted_run_resumed_from_the_page_completes(
    page: Page, ui_server: UiServer, services_agent: AgentProc, scripts, tmp_path: Path,
    screenshot,
) -> None:  # fmt: skip
    gate = tmp_path / "gate"
    script = scripts(ui_server, 3, gate)
    source = script.run_id
    page.goto(f"{ui_server.url}/runs/{source}")
    expect(node(page, "wait_gate")).to_have_attribute("data-status", "running", timeout=SEEN)
    expect(page.locator("#resume-run")).to_be_hidden()
    # the controller dies; the server finds out by itself and the page shows it
    script.proc.kill()
    script.proc.wait(10)
    status = page.locator("#run-status")
    expect(status).to_have_attribute("data-shown", "interrupted", timeout=SEEN)
    expect(status).to_have_attribute("data-status", "stopped")
    expect(status.locator(".badge.st-interrupted")).to_have_text("interrupted")
    expect(page.locator("#run-message")).to_contain_text("no longer running")
    expect(node(page, "prepare")).to_have_attribute("data-status", "completed")
    expect(node(page, "finish")).to_have_attribute("data-status", "skipped")
    expect(page.locator("#abort-run")).to_be_hidden()
    resume = page.locator("#resume-run")
    expect(resume).to_be_visible()
    screenshot(page, "run-interrupted")

    gate.write_text("open")  # the step that was cut short now finishes at once
    watcher = page.context.new_page()  # the run's page left open elsewhere
    watcher.goto(f"{ui_server.url}/runs/{source}")
    expect(watcher.locator("#run-status")).to_have_attribute("data-shown", "interrupted")
    expect(watcher.locator("#run-links")).to_be_empty()
    resume.click()
    dialog = page.locator("dialog#resume-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("select[name=queue]")).to_have_value("services")
    expect(dialog.locator("select[name=from_step]")).to_have_value("")
    screenshot(page, "resume-dialog")
    dialog.locator("button[type=submit]").click()
    page.wait_for_url(new_run_url(source), timeout=SEEN)
    attempt = page.url.rsplit("/", 1)[-1]
    # the open page of the run says it by itself
    expect(watcher.locator("#run-links")).to_contain_text("resumed by", timeout=SEEN)
    expect(watcher.locator("#run-links a.resumed-by")).to_have_attribute("href", f"/runs/{attempt}")
    watcher.close()
    expect(page.locator("#run-status")).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    link = page.locator("#run-links a.resume-of")
    expect(link).to_have_attribute("href", f"/runs/{source}")
    expect(page.locator("#run-links")).to_contain_text("resume of")
    # the completed step was reused, the others ran
    expect(node(page, "prepare")).to_have_attribute("data-status", "cached")
    for step in ("wait_gate", "finish"):
        expect(node(page, step)).to_have_attribute("data-status", "completed")
    with store(ui_server.home) as backend:
        before = RunView.load(backend, backend.get_task(source))
        after = RunView.load(backend, backend.get_task(attempt))
        assert backend.get_last_scalars(attempt)["total"]["value"]["last"] == 3
    prepared = next(s.task for s in before.steps if s.name == "prepare")
    assert prepared and next(s.task for s in after.steps if s.name == "prepare") == prepared
    node(page, "prepare").click()
    reused = page.locator("#step-panel tr.cached-row")
    expect(reused).to_contain_text(f"reused task {prepared[:8]} of run")
    expect(reused.locator("a.reused-run")).to_have_attribute("href", f"/runs/{source}")
    screenshot(page, "resumed-run")

    link.click()
    page.wait_for_url(re.compile(f"/runs/{source}$"))
    expect(page.locator("#run-links")).to_contain_text("resumed by")
    expect(page.locator("#run-links a.resumed-by")).to_have_attribute("href", f"/runs/{attempt}")


def test_rerun_from_a_step_with_a_new_value(
    page: Page, page_errors: PageErrors, ui_server: UiServer, services_agent: AgentProc,
    scripts, tmp_path: Path, screenshot,
) -> None:  # fmt: skip
    gate = tmp_path / "gate"
    gate.write_text("open")
    source = scripts(ui_server, 4, gate).run_id
    page.goto(f"{ui_server.url}/runs/{source}")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "completed", timeout=SEEN)
    expect(page.locator("#resume-run")).to_be_hidden()  # nothing to resume in a completed run
    node(page, "prepare").click()
    page.locator("#step-panel .rerun-from").click()
    dialog = page.locator("dialog#resume-dialog")
    expect(dialog.locator("select[name=from_step]")).to_have_value("prepare")
    size = dialog.locator('tr[data-arg="size"] input')
    expect(size).to_have_value("4")

    # a completed run resumed without a step: refused, the dialog says why, nothing is made
    with store(ui_server.home) as backend:
        before = len(backend.find_tasks(TaskFilter(type=["controller"], archived=None)))
    dialog.locator("select[name=from_step]").select_option("")
    expect(dialog.locator(".from-step")).to_be_hidden()
    dialog.locator("button[type=submit]").click()
    expect(dialog.locator(".error")).to_contain_text("nothing to resume", timeout=SEEN)
    with store(ui_server.home) as backend:
        assert len(backend.find_tasks(TaskFilter(type=["controller"], archived=None))) == before
    assert all("422" in e for e in page_errors.items), page_errors  # the refused request
    page_errors.clear()

    dialog.locator("select[name=from_step]").select_option("prepare")
    expect(size).to_have_value("4")
    size.fill("6")
    screenshot(page, "rerun-from-dialog")
    dialog.locator("button[type=submit]").click()
    page.wait_for_url(new_run_url(source), timeout=SEEN)
    attempt = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#run-status")).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    for step in ("prepare", "wait_gate", "finish"):
        expect(node(page, step)).to_have_attribute("data-status", "completed")
    with store(ui_server.home) as backend:  # 0+1+...+5
        assert backend.get_last_scalars(attempt)["total"]["value"]["last"] == 15
