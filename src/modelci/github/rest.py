"""The HTTP plumbing under :class:`~modelci.github.client.GitHubClient`.

Every call goes through :meth:`RestClient._request`, which adds GitHub's
headers and a token for the installation, waits out rate limits the way
GitHub documents (``retry-after``, then ``x-ratelimit-reset``, then at least a
minute, doubling), allows at most ``max_concurrency`` requests in flight per
installation, renews an installation token GitHub refused once, and turns an
error answer into a :class:`~modelci.github.errors.GitHubError` carrying
GitHub's message and documentation link.

Side effects are injectable: the HTTP layer (``transport=`` or
``http_client=``), the sleep and the clock.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Self

import httpx

from modelci.github.auth import AppAuth, Auth, InstallationToken
from modelci.github.errors import GitHubError, RateLimitExceeded
from modelci.github.sansio import error_from_response, rate_limit_wait

__all__ = ["API_VERSION", "DEFAULT_API_URL", "RestClient", "quote", "repo_path"]

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def quote(part: str | int) -> str:
    """A URL path segment: GitHub names and refs may hold '/' or other specials."""
    return urllib.parse.quote(str(part), safe="")


def repo_path(repo: str) -> str:
    """``/repos/{owner}/{name}`` for ``"owner/name"``, refusing anything else."""
    if not _REPO.match(repo):
        raise ValueError(f"{repo!r} is not an 'owner/name' repository")
    owner, name = repo.split("/")
    return f"/repos/{quote(owner)}/{quote(name)}"


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    return data.get("message", "") if isinstance(data, dict) else ""


class RestClient:
    """GitHub's REST API over httpx, for one App or token.

    ``max_retries`` caps how often one request is retried after a rate limit;
    ``max_wait_s`` caps a single wait: a longer one (an exhausted hourly
    quota) raises :class:`RateLimitExceeded` with ``retry_at`` at once, so a
    worker is not held asleep for up to an hour.
    """

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        auth: Auth | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
        max_concurrency: int = 4,
        max_retries: int = 3,
        max_wait_s: float = 900.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if auth is None:
            raise ValueError("a GitHub client needs auth=AppAuth(...) or auth=TokenAuth(...)")
        self.api_url = api_url.rstrip("/")
        self.auth = auth
        self._own_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport, timeout=timeout_s)
        self._max_concurrency = max(1, max_concurrency)
        self._max_retries = max_retries
        self._max_wait = max_wait_s
        self._sleep = sleep
        self._clock = clock
        self._installation: int | None = None
        # Shared (by reference) with every for_installation() view.
        self._guard = threading.Lock()
        self._semaphores: dict[object, threading.BoundedSemaphore] = {}
        self._comment_locks: dict[tuple[str, int, str], threading.Lock] = {}
        self._identity: dict[object, str | None] = {}
        self._checks_refused: set[str] = set()

    # -- plumbing ---------------------------------------------------------------------

    def for_installation(self, installation_id: int | None) -> Self:
        """A view of this client whose calls default to ``installation_id``."""
        view = copy.copy(self)
        view._installation = installation_id
        view._own_http = False
        return view

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.api_url!r}, {self.auth!r}, installation={self._installation})"

    def _semaphore(self, key: object) -> threading.BoundedSemaphore:
        with self._guard:
            return self._semaphores.setdefault(
                key, threading.BoundedSemaphore(self._max_concurrency)
            )

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            # Only Link headers give absolute URLs: never send a token elsewhere.
            if not path.startswith(self.api_url + "/"):
                raise GitHubError(
                    f"GitHub pointed to {path}, outside {self.api_url}; refusing to follow",
                    hint="check MODELCI_GITHUB_API_URL (for GitHub Enterprise: https://HOST/api/v3)",
                )
            return path
        return self.api_url + path

    def installation_token(self, installation_id: int | None = None) -> str:
        """A token for ``installation_id`` (or the bound one), e.g. for :func:`git_credentials`."""
        return self.auth.token(self._resolve(installation_id), self)

    def _resolve(self, installation_id: int | None) -> int | None:
        return self._installation if installation_id is None else installation_id

    def _request(
        self,
        method: str,
        path: str,
        *,
        installation_id: int | None = None,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        app_jwt: str | None = None,
        user_token: str | None = None,
    ) -> httpx.Response:
        """Send one API request, retrying rate limits; raise GitHubError on failure.

        ``app_jwt`` authenticates as the App itself instead of an installation;
        ``user_token`` as a person who signed in (``github.oauth``), never renewed.
        A 304 is returned, not raised: conditional requests expect it.
        """
        installation = self._resolve(installation_id)
        url = self._url(path)
        key: object = "app" if app_jwt else "user" if user_token else installation
        rate_limited = 0
        renewed = False
        while True:
            token = app_jwt or user_token or self.auth.token(installation, self)
            request_headers = {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "modelci",
                "Authorization": f"Bearer {token}",
                **(headers or {}),
            }
            with self._semaphore(key):
                try:
                    # GitHub redirects reads of renamed repositories; httpx drops
                    # the Authorization header if a redirect leaves the origin.
                    response = self._http.request(
                        method,
                        url,
                        json=json,
                        params=params,
                        headers=request_headers,
                        follow_redirects=method == "GET",
                    )
                except httpx.HTTPError as exc:
                    raise GitHubError(
                        f"could not reach GitHub for {method} {path}: {type(exc).__name__}: {exc}",
                        hint=f"check that {self.api_url} is reachable from this machine",
                    ) from exc
            status = response.status_code
            if status == 401 and not (app_jwt or user_token) and self.auth.is_app and not renewed:
                # Revoked early, or our clock runs behind GitHub's: renew once.
                self.auth.invalidate(installation, token)
                renewed = True
                continue
            now = self._clock()
            wait = rate_limit_wait(
                status,
                response.headers,
                _message(response),
                now=now,
                secondary_attempt=rate_limited,
            )
            if wait is None:
                break
            if wait > self._max_wait:
                why = (
                    f"GitHub asks for a {wait:.0f} s wait, over the {self._max_wait:.0f} s allowed"
                )
                raise self._rate_limit_error(method, path, response, now + wait, why)
            if rate_limited >= self._max_retries:
                why = f"still limited after {rate_limited} retries"
                raise self._rate_limit_error(method, path, response, now + wait, why)
            rate_limited += 1
            log.warning("GitHub rate limit on %s %s: waiting %.0f s", method, path, wait)
            self._sleep(wait)
        if response.is_success or status == 304:
            return response
        raise error_from_response(method, path, status, response.content)

    def _rate_limit_error(
        self, method: str, path: str, response: httpx.Response, retry_at: float, why: str
    ) -> RateLimitExceeded:
        base = error_from_response(method, path, response.status_code, response.content)
        when = datetime.fromtimestamp(retry_at).astimezone().isoformat(timespec="seconds")
        return RateLimitExceeded(
            f"{base.message} (rate limited: {why})",
            hint=f"GitHub allows the next try at {when}; reschedule the work then",
            retry_at=retry_at,
            status=base.status,
            github_message=base.github_message,
            documentation_url=base.documentation_url,
        )

    def _paginate(
        self, path: str, *, params: Mapping[str, str | int] | None, installation_id: int | None
    ) -> Iterator[Any]:
        url: str | None = path
        query: Mapping[str, str | int] | None = params
        while url is not None:
            response = self._request("GET", url, params=query, installation_id=installation_id)
            items = response.json()
            if not isinstance(items, list):
                raise GitHubError(f"GitHub answered GET {path} with a non-list")
            yield from items
            url = response.links.get("next", {}).get("url")
            query = None  # the next link already carries the query

    def exchange_installation_token(self, *, installation_id: int, jwt: str) -> InstallationToken:
        """``POST /app/installations/{id}/access_tokens`` (used by :class:`AppAuth`)."""
        response = self._request(
            "POST", f"/app/installations/{quote(installation_id)}/access_tokens", app_jwt=jwt
        )
        data = response.json()
        try:
            expires = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00"))
            return InstallationToken(token=data["token"], expires_at=expires.timestamp())
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GitHubError(
                "GitHub's installation token answer lacks 'token' or a valid 'expires_at'"
            ) from exc

    def identity(self, *, installation_id: int | None = None) -> str | None:
        """The login comments are written as (``<slug>[bot]`` for an App), or None if unknown."""
        installation = self._resolve(installation_id)
        key: object = "app" if self.auth.is_app else "token"
        if key not in self._identity:
            login: str | None = None
            try:
                if isinstance(self.auth, AppAuth):
                    slug = self._request("GET", "/app", app_jwt=self.auth.jwt()).json().get("slug")
                    login = f"{slug}[bot]" if isinstance(slug, str) else None
                else:
                    found = self._request("GET", "/user", installation_id=installation).json()
                    login = found.get("login") if isinstance(found.get("login"), str) else None
            except GitHubError as exc:
                # An Actions GITHUB_TOKEN cannot read /user: then comments are matched
                # by marker only. Any other failure may pass, so it is not remembered.
                if exc.status not in (403, 404):
                    raise
                log.info("cannot tell which login modelci comments as: %s", exc.message)
            self._identity[key] = login
        return self._identity[key]
