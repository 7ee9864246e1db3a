"""Browser tests of the web UI: Playwright driving Debian's Chromium (``/usr/bin/chromium``,
installed by ``scripts/setup``; Playwright's own browser downloads are not used), against a
real ``stepline server`` process on a store of its own.

Fixtures:

* ``browser`` (session): headless Chromium; skipped with the install command when it is
  missing.
* ``page`` (function): a new context (1400x900) and page. The test fails when the page raised
  a JavaScript error, logged a console error, or requested anything outside the server (the UI
  works offline): mark a test ``allow_page_errors`` to let them pass, or read and clear
  ``page_errors``. A failing test's page is saved to ``build/screenshots/FAILED-<test>.png``.
* ``ui_home`` / ``ui_server`` (module): a fresh STEPLINE_HOME and a ``stepline server --port 0``
  process on it; ``ui_server.env`` runs scripts and agents on the same store (embedded: the
  server reads the same SQLite file).
* ``screenshot(page, name)``: saves ``build/screenshots/<name>.png`` under the repo root.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Route,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from stepline.backend.sql.store import SqlBackend
from tests.serverproc import ServerProc, server_env, start_server

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get install -y --no-install-recommends chromium (or run scripts/setup as root)"
VIEWPORT = {"width": 1400, "height": 900}
TIMEOUT_MS = 10_000  #: default wait of page actions and of ``expect`` (ms)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

_outcome = pytest.StashKey[pytest.TestReport]()
expect.set_options(timeout=TIMEOUT_MS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_page_errors: the page fixture lets JavaScript errors, console errors and "
        "requests outside the server pass",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_outcome] = report
    return report


# -- the browser -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        if os.geteuid() == 0:  # scripts/setup installs it when it runs as root: it failed
            pytest.fail(f"no Chromium although setup ran as root; install it with: {INSTALL}")
        pytest.skip(f"no Chromium for the browser tests; install it with: {INSTALL}")
    return path


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright, chromium_path: str) -> Iterator[Browser]:
    # root cannot run Chromium's sandbox; the pages are our own, on loopback
    browser = playwright.chromium.launch(
        executable_path=chromium_path, headless=True, args=["--no-sandbox"]
    )
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class PageErrors:
    """What went wrong in a page: uncaught exceptions, console errors, outside requests."""

    items: list[str] = field(default_factory=list)

    def add(self, kind: str, text: str) -> None:
        self.items.append(f"{kind}: {text}")

    def clear(self) -> None:
        self.items.clear()

    def __bool__(self) -> bool:
        return bool(self.items)

    def __str__(self) -> str:
        return "\n".join(self.items)


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


def _outside(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS


@pytest.fixture
def page(
    browser: Browser, page_errors: PageErrors, request: pytest.FixtureRequest
) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    try:
        context.set_default_timeout(TIMEOUT_MS)

        def refuse(route: Route) -> None:
            page_errors.add("request outside the server", route.request.url)
            route.abort("blockedbyclient")

        context.route(_outside, refuse)
        page = context.new_page()
        page.on("pageerror", lambda exc: page_errors.add("uncaught", f"{exc.name}: {exc.message}"))

        def console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                where = msg.location.get("url", "")
                page_errors.add("console error", f"{msg.text} ({where})" if where else msg.text)

        page.on("console", console)
        yield page
        with contextlib.suppress(PlaywrightError):  # a round trip: the page's last events
            page.evaluate("0")
        report = request.node.stash.get(_outcome, None)
        if report is not None and report.failed:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            with contextlib.suppress(PlaywrightError):  # a crashed page has nothing to show
                _save(page, f"FAILED-{name}")
    finally:
        context.close()
    if page_errors and request.node.get_closest_marker("allow_page_errors") is None:
        pytest.fail(f"the page reported errors:\n{page_errors}", pytrace=False)


def _save(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="session")
def screenshot() -> Callable[[Page, str], Path]:
    """``screenshot(page, name)`` saves the whole page to ``build/screenshots/<name>.png``."""
    return _save


# -- the server --------------------------------------------------------------------------------
@dataclass
class UiServer:
    url: str
    home: Path
    env: dict[str, str]  #: for child processes on the same store (scripts, agents, the CLI)
    proc: ServerProc

    @property
    def output(self) -> str:
        """What the server printed so far (for failing tests)."""
        return "".join(self.proc.output or [])


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui") / "home"


@pytest.fixture(scope="module")
def ui_server(ui_home: Path) -> Iterator[UiServer]:
    proc = start_server(ui_home)
    try:
        yield UiServer(proc.url, ui_home, server_env(ui_home), proc)
    finally:
        proc.stop()


@contextlib.contextmanager
def store(home: Path) -> Iterator[SqlBackend]:
    """The server's store, read directly (as an embedded client on that machine would)."""
    backend = SqlBackend(f"sqlite:///{home / 'stepline.db'}", str(home / "artifacts"), home=home)
    try:
        yield backend
    finally:
        backend.close()
