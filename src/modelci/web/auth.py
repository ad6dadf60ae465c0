"""Sign-in routes and the dependencies every dashboard page and action uses.

``mount_auth`` adds ``GET /login`` (the "Sign in with GitHub" button when the
App's client id and secret are set, and a form taking an API token, which
works without GitHub), ``GET /login/github`` (off to GitHub with a state
bound to this browser by a cookie), ``GET /oauth/callback`` (state checked,
code traded, session made) and ``POST /logout`` (CSRF-checked).

Pages depend on :func:`require_viewer` (signed out: 303 to ``/login?next=``),
forms on :func:`require_csrf` and carry :func:`csrf_token` as a hidden
``csrf`` input, and repository pages call :func:`require_repo` (no read
access: 404, not even the name; no write access: 403). Actions are logged
with :func:`audit`. The JSON API accepts the same sessions through
:func:`api_session` (``service.api`` calls it).

The cookie ``modelci_session`` is HttpOnly, SameSite=Lax, Secure behind https
(the request's scheme, or ``MODELCI_PUBLIC_URL``), signed, and expires with
the session (GitHub's token: 8 hours; an API token's: 12 hours).
"""

from __future__ import annotations

import html
import logging
import secrets
import urllib.parse
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from modelci.errors import Unauthorized
from modelci.github.errors import GitHubError
from modelci.service.tokens import list_tokens
from modelci.store import audit as audit_store
from modelci.store.db import Database
from modelci.web.identity import Viewer
from modelci.web.sessions import SessionKeys
from modelci.web.signin import OAUTH_STATE_S, SignedIn, SignIn, safe_next

__all__ = [
    "COOKIE",
    "api_session",
    "audit",
    "csrf_token",
    "current_viewer",
    "mount_auth",
    "require_csrf",
    "require_repo",
    "require_viewer",
]

log = logging.getLogger(__name__)

COOKIE = "modelci_session"
_STATE_COOKIE = "modelci_oauth"
_LOGIN_COOKIE = "modelci_login"  # double-submit token of the sign-in form (login CSRF)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NO_CSRF = "the form's CSRF token is missing or stale: reload the page and submit it again"


def _signin(request: Request) -> SignIn:
    found: SignIn | None = getattr(request.app.state, "signin", None)
    if found is None:
        raise HTTPException(503, "the dashboard's sign-in is not mounted on this server")
    return found


async def _signed_in(request: Request) -> SignedIn | None:
    if hasattr(request.state, "signed_in"):
        cached: SignedIn | None = request.state.signed_in
        return cached
    signin = _signin(request)
    found: SignedIn | None = None
    header = request.headers.get("authorization")
    if header:
        name = signin.tokens.cached(header) or await run_in_threadpool(signin.tokens.verify, header)
        found = SignedIn(Viewer(f"token:{name}", "token", all_access=True), "")
    elif request.cookies.get(COOKIE):
        found = await run_in_threadpool(signin.viewer, request.cookies.get(COOKIE))
    request.state.signed_in = found
    return found


async def current_viewer(request: Request) -> Viewer | None:
    """Who the session cookie or ``Authorization: Bearer`` signs in; None if nobody."""
    found = await _signed_in(request)
    return found.viewer if found is not None else None


def _login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?" + urllib.parse.urlencode({"next": target})


async def require_viewer(request: Request) -> Viewer:
    """The viewer; signed out, a 303 to ``/login?next=<this page>`` (401 for JSON)."""
    viewer = await current_viewer(request)
    if viewer is None:
        accept = request.headers.get("accept", "")
        # Pages redirect; a client that asks for JSON only (a script) gets a 401.
        if "text/html" in accept or "application/json" not in accept:
            raise HTTPException(303, "sign in first", headers={"Location": _login_url(request)})
        raise HTTPException(401, "sign in first: /login, or send a bearer token")
    return viewer


def csrf_token(request: Request) -> str:
    """The token forms carry as a hidden ``csrf`` input (after :func:`require_viewer`)."""
    found: SignedIn | None = getattr(request.state, "signed_in", None)
    if found is None or not found.session_id:
        return ""
    return _signin(request).csrf_token(found.session_id)


async def require_csrf(request: Request) -> None:
    """403 unless a cookie-signed POST carries its session's CSRF token (form field
    ``csrf`` or header ``X-CSRF-Token``). A bearer token needs none: no browser
    sends one by itself."""
    found = await _signed_in(request)
    if found is None:
        raise HTTPException(403, _NO_CSRF)
    if not found.session_id:
        return
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get("csrf")
        given = value if isinstance(value, str) else None
    if not _signin(request).csrf_ok(found.session_id, given):
        raise HTTPException(403, _NO_CSRF)


