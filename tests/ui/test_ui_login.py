"""A server that needs a token: a browser is sent to the sign-in page, and in with a good
token; a wrong one is refused and nothing of the store shows."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.serverproc import ServerProc, server_env, start_server


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, str]]:
    home = tmp_path_factory.mktemp("guarded") / "home"
    made = subprocess.run(
        [sys.executable, "-m", "stepline.cli.main", "server", "token", "create", "browser"],
        env=server_env(home), capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = made.stdout.strip().splitlines()[0]
    assert token.startswith("stp_")
    server = start_server(home)
    try:
        yield server, token
    finally:
        server.stop()


@pytest.mark.allow_page_errors  # the refused requests are logged by the browser
def test_sign_in_with_a_token(page: Page, guarded: tuple[ServerProc, str]) -> None:
    server, token = guarded
    page.goto(f"{server.url}/runs?project=p")
    page.wait_for_url("**/login?next=*")
    expect(page.locator("h1")).to_have_text("Sign in")
    # the stylesheet is served without a token (the page is styled)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgba(0, 0, 0, 0)"
    page.locator("input[name=token]").fill("stp_wrong")
    page.locator("#login button[type=submit]").click()
    expect(page.locator("#login .error")).to_contain_text("not accepted")
    page.locator("input[name=token]").fill(token)
    page.locator("#login button[type=submit]").click()
    page.wait_for_url("**/runs?project=p")
    expect(page.locator("h1")).to_have_text("All pipeline runs")
    # the API answers the browser through the cookie; a script without the token is refused
    assert page.request.get(f"{server.url}/api/v1/pipelines").status == 200
    assert httpx.get(f"{server.url}/pipelines").status_code == 401
