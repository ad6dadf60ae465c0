"""Sessions of the dashboard: made at sign-in, turned back into a :class:`Viewer`.

No web framework: ``web.auth`` hands this module cookie values and form
fields and gets cookie values and viewers back.

A person signs in with GitHub (the App's OAuth web flow: ``github.oauth``) or
with an API token (``modelci tokens create``: a local or CLI-only install has
no GitHub). Either way the browser gets a signed cookie naming a session
stored on the server (``store.websessions``; why: ``web.sessions``). The
session holds the person's GitHub token, or the API token, sealed: each
request asks GitHub for the person's repositories through
``web.permissions`` (cached a minute), or checks the API token is still
valid, so revoking either on its side ends the session here.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelci.errors import Unauthorized
from modelci.github.errors import GitHubError
from modelci.github.oauth import UserToken
from modelci.service.tokens import TokenVerifier
from modelci.store import websessions
from modelci.store.db import Database
from modelci.web.identity import Viewer
from modelci.web.permissions import PermissionCache
from modelci.web.sessions import SessionKeys, load_or_create_key, new_session_id, session_row_id

if TYPE_CHECKING:
    from modelci.github.client import GitHubClient
    from modelci.settings import Settings

__all__ = ["GitHubSignIn", "SignIn", "SignedIn", "safe_next"]

log = logging.getLogger(__name__)

GITHUB_SESSION_S = 8 * 3600.0  # GitHub's user tokens last 8 hours
TOKEN_SESSION_S = 12 * 3600.0
OAUTH_STATE_S = 600.0  # GitHub's codes last 10 minutes: so does the state
_SESSION = "session"
_STATE = "oauth-state"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ch in target for ch in "\r\n\\"):
        return "/"
    return target


@dataclass(frozen=True)
class GitHubSignIn:
    """The App's OAuth credentials and the client that talks to GitHub for people."""

    client: GitHubClient
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class SignedIn:
    """A request's viewer and the session id behind it (for its CSRF token)."""

    viewer: Viewer
    session_id: str


