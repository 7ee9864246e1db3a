"""The browser chain works: Playwright drives Chromium against a real ``stepline server``
process, and the page fixture catches what goes wrong in a page."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import PageErrors, UiServer


def test_browser_reads_the_servers_health_and_api_document(
    page: Page, ui_server: UiServer, screenshot: Callable[[Page, str], Path]
) -> None:
    response = page.goto(f"{ui_server.url}/health")
    assert response is not None and response.status == 200
    health = json.loads(page.inner_text("body"))
    assert health["status"] == "ok", health

    response = page.goto(f"{ui_server.url}/api/v1/openapi.json")
    assert response is not None and response.status == 200
    document = json.loads(page.inner_text("body"))
    assert "/api/v1/pipelines" in document["paths"]

    # Swagger UI, its files served by this server (the fixture fails the test on any request
    # outside it, and on any error the page reports)
    response = page.goto(f"{ui_server.url}/api/docs")
    assert response is not None and response.status == 200
    assert page.title() == "stepline - Swagger UI"
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("stepline")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any(p.startswith("/api/v1/pipelines") for p in paths), paths
    path = screenshot(page, "smoke-api-docs")
    assert path.is_file() and path.stat().st_size > 0


def wait_for(page: Page, check: Callable[[], bool], seconds: float = 10) -> None:
    """Poll ``check`` until it holds or ``seconds`` pass; the page's events arrive meanwhile."""
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        page.wait_for_timeout(20)


@pytest.mark.allow_page_errors
def test_page_fixture_collects_errors_and_outside_requests(
    page: Page, ui_server: UiServer, page_errors: PageErrors
) -> None:
    page.goto(f"{ui_server.url}/health")
    page.evaluate("console.error('logged on purpose')")
    page.add_script_tag(content="throw new Error('thrown on purpose')")
    page.evaluate("fetch('http://example.invalid/x').catch(() => null)")
    expected = [
        "console error: logged on purpose",
        "uncaught: Error: thrown on purpose",
        "request outside the server: http://example.invalid/x",
    ]
    wait_for(page, lambda: all(e in page_errors.items for e in expected))
    assert all(e in page_errors.items for e in expected), str(page_errors)
