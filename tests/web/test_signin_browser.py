"""A real browser (Debian's chromium) signs in with GitHub (the stand-in) and out again."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi import FastAPI

from modelci.store.db import Database
from tests.github.conftest import REPO, GitHub
from tests.web.test_auth import database, make_dash

__all__ = ["database"]  # the module's PostgreSQL database fixture, shared

sync_api = pytest.importorskip("playwright.sync_api")


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


def test_a_browser_signs_in_with_github_and_out(database: Database, github: GitHub) -> None:
    github.state.set_role(REPO, "alice", "write")
    dash = make_dash(database, github=github)
    assert dash.oauth is not None
    dash.oauth.browser_login = "alice"
    with serve(dash.app) as url:
        dash.oauth.callback_urls[:] = [f"{url}/oauth/callback"]
        hosts: set[str] = set()
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page()
            page.on("request", lambda r: hosts.add(urllib.parse.urlsplit(r.url).hostname or ""))
            page.goto(f"{url}/ui/probe")
            assert page.url.startswith(f"{url}/login?next=")
            page.get_by_text("Sign in with GitHub").click()
            page.wait_for_url(f"{url}/ui/probe")
            seen = json.loads(page.inner_text("body"))
            assert seen["login"] == "alice" and seen["repos"] == {REPO: "write"}
            (cookie,) = [c for c in page.context.cookies() if c["name"] == "modelci_session"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
            # Signing out is a POST carrying the CSRF token, as the pages' form does.
            page.set_content(
                f'<form method=post action="{url}/logout">'
                f'<input name=csrf value="{seen["csrf"]}"><button>out</button></form>'
            )
            page.click("button")
            page.wait_for_url(f"{url}/login")
            page.goto(f"{url}/ui/probe")
            assert page.url.startswith(f"{url}/login?next=")
            browser.close()
        assert hosts <= {"127.0.0.1"}, hosts  # nothing left loopback
