"""The stand-in GitHub's sign-in: the App's OAuth web flow and what a user token lists.

Follows GitHub's documentation ("Generating a user access token for a GitHub
App", "Authorizing OAuth apps", "Troubleshooting OAuth app access token request
errors", "REST API endpoints for GitHub App installations"):

- ``GET /login/oauth/authorize`` needs a known ``client_id``; ``redirect_uri``,
  when given, must equal a registered callback URL exactly (else GitHub sends
  the browser to the first callback with ``error=redirect_uri_mismatch``); the
  person at the browser (:attr:`OAuthState.browser_login`) authorizes, or
  denies (``error=access_denied``), and is sent back with ``code`` and ``state``.
- ``POST /login/oauth/access_token`` answers 200 with ``error`` for a wrong
  client id or secret (``incorrect_client_credentials``), a code that is
  unknown, older than 10 minutes, or used before (``bad_verification_code``;
  a reused code also revokes the token it gave, as RFC 6749 4.1.2 asks), or a
  ``redirect_uri`` other than the authorize request's (``redirect_uri_mismatch``).
  JSON with ``Accept: application/json``, else form-encoded, as GitHub does.
  The token (``ghu_``) expires after 8 hours, with a ``ghr_`` refresh token.
- ``GET /user/installations`` and ``GET /user/installations/{id}/repositories``
  take only user tokens and list what both the App and the person reach, each
  repository with the ``permissions`` of the person's role.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from tests.github.standin_endpoints import Reject
from tests.github.standin_state import StandInState, Token

CODE_LIFETIME_S = 600
USER_TOKEN_LIFETIME_S = 28_800
REFRESH_LIFETIME_S = 15_811_200
DOC_INSTALLATIONS = "/apps/installations#list-app-installations-accessible-to-the-user-access-token"
DOC_REPOSITORIES = "/apps/installations#list-repositories-accessible-to-the-user-access-token"
# The permissions object GitHub shows for each role.
ROLE_FLAGS = {
    "admin": {"admin", "maintain", "push", "triage", "pull"},
    "maintain": {"maintain", "push", "triage", "pull"},
    "write": {"push", "triage", "pull"},
    "triage": {"triage", "pull"},
    "read": {"pull"},
}
_ERRORS = {
    "incorrect_client_credentials": "The client_id and/or client_secret passed are incorrect.",
    "bad_verification_code": "The code passed is incorrect or expired.",
    "redirect_uri_mismatch": "The redirect_uri MUST match the registered callback URL for "
    "this application.",
}


@dataclass
class Grant:
    """A code handed out by authorize: who, for which client and redirect, when."""

    login: str
    client_id: str
    redirect_uri: str | None
    issued_at: float
    used: bool = False
    token: str | None = None  # what it was exchanged for


@dataclass
class OAuthState:
    """The App's OAuth settings on the stand-in, and the sign-ins under way."""

    client_id: str = "Iv1.standin0client"
    client_secret: str = field(default_factory=lambda: secrets.token_hex(20))
    callback_urls: list[str] = field(default_factory=list)
    browser_login: str = "octocat"  # who is signed in to GitHub in the browser
    deny: bool = False  # the person clicks "Cancel" instead of "Authorize"
    grants: dict[str, Grant] = field(default_factory=dict)
    exchanges: int = 0


def oauth_of(state: StandInState) -> OAuthState:
    """The OAuth side of ``state``, made on first use (tests arrange it through this)."""
    found = state.__dict__.get("oauth")
    if found is None:
        found = state.__dict__["oauth"] = OAuthState()
    assert isinstance(found, OAuthState)
    return found


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode([*urllib.parse.parse_qsl(parts.query), *params.items()])
    return urllib.parse.urlunsplit(parts._replace(query=query))


