"""Signing people in with the GitHub App: the OAuth web flow and what their token sees.

GitHub's web application flow for a GitHub App ("Generating a user access
token for a GitHub App"): the browser is sent to ``{web}/login/oauth/authorize``
with the App's ``client_id``, our ``redirect_uri`` and a random ``state``;
GitHub sends it back with a ``code`` (single use, valid 10 minutes), which
``POST {web}/login/oauth/access_token`` with the client secret trades for a
user access token (``ghu_``, 8 hours unless the App opted out of expiry).

The token is limited to what both the App and the person may do, so
``GET /user/installations`` and ``GET /user/installations/{id}/repositories``
list exactly the repositories where the App is installed and the person has
access, each with their ``permissions``. ``{web}`` is github.com for
api.github.com, ``https://HOST`` for GitHub Enterprise Server's
``https://HOST/api/v3``. Mixed into :class:`~modelci.github.client.GitHubClient`.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from modelci.github.errors import GitHubError
from modelci.github.rest import RestClient, quote

__all__ = ["OAuthMixin", "UserToken", "web_url_for"]

_EXCHANGE_DOC = (
    "https://docs.github.com/apps/oauth-apps/maintaining-oauth-apps/"
    "troubleshooting-oauth-app-access-token-request-errors"
)
# GitHub's errors of the code exchange (answered 200, with "error"), and their fixes.
_EXCHANGE_FIXES = {
    "incorrect_client_credentials": "check MODELCI_GITHUB_CLIENT_ID (the App's settings page "
    "shows it; it is not the App ID) and MODELCI_GITHUB_CLIENT_SECRET_PATH (generate a client "
    "secret on the same page)",
    "redirect_uri_mismatch": "add {redirect_uri} as a Callback URL in the App's settings, or set "
    "MODELCI_PUBLIC_URL to the address people open modelci at",
    "bad_verification_code": "the sign-in took over 10 minutes or its link was used already: "
    "sign in again",
    "unverified_user_email": "the GitHub account needs a verified primary email address",
}


def web_url_for(api_url: str) -> str:
    """GitHub's web address for its REST API base URL (where people sign in)."""
    parsed = urllib.parse.urlsplit(api_url.rstrip("/"))
    if parsed.hostname == "api.github.com":
        return f"{parsed.scheme}://github.com"
    path = parsed.path.removesuffix("/api/v3")
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


@dataclass(frozen=True)
class UserToken:
    """A user access token; ``expires_at`` (epoch seconds) is None for one that
    does not expire (an App that opted out of expiring tokens)."""

    token: str = field(repr=False)
    expires_at: float | None
    refresh_token: str | None = field(default=None, repr=False)


class OAuthMixin(RestClient):
    @property
    def web_url(self) -> str:
        return web_url_for(self.api_url)

    def authorize_url(self, *, client_id: str, redirect_uri: str, state: str) -> str:
        """Where to send the browser: GitHub asks the person to authorize the App."""
        query = urllib.parse.urlencode(
            {"client_id": client_id, "redirect_uri": redirect_uri, "state": state}
        )
        return f"{self.web_url}/login/oauth/authorize?{query}"

    def exchange_oauth_code(
        self, *, client_id: str, client_secret: str, code: str, redirect_uri: str
    ) -> UserToken:
        """``POST {web}/login/oauth/access_token``: the code GitHub sent back, for a token.

        Not on the API host, so not through ``_request`` (which sends no token
        outside ``api_url``); the client secret goes in the form body.
        """
        url = f"{self.web_url}/login/oauth/access_token"
        try:
            response = self._http.post(
                url,
                data={
                    "client_id": client_id,
                    "client_secret": client_secret,
                    "code": code,
                    "redirect_uri": redirect_uri,
                },
                headers={"Accept": "application/json", "User-Agent": "modelci"},
            )
        except httpx.HTTPError as exc:
            raise GitHubError(
                f"could not reach GitHub at {url}: {type(exc).__name__}: {exc}",
                hint="check that GitHub is reachable from this machine (and "
                "MODELCI_GITHUB_API_URL, for GitHub Enterprise Server)",
            ) from exc
        try:
            data: Any = response.json()
        except ValueError:
            data = None
        if not response.is_success or not isinstance(data, dict):
            raise GitHubError(
                f"GitHub answered the sign-in's code exchange with HTTP {response.status_code}",
                hint="try signing in again; if it persists, check MODELCI_GITHUB_API_URL",
                status=response.status_code,
            )
        if "error" in data:
            error = str(data["error"])
            fix = _EXCHANGE_FIXES.get(error, "sign in again").format(redirect_uri=redirect_uri)
            raise GitHubError(
                f"GitHub refused the sign-in: {error} ({data.get('error_description', '')})",
                hint=fix,
                status=response.status_code,
                github_message=str(data.get("error_description") or error),
                documentation_url=_EXCHANGE_DOC,
            )
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise GitHubError("GitHub's answer to the sign-in lacks an access_token")
        expires_in = data.get("expires_in")
        refresh = data.get("refresh_token")
        return UserToken(
            token=token,
            expires_at=time.time() + expires_in if isinstance(expires_in, int) else None,
            refresh_token=refresh if isinstance(refresh, str) else None,
        )

    def user_login(self, *, user_token: str) -> str:
        """``GET /user``: who the token belongs to."""
        login = self._request("GET", "/user", user_token=user_token).json().get("login")
        if not isinstance(login, str) or not login:
            raise GitHubError("GitHub's GET /user answer lacks a login")
        return login

    def _pages(self, path: str, key: str, *, user_token: str) -> Iterator[dict[str, Any]]:
        # These lists come wrapped ({"total_count": n, key: [...]}), paginated by Link.
        url: str | None = path
        params: dict[str, str | int] | None = {"per_page": 100}
        while url is not None:
            response = self._request("GET", url, params=params, user_token=user_token)
            items = response.json().get(key)
            if not isinstance(items, list):
                raise GitHubError(f"GitHub's GET {path} answer lacks its {key!r} list")
            yield from (item for item in items if isinstance(item, dict))
            url = response.links.get("next", {}).get("url")
            params = None

    def user_installations(self, *, user_token: str) -> list[int]:
        """``GET /user/installations``: the App's installations the person can reach."""
        return [
            int(item["id"])
            for item in self._pages("/user/installations", "installations", user_token=user_token)
        ]

    def user_installation_repositories(
        self, *, user_token: str, installation_id: int
    ) -> dict[str, dict[str, Any]]:
        """``GET /user/installations/{id}/repositories``: ``owner/name`` → ``permissions``."""
        path = f"/user/installations/{quote(installation_id)}/repositories"
        return {
            str(item["full_name"]): dict(item.get("permissions") or {})
            for item in self._pages(path, "repositories", user_token=user_token)
        }

    def user_repositories(self, *, user_token: str) -> dict[str, dict[str, Any]]:
        """Every repository of every installation the person reaches, with permissions."""
        found: dict[str, dict[str, Any]] = {}
        for installation_id in self.user_installations(user_token=user_token):
            found.update(
                self.user_installation_repositories(
                    user_token=user_token, installation_id=installation_id
                )
            )
        return found
