"""Credentials for GitHub's API: a GitHub App's, or a plain token.

:class:`AppAuth` signs short-lived JWTs with the App's private key and trades
them for installation tokens (one hour each), cached per installation and
renewed shortly before they expire. :class:`TokenAuth` wraps a personal or
Actions token. Both hand the client a token for an installation id; neither
ever shows a secret in ``repr`` or in an error message.

The exchange itself is an HTTP call, so it is delegated to a
:class:`TokenExchanger` (the :class:`~modelci.github.client.GitHubClient`),
which keeps this module free of I/O and lets tests use a fake.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from modelci.errors import ConfigError

__all__ = ["AppAuth", "Auth", "InstallationToken", "TokenAuth", "TokenExchanger", "make_auth"]

# GitHub rejects an App JWT whose lifetime exceeds 10 minutes; iat is backdated
# a minute against clock drift, so exp = now + 9 min keeps exp - iat at 10 min.
JWT_BACKDATE_S = 60
JWT_LIFETIME_S = 540
# Renew this long before expiry: a token must outlive the request (and the
# git fetch) it is handed to.
DEFAULT_REFRESH_MARGIN_S = 300.0


@dataclass(frozen=True)
class InstallationToken:
    """An installation access token and its expiry (epoch seconds)."""

    token: str = field(repr=False)
    expires_at: float


class TokenExchanger(Protocol):
    """Trades an App JWT for an installation token.

    ``POST /app/installations/{id}/access_tokens``.
    """

    def exchange_installation_token(
        self, *, installation_id: int, jwt: str
    ) -> InstallationToken: ...


class Auth(Protocol):
    """What :class:`~modelci.github.client.GitHubClient` needs from credentials."""

    @property
    def is_app(self) -> bool:
        """True for a GitHub App (check runs allowed), False for a plain token."""
        ...

    def token(self, installation_id: int | None, exchanger: TokenExchanger) -> str:
        """A token valid for at least a few minutes for ``installation_id``."""
        ...

    def invalidate(self, installation_id: int | None, token: str) -> None:
        """Forget ``token`` if GitHub refused it, so the next call gets a fresh one."""
        ...


class TokenAuth:
    """A plain token (personal access token, or an Actions ``GITHUB_TOKEN``).

    Personal tokens cannot create check runs; the client then falls back to
    commit statuses.
    """

    is_app = False

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise ConfigError("the GitHub token is empty", hint="set MODELCI_GITHUB_TOKEN")
        self._token = token.strip()

    def token(self, installation_id: int | None, exchanger: TokenExchanger) -> str:
        return self._token

    def invalidate(self, installation_id: int | None, token: str) -> None:
        # A plain token cannot be renewed: the 401 reaches the caller.
        pass

    def __repr__(self) -> str:
        return "TokenAuth(token=<hidden>)"


class AppAuth:
    """A GitHub App: JWTs signed with its private key, installation tokens cached.

    Thread-safe: each installation has its own lock, so one installation's
    token renewal does not hold up requests for the others, and concurrent
    callers of one installation trigger a single exchange.
    """

    is_app = True

    def __init__(
        self,
        app_id: int | str,
        private_key_pem: str | bytes,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
    ) -> None:
        self.app_id = str(app_id).strip()
        if not self.app_id.isdigit():
            raise ConfigError(
                f"the GitHub App id {self.app_id!r} is not a number",
                hint="set MODELCI_GITHUB_APP_ID to the 'App ID' shown on the App's settings page",
            )
        pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
        try:
            key = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            # Deliberately no detail from the exception: it could quote key material.
            raise ConfigError(
                "the GitHub App private key is not an unencrypted PEM private key",
                hint="download a private key from the App's settings page and point "
                "MODELCI_GITHUB_PRIVATE_KEY_PATH at the .pem file",
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise ConfigError(
                "the GitHub App private key is not an RSA key",
                hint="GitHub Apps sign with RS256: use the .pem file GitHub generated",
            )
        self._key = key
        self._clock = clock
        self._margin = refresh_margin_s
        self._tokens: dict[int, InstallationToken] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def jwt(self) -> str:
        """A JWT authenticating as the App itself (for ``/app/...`` endpoints)."""
        now = int(self._clock())
        claims = {"iat": now - JWT_BACKDATE_S, "exp": now + JWT_LIFETIME_S, "iss": self.app_id}
        return jwt.encode(claims, self._key, algorithm="RS256")

    def _lock_for(self, installation_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(installation_id, threading.Lock())

    def installation_token(self, installation_id: int, exchanger: TokenExchanger) -> str:
        """A cached installation token, renewed when it has under the margin left."""
        with self._lock_for(installation_id):
            cached = self._tokens.get(installation_id)
            if cached is not None and cached.expires_at - self._clock() > self._margin:
                return cached.token
            fresh = exchanger.exchange_installation_token(
                installation_id=installation_id, jwt=self.jwt()
            )
            self._tokens[installation_id] = fresh
            return fresh.token

    def token(self, installation_id: int | None, exchanger: TokenExchanger) -> str:
        if installation_id is None:
            raise ConfigError(
                "a GitHub App can only call the repository API for an installation, "
                "and no installation id was given",
                hint="pass installation_id= or use client.for_installation(id); webhook "
                "payloads carry it in installation.id",
            )
        return self.installation_token(installation_id, exchanger)

    def invalidate(self, installation_id: int | None, token: str) -> None:
        if installation_id is None:
            return
        with self._lock_for(installation_id):
            cached = self._tokens.get(installation_id)
            # Another thread may already have replaced the refused token.
            if cached is not None and cached.token == token:
                del self._tokens[installation_id]

    def __repr__(self) -> str:
        return f"AppAuth(app_id={self.app_id}, cached_installations={len(self._tokens)})"


def make_auth(
    *,
    app_id: int | str | None = None,
    private_key_pem: str | bytes | None = None,
    token: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Auth:
    """The credentials the settings describe: an App when its id and key are set, else a token."""
    if app_id and private_key_pem:
        return AppAuth(app_id, private_key_pem, clock=clock)
    if app_id or private_key_pem:
        raise ConfigError(
            "a GitHub App needs both its id and its private key, and only one is set",
            hint="set MODELCI_GITHUB_APP_ID and MODELCI_GITHUB_PRIVATE_KEY_PATH together",
        )
    if token:
        return TokenAuth(token)
    raise ConfigError(
        "no GitHub credentials are configured",
        hint="set MODELCI_GITHUB_APP_ID and MODELCI_GITHUB_PRIVATE_KEY_PATH (a GitHub App), "
        "or MODELCI_GITHUB_TOKEN (a token; results then go to commit statuses)",
    )