class OAuthEndpoints:
    state: StandInState

    # -- the browser's side ---------------------------------------------------------------

    def oauth_authorize(self, request: Request, data: Any, who: Any) -> Response:
        oauth = oauth_of(self.state)
        query = request.query_params
        if query.get("client_id") != oauth.client_id or not oauth.callback_urls:
            # GitHub shows its own 404 page: no redirect to an unknown app's callback.
            return PlainTextResponse("Not Found", status_code=404)
        asked = query.get("redirect_uri")
        state = query.get("state")
        extra = {"state": state} if state is not None else {}
        if asked is not None and asked not in oauth.callback_urls:
            return RedirectResponse(
                _with_query(
                    oauth.callback_urls[0],
                    {
                        "error": "redirect_uri_mismatch",
                        "error_description": _ERRORS["redirect_uri_mismatch"],
                        **extra,
                    },
                ),
                status_code=302,
            )
        target = asked or oauth.callback_urls[0]
        if oauth.deny:
            return RedirectResponse(
                _with_query(
                    target,
                    {
                        "error": "access_denied",
                        "error_description": "The user has denied your application access.",
                        **extra,
                    },
                ),
                status_code=302,
            )
        code = secrets.token_hex(10)
        oauth.grants[code] = Grant(oauth.browser_login, oauth.client_id, asked, self.state.clock())
        return RedirectResponse(_with_query(target, {"code": code, **extra}), status_code=302)

    def oauth_access_token(self, request: Request, data: Any, who: Any) -> Response:
        oauth = oauth_of(self.state)
        oauth.exchanges += 1
        params = dict(request.query_params)
        body = data.decode() if isinstance(data, bytes) else ""
        if request.headers.get("content-type", "").startswith("application/json") and body:
            params.update({k: str(v) for k, v in json.loads(body).items()})
        elif body:
            params.update(dict(urllib.parse.parse_qsl(body)))
        wants_json = "application/json" in request.headers.get("accept", "")

        def error(name: str) -> Response:
            return self._token_answer(
                {"error": name, "error_description": _ERRORS[name]}, wants_json
            )

        if params.get("client_id") != oauth.client_id or not secrets.compare_digest(
            params.get("client_secret", ""), oauth.client_secret
        ):
            return error("incorrect_client_credentials")
        grant = oauth.grants.get(params.get("code", ""))
        if grant is None or grant.client_id != oauth.client_id:
            return error("bad_verification_code")
        if grant.used:
            if grant.token is not None:  # a replayed code: what it gave is withdrawn
                self.state.tokens.pop(grant.token, None)
            return error("bad_verification_code")
        grant.used = True
        if self.state.clock() - grant.issued_at > CODE_LIFETIME_S:
            return error("bad_verification_code")
        if grant.redirect_uri is not None and params.get("redirect_uri") != grant.redirect_uri:
            return error("redirect_uri_mismatch")
        now = self.state.clock()
        value = "ghu_" + secrets.token_hex(18)
        expires_at = now + USER_TOKEN_LIFETIME_S
        self.state.tokens[value] = Token(value, "user", grant.login, None, expires_at)
        grant.token = value
        return self._token_answer(
            {
                "access_token": value,
                "expires_in": USER_TOKEN_LIFETIME_S,
                "refresh_token": "ghr_" + secrets.token_hex(30),
                "refresh_token_expires_in": REFRESH_LIFETIME_S,
                "scope": "",
                "token_type": "bearer",
            },
            wants_json,
        )

    @staticmethod
    def _token_answer(body: dict[str, Any], wants_json: bool) -> Response:
        # Errors too are answered 200; the format follows the Accept header.
        if wants_json:
            return JSONResponse(body)
        return Response(
            urllib.parse.urlencode(body), media_type="application/x-www-form-urlencoded"
        )

    # -- the user token's view ------------------------------------------------------------

    def _user_only(self, token: Token, doc: str) -> None:
        if token.kind != "user":
            raise Reject(
                403,
                "You must authenticate with an access token authorized to a GitHub App in "
                "order to list installations",
                doc,
            )

    def _user_repos(self, login: str) -> dict[int, list[str]]:
        """Per installation, the repositories where ``login`` has a role, by name."""
        found: dict[int, list[str]] = {}
        for name, repo in sorted(self.state.repos.items()):
            if repo.roles.get(login, "none") != "none":
                found.setdefault(repo.installation_id, []).append(name)
        return found

    def list_user_installations(self, request: Request, data: Any, token: Token) -> Response:
        self._user_only(token, DOC_INSTALLATIONS)
        reachable = self._user_repos(token.login)
        items = [
            {
                "id": iid,
                "app_id": self.state.app_id,
                "app_slug": self.state.app_slug,
                "account": self.state.user(self.state.repos[names[0]].full_name.split("/")[0]),
                "target_type": "Organization",
                "repository_selection": "all",
                "permissions": self.state.installation_permissions(iid),
            }
            for iid, names in sorted(reachable.items())
        ]
        return self._wrapped_page(request, "installations", items)

    def list_user_installation_repos(
        self, request: Request, data: Any, token: Token, iid: int
    ) -> Response:
        self._user_only(token, DOC_REPOSITORIES)
        names = self._user_repos(token.login).get(iid)
        if names is None:
            raise Reject(404, "Not Found", DOC_REPOSITORIES)
        items = []
        for name in names:
            role = self.state.repos[name].roles[token.login]
            flags = ROLE_FLAGS.get(role, set())
            permissions = {flag: flag in flags for flag in ROLE_FLAGS["admin"]}
            items.append({**self.state.repo_json(name), "permissions": permissions})
        return self._wrapped_page(request, "repositories", items)

    def _wrapped_page(self, request: Request, key: str, items: list[dict[str, Any]]) -> Response:
        per_page = min(100, int(request.query_params.get("per_page", "30")))
        page = int(request.query_params.get("page", "1"))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            query = {k: v for k, v in request.query_params.items() if k != "page"}
            query["page"] = str(page + 1)
            next_url = f"{self.state.host_url}{request.url.path}?{urllib.parse.urlencode(query)}"
            headers["link"] = f'<{next_url}>; rel="next"'
        body: dict[str, Any] = {"total_count": len(items), key: chunk}
        if key == "repositories":
            body["repository_selection"] = "all"
        return JSONResponse(body, headers=headers)
