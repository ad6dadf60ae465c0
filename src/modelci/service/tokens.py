"""Bearer tokens of the HTTP API: created, listed and revoked by ``modelci tokens``,
checked on each request by :class:`TokenVerifier` (wrapped as a FastAPI
dependency in ``service/api.py``).

A token is 32 random bytes, so storing its SHA-256 is enough: unlike a
password it cannot be guessed from the hash, and no slow hash is needed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

from modelci.errors import ConfigError, Unauthorized
from modelci.store import records as store
from modelci.store.db import Database

__all__ = [
    "TOKEN_PREFIX",
    "TokenInfo",
    "TokenVerifier",
    "create_token",
    "list_tokens",
    "revoke_token",
    "token_sha256",
]

TOKEN_PREFIX = "mci_"  # noqa: S105 (a prefix that makes tokens recognisable)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_CREATE_HINT = "create one with `modelci tokens create NAME` and send `Authorization: Bearer TOKEN`"
# last_used_at is written at most this often per token: once per request would be
# one write per prediction.
_TOUCH_EVERY = dt.timedelta(seconds=60)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None


def create_token(database: Database, name: str) -> str:
    """A new token called ``name``; the caller shows it once (only its hash is kept)."""
    if not _NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a usable token name",
            hint="use 1-100 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with database.session() as session:
        store.create_api_token(session, name=name, token_sha256=token_sha256(token))
    return token


def list_tokens(database: Database) -> list[TokenInfo]:
    with database.session() as session:
        return [
            TokenInfo(t.name, t.created_at, t.last_used_at) for t in store.list_api_tokens(session)
        ]


def revoke_token(database: Database, name: str) -> None:
    with database.session() as session:
        if not store.revoke_api_token(session, name=name):
            raise ConfigError(f"there is no token named {name!r}", hint="see `modelci tokens list`")


class TokenVerifier:
    """Checks ``Authorization`` headers against the stored tokens.

    A token that checked out is trusted for ``cache_s`` without asking the
    database again (a revoked token stops working within that time), so a
    token-protected predict route costs no query per request.
    """

    def __init__(self, database: Database, *, cache_s: float = 5.0) -> None:
        self.database = database
        self.cache_s = cache_s
        self._known: dict[str, tuple[str, float]] = {}  # sha256 -> (name, checked at)
        self._lock = threading.Lock()

    def cached(self, authorization: str | None) -> str | None:
        """The token's name if it checked out within ``cache_s`` (no database query)."""
        try:
            digest = _digest(authorization)
        except Unauthorized:
            return None
        with self._lock:
            cached = self._known.get(digest)
        if cached is not None and time.monotonic() - cached[1] < self.cache_s:
            return cached[0]
        return None

    def verify(self, authorization: str | None) -> str:
        """The token's name; ``Unauthorized`` (saying how to get one) otherwise."""
        name = self.cached(authorization)
        if name is not None:
            return name
        digest = _digest(authorization)
        with self.database.session() as session:
            found = store.find_api_token(session, token_sha256=digest, touch_after=_TOUCH_EVERY)
            # The lookup was by hash; comparing again in constant time keeps any
            # string comparison's timing independent of the secret.
            if found is None or not hmac.compare_digest(found.token_sha256, digest):
                raise Unauthorized("the bearer token is unknown or revoked", hint=_CREATE_HINT)
            name = found.name
        with self._lock:
            if len(self._known) > 1000:  # only valid tokens get here: a handful
                self._known.clear()
            self._known[digest] = (name, time.monotonic())
        return name


def _digest(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("this API needs a bearer token", hint=_CREATE_HINT)
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header is not `Bearer TOKEN`", hint=_CREATE_HINT)
    return token_sha256(token)