def require_repo(viewer: Viewer, repo: str, *, write: bool = False) -> None:
    """404 without read access (the repository's existence is not confirmed), 403
    with read but not write access when ``write``."""
    if not viewer.can_read(repo):
        raise HTTPException(404, "Not Found")
    if write and not viewer.can_write(repo):
        raise HTTPException(
            403,
            f"{viewer.login} may read {repo} but not change it: this needs the write, "
            "maintain or admin role on GitHub",
        )


def audit(
    database: Database,
    *,
    viewer: Viewer,
    action: str,
    target: str,
    reason: str,
    details: dict[str, Any],
) -> None:
    """Log an action taken from the dashboard: who, what, on which target, why.

    ``details["repository"]`` (``owner/name``), when given, files it under
    that repository's history.
    """
    repository = details.get("repository")
    with database.session() as session:
        audit_store.record_audit(
            session,
            actor=viewer.login,
            actor_kind=viewer.kind,
            action=action,
            target=target,
            reason=reason,
            details=details,
            repository=repository if isinstance(repository, str) else None,
        )


async def api_session(request: Request) -> str | None:
    """For ``service.api``: the name a dashboard session signs the JSON API in as.

    None without a session cookie. A token session may call everything; a
    GitHub session only routes of one repository it may read (write for
    changes), and a change needs the ``X-CSRF-Token`` header.
    """
    if getattr(request.app.state, "signin", None) is None or not request.cookies.get(COOKIE):
        return None
    found = await _signed_in(request)
    if found is None:
        return None
    changes = request.method not in _SAFE_METHODS
    if changes and not _signin(request).csrf_ok(
        found.session_id, request.headers.get("x-csrf-token")
    ):
        raise HTTPException(403, _NO_CSRF.replace("form's", "request's X-CSRF-Token"))
    viewer = found.viewer
    if not viewer.all_access:
        owner, name = request.path_params.get("owner"), request.path_params.get("name")
        if not owner or not name:
            raise HTTPException(
                403,
                "this API route spans every repository: call it with a bearer token "
                "(`modelci tokens create NAME`)",
            )
        require_repo(viewer, f"{owner}/{name}", write=changes)
    return viewer.login if viewer.kind == "token" else f"github:{viewer.login}"


# -- routes ------------------------------------------------------------------------------


def _cookie_args(request: Request, signin: SignIn) -> dict[str, Any]:
    secure = signin.secure or request.url.scheme == "https"
    return {"httponly": True, "samesite": "lax", "secure": secure, "path": "/"}


def _callback_url(request: Request, signin: SignIn) -> str:
    base = signin.public_url or str(request.base_url).rstrip("/")
    return f"{base}/oauth/callback"


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        "<title>Sign in · modelci</title><style>"
        "body{font:16px system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}"
        "input,button,a.button{font:inherit;padding:.5rem .8rem;box-sizing:border-box}"
        "input{width:100%;margin:.3rem 0 .8rem}a.button{display:block;text-align:center;"
        "background:#24292f;color:#fff;text-decoration:none;border-radius:6px}"
        ".error{color:#b42318;border:1px solid #b42318;padding:.6rem;border-radius:6px}"
        "</style></head><body><h1>modelci</h1>" + body + "</body></html>",
        status_code=status,
    )


def _login_page(
    request: Request, signin: SignIn, next_path: str, *, error: str = "", status: int = 200
) -> HTMLResponse:
    nonce = request.cookies.get(_LOGIN_COOKIE) or secrets.token_urlsafe(16)
    parts = []
    if error:
        parts.append(f"<p class=error role=alert>{html.escape(error)}</p>")
    query = urllib.parse.urlencode({"next": next_path})
    if signin.github is not None:
        parts.append(
            f'<p><a class=button href="/login/github?{html.escape(query)}">'
            "Sign in with GitHub</a></p>"
        )
    parts.append(
        '<form method=post action="/login"><label for=token>API token</label>'
        "<input id=token name=token type=password autocomplete=off required>"
        f'<input type=hidden name=next value="{html.escape(next_path)}">'
        f'<input type=hidden name=csrf value="{html.escape(signin.csrf_token("login:" + nonce))}">'
        "<button type=submit>Sign in with a token</button></form>"
        "<p><small>Create a token on the server with <code>modelci tokens create NAME</code>."
        "</small></p>"
    )
    response = _page("".join(parts), status)
    if not request.cookies.get(_LOGIN_COOKIE):
        response.set_cookie(_LOGIN_COOKIE, nonce, max_age=3600, **_cookie_args(request, signin))
    return response


