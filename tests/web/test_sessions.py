"""Session signing, CSRF, sealed tokens and the key file (pure; no web framework)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelci.errors import ConfigError
from modelci.web.sessions import (
    SessionKeys,
    load_or_create_key,
    new_session_id,
    session_row_id,
)

KEY = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_signed_value_round_trips_until_it_expires() -> None:
    clock = Clock()
    keys = SessionKeys(KEY, clock=clock)
    value = keys.sign("sid.with|odd chars", ttl_s=60, purpose="session")
    found = keys.unsign(value, purpose="session")
    assert found is not None and found.payload == "sid.with|odd chars"
    assert found.expires_at == 1_000_060
    clock.now += 59
    assert keys.unsign(value, purpose="session") is not None
    clock.now += 1
    assert keys.unsign(value, purpose="session") is None


def test_an_altered_or_misused_value_is_refused() -> None:
    keys = SessionKeys(KEY)
    value = keys.sign("abc", ttl_s=60, purpose="session")
    body, expiry_mac = value.split(".", 1)
    expiry, mac = expiry_mac.split(".")
    longer = f"{body}.{int(expiry) + 3600}.{mac}"  # a later expiry, same signature
    assert keys.unsign(longer, purpose="session") is None
    assert keys.unsign(value, purpose="oauth-state") is None
    assert keys.unsign(value[:-1] + ("A" if value[-1] != "A" else "B"), purpose="session") is None
    assert SessionKeys(bytes(32)).unsign(value, purpose="session") is None  # another key
    for junk in (None, "", "a.b", "a.b.c.d", "!!.1.x"):
        assert keys.unsign(junk, purpose="session") is None


def test_csrf_tokens_belong_to_one_session() -> None:
    keys = SessionKeys(KEY)
    one, two = new_session_id(), new_session_id()
    assert one != two and len(one) >= 43
    token = keys.csrf_token(one)
    assert keys.csrf_ok(one, token)
    assert not keys.csrf_ok(two, token)
    assert not keys.csrf_ok(one, None) and not keys.csrf_ok(one, "")
    assert SessionKeys(bytes(32)).csrf_token(one) != token


def test_a_sealed_token_opens_only_with_its_key_and_row() -> None:
    keys = SessionKeys(KEY)
    row = session_row_id("sid")
    assert row != "sid" and len(row) == 64
    sealed = keys.seal("ghu_secret", bound_to=row)
    assert b"ghu_secret" not in sealed
    assert keys.unseal(sealed, bound_to=row) == "ghu_secret"
    assert keys.unseal(sealed, bound_to=session_row_id("other")) is None
    assert SessionKeys(bytes(32)).unseal(sealed, bound_to=row) is None
    assert keys.unseal(sealed[:-1] + bytes([sealed[-1] ^ 1]), bound_to=row) is None
    assert keys.unseal(b"short", bound_to=row) is None


def test_the_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key


def test_a_key_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="read by other users") as caught:
        load_or_create_key(path)
    assert f"chmod 600 {path}" in str(caught.value)


def test_a_short_or_garbled_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not hex at all\n")
    os.close(fd)
    with pytest.raises(ConfigError, match="hex digits") as caught:
        load_or_create_key(path)
    assert "delete the file" in str(caught.value)


def test_an_unwritable_directory_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MODELCI_SESSION_SECRET_PATH"):
        load_or_create_key(tmp_path / "missing" / "session.key")
