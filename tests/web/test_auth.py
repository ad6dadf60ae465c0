"""Signing in to the dashboard: GitHub's OAuth web flow (the stand-in) and API tokens,
sessions, CSRF, repository access and the audit log, on a real PostgreSQL."""

from __future__ import annotations

import re
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import psycopg
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from modelci.github import AppAuth, GitHubClient
from modelci.service.api import ApiContext, create_app
from modelci.service.tokens import create_token, revoke_token
from modelci.settings import Settings
from modelci.store import audit as audit_store
from modelci.store.db import Database, open_database
from modelci.web.auth import (
    COOKIE,
    audit,
    csrf_token,
    require_csrf,
    require_repo,
    require_viewer,
)
from modelci.web.identity import Viewer
from modelci.web.permissions import PermissionCache
from modelci.web.sessions import SessionKeys
from modelci.web.signin import GitHubSignIn, SignIn
from tests.github.conftest import APP_ID, REPO, GitHub
from tests.github.standin_oauth import OAuthState, oauth_of

CALLBACK = "http://testserver/oauth/callback"
KEY = bytes(range(32))
ViewerDep = Annotated[Viewer, Depends(require_viewer)]


@pytest.fixture(scope="module")
def database(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    name = f"modelci_web_{uuid.uuid4().hex[:8]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    found = open_database(Settings(data_dir=tmp_path_factory.mktemp("data"), database_url=url))
    yield found
    found.close()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@dataclass
class Dash:
    app: FastAPI
    client: TestClient
    signin: SignIn
    database: Database
    oauth: OAuthState | None


def probe_routes(app: FastAPI, database: Database) -> None:
    """Routes standing in for the pages: what the pages do with these dependencies."""

    @app.get("/ui/probe")
    def probe(request: Request, viewer: ViewerDep) -> dict[str, Any]:
        return {
            "login": viewer.login,
            "kind": viewer.kind,
            "repos": dict(viewer.repos),
            "csrf": csrf_token(request),
        }

    @app.get("/ui/repos/{owner}/{name}")
    def repo_page(owner: str, name: str, viewer: ViewerDep) -> dict[str, str]:
        require_repo(viewer, f"{owner}/{name}")
        return {"repo": f"{owner}/{name}"}

    @app.post("/ui/repos/{owner}/{name}/act", dependencies=[Depends(require_csrf)])
    async def act(owner: str, name: str, request: Request, viewer: ViewerDep) -> dict[str, str]:
        repo = f"{owner}/{name}"
        require_repo(viewer, repo, write=True)
        form = await request.form()
        audit(
            database,
            viewer=viewer,
            action="cancel",
            target="job:7",
            reason=str(form.get("reason", "")),
            details={"repository": repo, "job_id": 7},
        )
        return {"done": repo}


def make_dash(
    database: Database,
    *,
    github: GitHub | None = None,
    public_url: str | None = None,
    permission_ttl_s: float = 60,
) -> Dash:
    context = ApiContext(database, None, b"", token_cache_s=0, public_url=public_url)  # type: ignore[arg-type]
    oauth = None
    sign_in_github = None
    permissions = None
    if github is not None:
        oauth = oauth_of(github.state)
        oauth.callback_urls.append(CALLBACK)
        client = GitHubClient(github.url, AppAuth(APP_ID, github.key.private_pem))
        sign_in_github = GitHubSignIn(client, oauth.client_id, oauth.client_secret)
        permissions = PermissionCache(client, ttl_s=permission_ttl_s)
    context.signin = SignIn(
        database,
        SessionKeys(KEY),
        github=sign_in_github,
        permissions=permissions,
        public_url=public_url,
    )
    app = create_app(context)  # mounts the sign-in routes (web.auth.mount_auth)
    probe_routes(app, database)
    return Dash(app, TestClient(app), context.signin, database, oauth)


def form_csrf(page: str) -> str:
    found = re.search(r'name=csrf value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def sign_in_with_token(dash: Dash, token: str, next_path: str = "/ui/probe") -> httpx.Response:
    page = dash.client.get("/login", params={"next": next_path})
    return dash.client.post(
        "/login",
        data={"token": token, "next": next_path, "csrf": form_csrf(page.text)},
        follow_redirects=False,
    )


def sign_in_with_github(dash: Dash, next_path: str = "/ui/probe") -> httpx.Response:
    """The browser's trip: our /login/github, GitHub's authorize, back to our callback."""
    away = dash.client.get("/login/github", params={"next": next_path}, follow_redirects=False)
    assert away.status_code == 303
    at_github = httpx.get(away.headers["location"], follow_redirects=False)
    assert at_github.status_code == 302
    back = at_github.headers["location"]
    assert back.startswith(CALLBACK)
    return dash.client.get(back.removeprefix("http://testserver"), follow_redirects=False)


def test_signed_out_pages_send_to_sign_in(database: Database) -> None:
    dash = make_dash(database)
    response = dash.client.get("/ui/probe?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fui%2Fprobe%3Fx%3D1"
    page = dash.client.get("/login?next=/ui/probe")
    assert "API token" in page.text and "Sign in with GitHub" not in page.text
    assert "modelci tokens create NAME" in page.text
    api = dash.client.get("/ui/probe", headers={"accept": "application/json"})
    assert api.status_code == 401


def test_a_token_signs_a_browser_in_until_it_is_revoked(database: Database) -> None:
    dash = make_dash(database)
    name = f"laptop-{uuid.uuid4().hex[:6]}"
    token = create_token(database, name)
    wrong = sign_in_with_token(dash, "mci_not-a-token")
    assert wrong.status_code == 401
    assert "unknown or revoked" in wrong.text and "modelci tokens create" in wrong.text
    done = sign_in_with_token(dash, token)
    assert done.status_code == 303 and done.headers["location"] == "/ui/probe"
    cookie = done.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http, no https public URL
    assert token not in cookie
    seen = dash.client.get("/ui/probe").json()
    assert seen["login"] == f"token:{name}" and seen["kind"] == "token" and seen["csrf"]
    assert dash.client.get("/ui/repos/any/repo").status_code == 200
    revoke_token(database, name)
    assert dash.client.get("/ui/probe", follow_redirects=False).status_code == 303


def test_the_token_form_needs_its_csrf_token(database: Database) -> None:
    dash = make_dash(database)
    token = create_token(database, f"t-{uuid.uuid4().hex[:6]}")
    dash.client.get("/login")
    response = dash.client.post("/login", data={"token": token, "csrf": "forged"})
    assert response.status_code == 403 and "CSRF" in response.text
    assert COOKIE not in dash.client.cookies


def test_github_sign_in_limits_what_a_person_sees_and_does(
    database: Database, github: GitHub
) -> None:
    github.state.add_repo("octo/other", installation_id=7)
    github.state.add_repo("acme/secret", installation_id=8)
    github.state.set_role(REPO, "alice", "write")
    github.state.set_role("octo/other", "alice", "read")
    github.state.set_role("acme/secret", "bob", "admin")
    dash = make_dash(database, github=github)
    assert dash.oauth is not None
    dash.oauth.browser_login = "alice"
    page = dash.client.get("/login")
    assert 'href="/login/github?next=%2F"' in page.text
    done = sign_in_with_github(dash, "/ui/repos/octo/model")
    assert done.status_code == 303 and done.headers["location"] == "/ui/repos/octo/model"
    seen = dash.client.get("/ui/probe").json()
    assert seen["login"] == "alice" and seen["repos"] == {REPO: "write", "octo/other": "read"}
    # No read access: a 404 that does not even confirm the name.
    hidden = dash.client.get("/ui/repos/acme/secret")
    assert hidden.status_code == 404 and "acme" not in hidden.text
    assert dash.client.get("/ui/repos/octo/other").status_code == 200
    csrf = seen["csrf"]
    # Read access only: the forged POST gets 403, even with the CSRF token.
    forged = dash.client.post("/ui/repos/octo/other/act", data={"csrf": csrf, "reason": "x"})
    assert forged.status_code == 403 and "write, maintain or admin" in forged.text
    # Write access but no CSRF token: 403.
    assert dash.client.post("/ui/repos/octo/model/act", data={"reason": "x"}).status_code == 403
    done = dash.client.post("/ui/repos/octo/model/act", data={"csrf": csrf, "reason": "stuck"})
    assert done.status_code == 200
    with database.session() as session:
        (entry,) = audit_store.list_audit(session, repository=REPO, limit=1)
        assert (entry.actor, entry.actor_kind, entry.action, entry.target, entry.reason) == (
            "alice",
            "github",
            "cancel",
            "job:7",
            "stuck",
        )
        assert entry.details == {"repository": REPO, "job_id": 7}


def test_signing_out_ends_the_session_on_the_server(database: Database, github: GitHub) -> None:
    github.state.set_role(REPO, "octocat", "read")
    dash = make_dash(database, github=github)
    sign_in_with_github(dash)
    cookie = dash.client.cookies[COOKIE]
    csrf = dash.client.get("/ui/probe").json()["csrf"]
    assert dash.client.post("/logout", data={}).status_code == 403  # no CSRF token
    out = dash.client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    # The copied cookie is dead too: its session row is gone.
    replay = TestClient(dash.app, cookies={COOKIE: cookie})
    assert replay.get("/ui/probe", follow_redirects=False).status_code == 303


def test_a_callback_from_another_browser_or_state_is_refused(
    database: Database, github: GitHub
) -> None:
    dash = make_dash(database, github=github)
    away = dash.client.get("/login/github", follow_redirects=False)
    back = httpx.get(away.headers["location"]).headers["location"]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))
    other = TestClient(dash.app)  # no state cookie: a link someone was sent
    refused = other.get("/oauth/callback", params=query)
    assert refused.status_code == 400 and "did not start in this browser" in refused.text
    forged = dash.client.get("/oauth/callback", params={**query, "state": "guessed"})
    assert forged.status_code == 400
    assert dash.oauth is not None and dash.oauth.exchanges == 0  # no code was traded


def test_github_refusals_are_shown_with_their_fix(database: Database, github: GitHub) -> None:
    dash = make_dash(database, github=github)
    assert dash.oauth is not None
    dash.oauth.deny = True
    cancelled = sign_in_with_github(dash)
    assert cancelled.status_code == 400 and "cancelled" in cancelled.text
    dash.oauth.deny = False
    dash.oauth.client_secret = "rotated on GitHub"
    refused = sign_in_with_github(dash)
    assert refused.status_code == 502
    assert "incorrect_client_credentials" in refused.text
    assert "MODELCI_GITHUB_CLIENT_SECRET_PATH" in refused.text


def test_a_token_github_revokes_ends_the_session(database: Database, github: GitHub) -> None:
    github.state.set_role(REPO, "octocat", "read")
    dash = make_dash(database, github=github, permission_ttl_s=0)
    sign_in_with_github(dash)
    assert dash.client.get("/ui/probe").status_code == 200
    for value, token in list(github.state.tokens.items()):
        if token.kind == "user":
            del github.state.tokens[value]
    assert dash.client.get("/ui/probe", follow_redirects=False).status_code == 303


def test_cookies_are_secure_behind_https(database: Database) -> None:
    dash = make_dash(database, public_url="https://ci.example.com")
    token = create_token(database, f"t-{uuid.uuid4().hex[:6]}")
    page = dash.client.get("/login")
    assert "Secure" in page.headers["set-cookie"]
    response = dash.client.post(
        "/login",
        data={"token": token, "csrf": form_csrf(page.text)},
        cookies={"modelci_login": page.cookies["modelci_login"]},
        follow_redirects=False,
    )
    assert response.status_code == 303 and "Secure" in response.headers["set-cookie"]


def test_a_tampered_cookie_and_foreign_next_are_refused(database: Database) -> None:
    dash = make_dash(database)
    token = create_token(database, f"t-{uuid.uuid4().hex[:6]}")
    done = sign_in_with_token(dash, token, next_path="//evil.example/")
    assert done.headers["location"] == "/"
    cookie = dash.client.cookies[COOKIE]
    body, expiry, mac = cookie.split(".")
    later = TestClient(dash.app, cookies={COOKIE: f"{body}.{int(expiry) + 86400}.{mac}"})
    assert later.get("/ui/probe", follow_redirects=False).status_code == 303


def test_the_json_api_takes_sessions(database: Database, github: GitHub) -> None:
    github.state.add_repo("acme/secret", installation_id=8)
    github.state.set_role(REPO, "alice", "read")
    github.state.set_role("acme/secret", "bob", "admin")
    dash = make_dash(database, github=github)
    assert dash.oauth is not None
    dash.oauth.browser_login = "alice"
    sign_in_with_github(dash)
    schedule = "/api/repositories/octo/model/retrain-schedule"
    # Through authentication to the route itself, which does not know the repository yet.
    known = dash.client.get(schedule)
    assert known.status_code == 404 and "modelci does not know" in known.text
    hidden = dash.client.get("/api/repositories/acme/secret/retrain-schedule")
    assert hidden.status_code == 404 and "acme" not in hidden.text
    spans = dash.client.get("/api/jobs")
    assert spans.status_code == 403 and "bearer token" in spans.text
    csrf = dash.client.get("/ui/probe").json()["csrf"]
    change = {"schedule": "0 3 * * 1"}
    assert dash.client.put(schedule, json=change).status_code == 403  # no X-CSRF-Token
    read_only = dash.client.put(schedule, json=change, headers={"x-csrf-token": csrf})
    assert read_only.status_code == 403 and "write, maintain or admin" in read_only.text
    # Signed out, the API still asks for a bearer token.
    assert TestClient(dash.app).get(schedule).status_code == 401
