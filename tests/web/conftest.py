"""The dashboard on the API's app, on a real store and a real Procrastinate; and the
stand-in GitHub's fixtures for sign-in.

Each module gets a database of its own on the test PostgreSQL. Who is signed in
is set by the test (``Site.viewer``): the sign-in dependencies are overridden,
as the contract with the sign-in work allows. CSRF is checked against a fixed
token the pages carry (sessions are the sign-in work's, tested there): a form
posted without it is still refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from modelci.service import jobs
from modelci.service.api import ApiContext, create_app
from modelci.settings import Settings
from modelci.store.db import Database, open_database
from modelci.web import render
from modelci.web.app import WebContext, mount_web
from modelci.web.auth import current_viewer, require_csrf, require_viewer
from modelci.web.identity import Viewer
from tests.github import conftest as github_fixtures
from tests.github.helpers import TEST_SECRET

# The stand-in GitHub's fixtures, for sign-in and permissions (tests/web/test_auth.py ...).
app_key = github_fixtures.app_key
standin_server = github_fixtures.standin_server
github = github_fixtures.github
app_client = github_fixtures.app_client
sleep = github_fixtures.sleep

ADMIN = Viewer(login="token:admin", kind="token", all_access=True)
TEST_CSRF = "csrf-token-of-the-test-session"


@dataclass
class Site:
    database: Database
    queue: jobs.ProcrastinateQueue
    app: FastAPI
    web: WebContext
    client: TestClient
    data_dir: Path
    viewer: Viewer | None = ADMIN
    extra: dict[str, Any] = field(default_factory=dict)

    def csrf(self, page: str) -> str:
        """The CSRF token a page's forms carry."""
        body = self.client.get(page).text
        marker = 'name="csrf" value="'
        start = body.index(marker) + len(marker)
        return body[start : body.index('"', start)]


@pytest.fixture(scope="module")
def web_database_url(postgres_url: str) -> Iterator[str]:
    name = f"modelci_web_{uuid.uuid4().hex[:8]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def site(web_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render, "csrf_token", lambda request: TEST_CSRF)
        yield from _site(web_database_url, tmp_path_factory)


def _site(web_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("data")
    settings = Settings(data_dir=data_dir, database_url=web_database_url)
    database = open_database(settings)
    job_app = jobs.make_job_app(web_database_url)
    jobs.apply_schema(job_app)
    with job_app.open():
        queue = jobs.ProcrastinateQueue(job_app)
        app = create_app(ApiContext(database, queue, TEST_SECRET))
        web = mount_web(app, WebContext(database=database, queue=queue, settings=settings))
        holder: dict[str, Site] = {}

        async def signed_in() -> Viewer:
            viewer = holder["site"].viewer
            if viewer is None:
                raise HTTPException(303, "sign in", headers={"location": "/login"})
            return viewer

        async def maybe_signed_in() -> Viewer | None:
            return holder["site"].viewer

        async def csrf_checked(request: Request) -> None:
            if (await request.form()).get("csrf") != TEST_CSRF:
                raise HTTPException(403, "the form's CSRF token is missing or wrong")

        app.dependency_overrides[require_viewer] = signed_in
        app.dependency_overrides[current_viewer] = maybe_signed_in
        app.dependency_overrides[require_csrf] = csrf_checked
        client = TestClient(app, follow_redirects=False)
        holder["site"] = Site(database, queue, app, web, client, data_dir)
        yield holder["site"]
    database.close()


@pytest.fixture
def as_admin(site: Site) -> Iterator[Site]:
    site.viewer = ADMIN
    yield site
    site.viewer = ADMIN