class SignIn:
    """Sign-in, sessions and viewers over the database, the keys and GitHub."""

    def __init__(
        self,
        database: Database,
        keys: SessionKeys,
        *,
        github: GitHubSignIn | None = None,
        tokens: TokenVerifier | None = None,
        permissions: PermissionCache | None = None,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.keys = keys
        self.github = github
        self.tokens = tokens or TokenVerifier(database)
        if permissions is None and github is not None:
            permissions = PermissionCache(github.client)
        self.permissions = permissions
        self.public_url = public_url.rstrip("/") if public_url else None
        self.clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings, database: Database, *, client: GitHubClient | None
    ) -> SignIn:
        """From ``MODELCI_*``: GitHub sign-in when the App's client id and secret are set."""
        keys = SessionKeys(load_or_create_key(_key_path(settings)))
        github = None
        secret = settings.read_client_secret()
        if settings.github_client_id and secret and client is not None:
            github = GitHubSignIn(client, settings.github_client_id, secret)
        elif settings.github_client_id or secret:
            log.warning(
                "GitHub sign-in is off: it needs both MODELCI_GITHUB_CLIENT_ID and "
                "MODELCI_GITHUB_CLIENT_SECRET_PATH (and the App's credentials)"
            )
        return cls(database, keys, github=github, public_url=settings.public_url)

    @property
    def secure(self) -> bool:
        """Whether cookies are sent over https only, whatever the request's scheme."""
        return bool(self.public_url and self.public_url.startswith("https://"))

    # -- making sessions ----------------------------------------------------------------

    def _start(self, *, kind: str, login: str, secret: str, ttl_s: float) -> tuple[str, float]:
        session_id = new_session_id()
        row_id = session_row_id(session_id)
        expires = dt.datetime.fromtimestamp(self.clock() + ttl_s, dt.UTC)
        with self.database.session() as session:
            websessions.create_web_session(
                session,
                row_id=row_id,
                kind=kind,
                login=login,
                expires_at=expires,
                user_token=self.keys.seal(secret, bound_to=row_id),
            )
        return self.keys.sign(session_id, ttl_s=ttl_s, purpose=_SESSION), ttl_s

    def start_with_token(self, token: str) -> tuple[str, float]:
        """A session for an API token (cookie value, lifetime); Unauthorized if it is not one."""
        name = self.tokens.verify(f"Bearer {token.strip()}")
        return self._start(
            kind="token", login=f"token:{name}", secret=token.strip(), ttl_s=TOKEN_SESSION_S
        )

    def begin_github(self, next_path: str | None) -> tuple[str, str]:
        """(``state`` for GitHub, the value of the cookie that must come back with it)."""
        state = secrets.token_urlsafe(24)
        cookie = self.keys.sign(
            f"{state}\n{safe_next(next_path)}", ttl_s=OAUTH_STATE_S, purpose=_STATE
        )
        return state, cookie

    def check_state(self, state: str | None, cookie: str | None) -> str | None:
        """Where to go next if ``state`` is the one this browser was given; else None."""
        found = self.keys.unsign(cookie, purpose=_STATE)
        if found is None or not state:
            return None
        expected, _, next_path = found.payload.partition("\n")
        if not secrets.compare_digest(expected, state):
            return None
        return safe_next(next_path)

    def finish_github(self, code: str, redirect_uri: str) -> tuple[str, float]:
        """Trade GitHub's code for the person's token; a session for them (GitHubError)."""
        if self.github is None:
            raise GitHubError("GitHub sign-in is not configured on this server")
        github = self.github
        token: UserToken = github.client.exchange_oauth_code(
            client_id=github.client_id,
            client_secret=github.client_secret,
            code=code,
            redirect_uri=redirect_uri,
        )
        # GitHub's advice: ask who the token is for, every time (the person may
        # have switched accounts at GitHub's sign-in page).
        login = github.client.user_login(user_token=token.token)
        ttl = GITHUB_SESSION_S
        if token.expires_at is not None:
            ttl = max(60.0, min(ttl, token.expires_at - time.time() - 60))
        if self.permissions is not None:
            self.permissions.forget(login)
        return self._start(kind="github", login=login, secret=token.token, ttl_s=ttl)

    # -- reading them back --------------------------------------------------------------

    def session_id(self, cookie: str | None) -> str | None:
        """The session id a cookie names, if its signature and expiry hold (no query)."""
        found = self.keys.unsign(cookie, purpose=_SESSION)
        return found.payload if found is not None else None

    def viewer(self, cookie: str | None) -> SignedIn | None:
        """Who the cookie signs in, or None (no, bad or ended session, revoked token)."""
        session_id = self.session_id(cookie)
        if session_id is None:
            return None
        row_id = session_row_id(session_id)
        with self.database.session() as session:
            row = websessions.get_web_session(session, row_id=row_id)
            kind, login, sealed = (row.kind, row.login, row.user_token) if row else ("", "", None)
        secret = self.keys.unseal(sealed, bound_to=row_id) if sealed else None
        if secret is None:
            return None
        if kind == "token":
            try:
                name = self.tokens.verify(f"Bearer {secret}")
            except Unauthorized:  # revoked since: the session ends with it
                self.end(cookie)
                return None
            return SignedIn(Viewer(f"token:{name}", "token", all_access=True), session_id)
        if kind != "github" or self.permissions is None:
            return None
        try:
            repos = self.permissions.repos_for(login, user_token=secret)
        except GitHubError as exc:
            if exc.status != 401:
                raise
            # GitHub refused the token (revoked, or the App uninstalled): sign out.
            with self.database.session() as session:
                websessions.delete_web_sessions_of(session, login=login)
            return None
        return SignedIn(Viewer(login, "github", repos), session_id)

    def end(self, cookie: str | None) -> None:
        session_id = self.session_id(cookie)
        if session_id is not None:
            with self.database.session() as session:
                websessions.delete_web_session(session, row_id=session_row_id(session_id))

    def csrf_token(self, session_id: str) -> str:
        return self.keys.csrf_token(session_id)

    def csrf_ok(self, session_id: str, given: str | None) -> bool:
        return self.keys.csrf_ok(session_id, given)


def _key_path(settings: Settings) -> Path:
    settings.prepare_data_dir()
    return settings.session_key_path
