"""Signed cookies, CSRF tokens and sealed user tokens for the dashboard's sessions.

No web framework here: ``web.auth`` puts these values into cookies and forms.

Why sessions are kept on the server (``store.websessions``) and the cookie
holds only a signed random id: signing out deletes the row, so a copied
cookie stops working at once instead of at its expiry, and the person's
GitHub token never travels to the browser. The id is signed anyway
(HMAC-SHA256 over id and expiry) so a forged or expired cookie is refused
without a database query. The store keeps the id's SHA-256, not the id, and
the GitHub token sealed (AES-GCM) with a key derived from the session key:
a copy of the database alone signs nobody in and leaks no token.

Every key is derived from one secret, the session key file
(``MODELCI_SESSION_SECRET_PATH``, default ``<data dir>/session.key``), made
0600 at first start; replacing the file signs everyone out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelci.errors import ConfigError

__all__ = [
    "KEY_BYTES",
    "SessionKeys",
    "SignedValue",
    "load_or_create_key",
    "new_session_id",
    "session_row_id",
]

KEY_BYTES = 32
_NONCE_BYTES = 12  # AES-GCM's standard nonce


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_session_id() -> str:
    """A fresh session id: 256 random bits."""
    return secrets.token_urlsafe(32)


def session_row_id(session_id: str) -> str:
    """What the store keys a session by: the id's SHA-256, so the table signs nobody in."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def load_or_create_key(path: Path) -> bytes:
    """The session key in ``path``; created (random, mode 0600) when the file is missing.

    A key others can read would let them forge any session: refused with the fix.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(
            f"cannot create the session key {path} ({exc.strerror})",
            hint="make its directory writable by modelci, or set MODELCI_SESSION_SECRET_PATH",
        ) from None
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the session key {path} ({exc.strerror})",
            hint="check MODELCI_SESSION_SECRET_PATH and the file's owner and mode",
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the session key {path} can be read by other users (mode {stat.S_IMODE(mode):o})",
            hint=f"run `chmod 600 {path}`: whoever reads it can sign in as anyone",
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise ConfigError(
            f"the session key {path} is not {KEY_BYTES * 2} or more hex digits",
            hint="delete the file to have modelci make a new one (everyone is signed out)",
        )
    return key


@dataclass(frozen=True)
class SignedValue:
    """What :meth:`SessionKeys.unsign` found in a valid, unexpired value."""

    payload: str
    expires_at: int


class SessionKeys:
    """The keys derived from the session key, one per use, and what they do."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < KEY_BYTES:
            raise ValueError(f"a session key has at least {KEY_BYTES} bytes")
        self._signing = self._derive(secret, b"modelci cookie signing")
        self._csrf = self._derive(secret, b"modelci csrf")
        self._sealing = AESGCM(self._derive(secret, b"modelci token sealing"))
        self.clock = clock

    @staticmethod
    def _derive(secret: bytes, label: bytes) -> bytes:
        return hmac.new(secret, label, hashlib.sha256).digest()

    # -- signed values (cookies, OAuth state) -------------------------------------------

    def sign(self, payload: str, *, ttl_s: float, purpose: str) -> str:
        """``payload`` (any text), its expiry and an HMAC-SHA256 over both and ``purpose``.

        ``purpose`` keeps a value signed for one use (the OAuth state) from being
        accepted as another (a session).
        """
        expires_at = int(self.clock() + ttl_s)
        body = f"{_b64(payload.encode())}.{expires_at}"
        return f"{body}.{self._mac(purpose, body)}"

    def unsign(self, value: str | None, *, purpose: str) -> SignedValue | None:
        """The payload of a value :meth:`sign` made for ``purpose``; None if it was
        altered, made for another purpose or has expired."""
        if not value or value.count(".") != 2:
            return None
        body, _, mac = value.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(purpose, body)):
            return None
        encoded, _, expiry = body.partition(".")
        try:
            expires_at = int(expiry)
            payload = _unb64(encoded).decode()
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if expires_at <= self.clock():
            return None
        return SignedValue(payload, expires_at)

    def _mac(self, purpose: str, body: str) -> str:
        message = f"{purpose}\n{body}".encode()
        return _b64(hmac.new(self._signing, message, hashlib.sha256).digest())

    # -- CSRF ---------------------------------------------------------------------------

    def csrf_token(self, session_id: str) -> str:
        """The session's CSRF token: fixed for its life, unguessable without the key."""
        return _b64(hmac.new(self._csrf, session_id.encode(), hashlib.sha256).digest())

    def csrf_ok(self, session_id: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_token(session_id), given or "")

    # -- sealed tokens ------------------------------------------------------------------

    def seal(self, secret: str, *, bound_to: str) -> bytes:
        """``secret`` encrypted and authenticated; ``bound_to`` (the session's row id)
        must be given again to open it, so a sealed token moved to another row fails."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._sealing.encrypt(nonce, secret.encode(), bound_to.encode())

    def unseal(self, sealed: bytes, *, bound_to: str) -> str | None:
        """The secret :meth:`seal` sealed, or None (another key, altered, another row)."""
        nonce, box = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._sealing.decrypt(nonce, box, bound_to.encode()).decode()
        except (InvalidTag, ValueError):
            return None