def _signed_in_response(
    request: Request, signin: SignIn, target: str, cookie: str, ttl_s: float
) -> Response:
    response = RedirectResponse(target, status_code=303)
    args = _cookie_args(request, signin)
    response.set_cookie(COOKIE, cookie, max_age=int(ttl_s), **args)
    response.delete_cookie(_STATE_COOKIE, **args)
    response.delete_cookie(_LOGIN_COOKIE, **args)
    return response


def mount_auth(app: FastAPI, context: Any) -> None:
    """Add the sign-in routes; ``context.signin`` (a :class:`SignIn`) or, without one,
    token sign-in with a key held in memory (sessions end when the server stops)."""
    signin: SignIn | None = getattr(context, "signin", None)
    if signin is None:
        signin = SignIn(context.database, SessionKeys(secrets.token_bytes(32)))
        log.warning("dashboard sessions use a key held in memory: they end at restart")
    if getattr(app.state, "tokens", None) is not None:
        signin.tokens = app.state.tokens  # one cache of valid tokens for API and pages
    mounted = getattr(app.state, "signin", None) is not None
    app.state.signin = signin
    if mounted:
        return  # create_app mounted the routes already: they read app.state.signin
    if signin.github is None and not list_tokens(context.database):
        log.warning(
            "to sign in to the dashboard (%s/login), create an API token: "
            "`modelci tokens create NAME` (or set MODELCI_GITHUB_CLIENT_ID and "
            "MODELCI_GITHUB_CLIENT_SECRET_PATH for GitHub sign-in)",
            signin.public_url or "",
        )

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login(request: Request, next: str | None = None) -> Response:
        target = safe_next(next)
        if await current_viewer(request) is not None:
            return RedirectResponse(target, status_code=303)
        return _login_page(request, signin, target)

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_with_token(request: Request) -> Response:
        form = await request.form()
        target = safe_next(str(form.get("next") or "/"))
        nonce = request.cookies.get(_LOGIN_COOKIE, "")
        if not nonce or not signin.csrf_ok("login:" + nonce, str(form.get("csrf") or "")):
            return _login_page(request, signin, target, error=_NO_CSRF, status=403)
        try:
            cookie, ttl = await run_in_threadpool(
                signin.start_with_token, str(form.get("token") or "")
            )
        except Unauthorized as exc:
            message = f"{exc.message}: {exc.hint}" if exc.hint else exc.message
            return _login_page(request, signin, target, error=message, status=401)
        return _signed_in_response(request, signin, target, cookie, ttl)

    @app.get("/login/github", include_in_schema=False)
    async def login_with_github(request: Request, next: str | None = None) -> Response:
        if signin.github is None:
            raise HTTPException(
                404,
                "GitHub sign-in is off: set MODELCI_GITHUB_CLIENT_ID and "
                "MODELCI_GITHUB_CLIENT_SECRET_PATH, or sign in with an API token",
            )
        state, cookie = signin.begin_github(next)
        url = signin.github.client.authorize_url(
            client_id=signin.github.client_id,
            redirect_uri=_callback_url(request, signin),
            state=state,
        )
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(
            _STATE_COOKIE, cookie, max_age=int(OAUTH_STATE_S), **_cookie_args(request, signin)
        )
        return response

    @app.get("/oauth/callback", include_in_schema=False)
    async def oauth_callback(
        request: Request,
        code: str | None = None,
        state: str | None = None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> Response:
        target = signin.check_state(state, request.cookies.get(_STATE_COOKIE))
        if target is None:
            return _login_page(
                request,
                signin,
                "/",
                error="this sign-in did not start in this browser, or took over 10 minutes: "
                "sign in again",
                status=400,
            )
        if error or not code:
            why = {
                "access_denied": "GitHub sign-in was cancelled",
                "redirect_uri_mismatch": "GitHub refused the callback address "
                f"{_callback_url(request, signin)}: add it as a Callback URL in the App's "
                "settings, or set MODELCI_PUBLIC_URL",
            }.get(error or "", f"GitHub did not sign you in ({error_description or error})")
            return _login_page(request, signin, target, error=why, status=400)
        try:
            cookie, ttl = await run_in_threadpool(
                signin.finish_github, code, _callback_url(request, signin)
            )
        except GitHubError as exc:
            log.warning("GitHub sign-in failed: %s", exc)
            message = f"{exc.message}. {exc.hint}" if exc.hint else exc.message
            return _login_page(request, signin, target, error=message, status=502)
        return _signed_in_response(request, signin, target, cookie, ttl)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await require_csrf(request)
        await run_in_threadpool(signin.end, request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, **_cookie_args(request, signin))
        return response
