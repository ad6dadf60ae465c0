"""A stand-in for api.github.com, served over loopback for the client's tests.

It does what GitHub does for the endpoints modelci calls: checks App JWTs
(RS256 against the App's public key, ``iss``, a lifetime of at most ten
minutes), issues installation tokens that expire, answers 401 "Bad
credentials" to unknown or expired tokens, refuses check runs to personal
tokens, validates bodies against the REST docs (required fields, enums,
length limits, with GitHub-shaped 422s), answers documented shapes, supports
ETag/304 on the pull request list, paginates with Link headers, can be told
to rate-limit, and records every request. The Git Data API and pull request
writes (:mod:`tests.github.standin_gitdata`) work on the repository served
with ``serve_git``, and check an installation token's permissions. State lives in
:class:`~tests.github.standin_state.StandInState`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.github.standin_endpoints import Endpoints, Reject
from tests.github.standin_gitdata import GitDataEndpoints
from tests.github.standin_issues import IssueEndpoints
from tests.github.standin_oauth import OAuthEndpoints
from tests.github.standin_state import Recorded, StandInState, Token

# The versions GitHub's REST API accepts in X-GitHub-Api-Version.
SUPPORTED_API_VERSIONS = ("2022-11-28", "2026-03-10")


class StandIn(OAuthEndpoints, GitDataEndpoints, IssueEndpoints, Endpoints):
    """The ASGI app plus the server thread; ``state`` is swapped for each test."""

    def __init__(self, state: StandInState) -> None:
        self.state = state
        self.app = Starlette(routes=self._routes())
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> str:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in GitHub did not start")
            time.sleep(0.005)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)

    # -- request handling ---------------------------------------------------------------

    def _routes(self) -> list[Route]:
        def route(path: str, fn: Callable[..., Any], method: str, auth: str) -> Route:
            return Route(path, self._wrap(fn, auth), methods=[method])

        repo = "/repos/{owner}/{repo}"
        return [
            route("/app", self.get_app, "GET", "jwt"),
            route("/app/installations/{iid:int}/access_tokens", self.create_token, "POST", "jwt"),
            route("/user", self.get_user, "GET", "token"),
            route("/user/installations", self.list_user_installations, "GET", "token"),
            route(
                "/user/installations/{iid:int}/repositories",
                self.list_user_installation_repos,
                "GET",
                "token",
            ),
            # github.com's sign-in pages (the web host): no API headers, form bodies.
            route("/login/oauth/authorize", self.oauth_authorize, "GET", "web"),
            route("/login/oauth/access_token", self.oauth_access_token, "POST", "web"),
            route(repo + "/collaborators/{user}/permission", self.get_permission, "GET", "token"),
            route(repo + "/issues", self.create_issue, "POST", "token"),
            route(repo + "/issues/{n:int}", self.get_issue, "GET", "token"),
            route(repo + "/issues/{n:int}", self.update_issue, "PATCH", "token"),
            route(repo + "/issues/{n:int}/comments", self.list_comments, "GET", "token"),
            route(repo + "/issues/{n:int}/comments", self.create_comment, "POST", "token"),
            route(repo + "/issues/comments/{cid:int}", self.update_comment, "PATCH", "token"),
            route(repo + "/check-runs", self.create_check_run, "POST", "token"),
            route(repo + "/check-runs/{rid:int}", self.update_check_run, "PATCH", "token"),
            route(repo + "/commits/{sha}/check-runs", self.list_check_runs, "GET", "token"),
            route(repo + "/commits/{sha}/comments", self.create_commit_comment, "POST", "token"),
            route(repo + "/statuses/{sha}", self.create_status, "POST", "token"),
            route(repo + "/pulls", self.list_pulls, "GET", "token"),
            route(repo + "/pulls", self.create_pull, "POST", "token"),
            route(repo + "/pulls/{n:int}", self.get_pull, "GET", "token"),
            route(repo + "/pulls/{n:int}", self.update_pull, "PATCH", "token"),
            route(repo + "/git/blobs", self.create_blob, "POST", "token"),
            route(repo + "/git/trees", self.create_tree, "POST", "token"),
            route(repo + "/git/commits", self.create_git_commit, "POST", "token"),
            route(repo + "/git/commits/{sha}", self.get_git_commit, "GET", "token"),
            route(repo + "/git/refs", self.create_git_ref, "POST", "token"),
            route(repo + "/git/refs/{ref:path}", self.update_git_ref, "PATCH", "token"),
            route(repo + "/branches/{branch}", self.get_branch, "GET", "token"),
            route(repo, self.get_repo, "GET", "token"),
            route(repo + "/installation", self.get_repo_installation, "GET", "jwt"),
            route(repo + "/issues/{n:int}/events", self.list_issue_events, "GET", "token"),
            route(repo + "/git/ref/{ref:path}", self.get_git_ref, "GET", "token"),
            route("/rate_limit", self.get_rate_limit, "GET", "token"),
            route("/{owner}/{repo}.git/info/refs", self.git_http, "GET", "git"),
            route("/{owner}/{repo}.git/{service}", self.git_http, "POST", "git"),
        ]

    def _wrap(self, fn: Callable[..., Any], auth: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            st = self.state
            raw = await request.body()
            try:
                # git's smart HTTP bodies are pack protocol, sign-in bodies forms: not JSON.
                data = raw if auth in ("git", "web") else json.loads(raw) if raw else None
            except json.JSONDecodeError:
                return JSONResponse({"message": "Problems parsing JSON"}, status_code=400)
            headers = {k.lower(): v for k, v in request.headers.items()}
            st.requests.append(
                Recorded(
                    request.method, request.url.path, dict(request.query_params), headers, data
                )
            )
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            try:
                if st.gather_in_flight:
                    waited = time.monotonic() + 10
                    while st.max_in_flight < st.gather_in_flight and time.monotonic() < waited:
                        await asyncio.sleep(0.005)
                if st.delay_s:
                    await asyncio.sleep(st.delay_s)
                fault = st.take_fault(request.url.path)
                if fault is not None:
                    return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
                who: Any = None
                if auth not in ("git", "web"):
                    self._check_headers(headers)
                if auth == "jwt":
                    who = self._check_jwt(headers)
                elif auth == "token":
                    who = self._check_token(headers)
                    owner = request.path_params.get("owner")
                    if owner is not None:
                        self._check_repo(who, f"{owner}/{request.path_params['repo']}")
                result = fn(request, data, who, **request.path_params)
                response = result if isinstance(result, Response) else JSONResponse(result)
                if request.url.path != "/rate_limit":
                    response.headers.update(st.charge(who, response.status_code))
                return response
            except Reject as rejected:
                return rejected.response
            finally:
                st.in_flight -= 1

        return endpoint

    def _bearer(self, headers: dict[str, str]) -> str:
        value = headers.get("authorization", "")
        scheme, _, credential = value.partition(" ")
        if not credential or scheme.lower() not in ("bearer", "token"):
            raise Reject(401, "Requires authentication", "")
        return credential.strip()

    def _check_headers(self, headers: dict[str, str]) -> None:
        """What GitHub refuses before routing: an unknown API version, an Accept
        that takes no JSON (REST docs: "Media types", "API versions")."""
        version = headers.get("x-github-api-version")
        if version is not None and version not in SUPPORTED_API_VERSIONS:
            raise Reject(
                400,
                f"API version {version!r} is not supported.",
                "https://docs.github.com/rest/about-the-rest-api/api-versions",
            )
        accept = headers.get("accept", "*/*")
        types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
        if not any(
            t in ("*/*", "application/*", "application/json")
            or (t.startswith("application/vnd.github") and t.endswith("json"))
            for t in types
        ):
            raise Reject(
                415,
                f"Unsupported 'Accept' header: {types}. Must accept 'application/json'.",
                "https://docs.github.com/rest/using-the-rest-api/getting-started-with-the-rest-api",
            )

    def _check_jwt(self, headers: dict[str, str]) -> dict[str, Any]:
        st = self.state
        if not headers.get("authorization", "").startswith("Bearer "):
            # GitHub takes an App's JWT only with the Bearer scheme ("token" is for tokens).
            raise Reject(401, "A JSON web token could not be decoded", "")
        try:
            claims = jwt.decode(
                self._bearer(headers),
                st.public_key_pem,
                algorithms=["RS256"],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "require": ["iat", "exp", "iss"],
                },
            )
        except jwt.InvalidTokenError:
            raise Reject(401, "A JSON web token could not be decoded", "") from None
        st.jwt_claims.append(claims)
        now = st.clock()
        iat, exp = claims["iat"], claims["exp"]
        if str(claims["iss"]) != str(st.app_id):
            raise Reject(401, "A JSON web token could not be decoded", "")
        if not isinstance(iat, int) or iat > now + 30:
            raise Reject(
                401, "'Issued at' claim ('iat') must be an Integer representing a time in the past."
            )
        if not isinstance(exp, int) or exp <= now:
            raise Reject(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires.",
            )
        if exp - iat > 600 or exp > now + 600:
            raise Reject(401, "'Expiration time' claim ('exp') is too far in the future")
        return claims

    def _check_token(self, headers: dict[str, str]) -> Token:
        st = self.state
        token = st.tokens.get(self._bearer(headers))
        if token is None or (token.expires_at is not None and st.clock() >= token.expires_at):
            raise Reject(401, "Bad credentials", "")
        return token

    def _check_repo(self, token: Token, full_name: str) -> None:
        repo = self.state.repos.get(full_name)
        if (
            repo is None
            or (token.kind == "installation" and token.installation_id != repo.installation_id)
            # A user token reaches only what both the App and the person can.
            or (token.kind == "user" and repo.roles.get(token.login, "none") == "none")
        ):
            raise Reject(404, "Not Found", "")

    # -- endpoints ---------------------------------------------------------------------
