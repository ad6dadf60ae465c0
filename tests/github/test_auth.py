"""App JWTs and the installation token cache, with a fake clock and a fake exchanger."""

from __future__ import annotations

import threading
import time

import jwt
import pytest

from modelci.errors import ConfigError
from modelci.github import AppAuth, InstallationToken, TokenAuth, make_auth
from tests.github.conftest import AppKey
from tests.github.helpers import FakeClock


class FakeExchanger:
    """Issues numbered tokens valid for ``lifetime`` seconds on ``clock``."""

    def __init__(self, clock: FakeClock, lifetime: float = 3600.0, delay: float = 0.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.delay = delay
        self.calls: list[tuple[int, str]] = []

    def exchange_installation_token(self, *, installation_id: int, jwt: str) -> InstallationToken:
        self.calls.append((installation_id, jwt))
        if self.delay:
            time.sleep(self.delay)
        return InstallationToken(
            f"ghs_{installation_id}_{len(self.calls)}", self.clock() + self.lifetime
        )


def test_jwt_claims_verify_with_the_public_key(app_key: AppKey, fake_clock: FakeClock) -> None:
    auth = AppAuth(12345, app_key.private_pem, clock=fake_clock)
    token = auth.jwt()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token,
        app_key.public_pem,
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    now = int(fake_clock())
    assert claims == {"iat": now - 60, "exp": now + 540, "iss": "12345"}
    assert claims["exp"] - claims["iat"] <= 600


def test_jwt_signed_with_another_key_does_not_verify(app_key: AppKey) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(AppAuth(1, pem).jwt(), app_key.public_pem, algorithms=["RS256"])


def test_bad_configuration_is_explained(app_key: AppKey) -> None:
    with pytest.raises(ConfigError, match="not a number"):
        AppAuth("my-app", app_key.private_pem)
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        AppAuth(1, "-----BEGIN RSA PRIVATE KEY-----\nbroken\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="token is empty"):
        TokenAuth("  ")


def test_secrets_never_appear_in_reprs(app_key: AppKey, fake_clock: FakeClock) -> None:
    auth = AppAuth(99, app_key.private_pem.decode(), clock=fake_clock)
    auth.installation_token(5, FakeExchanger(fake_clock))
    text = repr(auth) + repr(TokenAuth("ghp_supersecret")) + repr(InstallationToken("ghs_x", 1.0))
    assert "PRIVATE" not in text
    assert "ghp_supersecret" not in text
    assert "ghs_x" not in text
    assert "app_id=99" in repr(auth)
    assert "cached_installations=1" in repr(auth)


def test_tokens_are_cached_per_installation_and_renewed_near_expiry(
    app_key: AppKey, fake_clock: FakeClock
) -> None:
    auth = AppAuth(1, app_key.private_pem, clock=fake_clock)
    exchanger = FakeExchanger(fake_clock)
    first = auth.installation_token(10, exchanger)
    assert auth.installation_token(10, exchanger) == first
    other = auth.installation_token(20, exchanger)
    assert other != first
    assert len(exchanger.calls) == 2
    fake_clock.advance(3600 - 301)  # 301 s left: still good
    assert auth.installation_token(10, exchanger) == first
    fake_clock.advance(2)  # 299 s left: renewed
    renewed = auth.installation_token(10, exchanger)
    assert renewed != first
    assert len(exchanger.calls) == 3
    # The JWT used for the renewal was minted at the (fake) current time.
    claims = jwt.decode(exchanger.calls[-1][1], options={"verify_signature": False})
    assert claims["iat"] == int(fake_clock()) - 60


def test_concurrent_callers_share_one_exchange(app_key: AppKey, fake_clock: FakeClock) -> None:
    auth = AppAuth(1, app_key.private_pem, clock=fake_clock)
    exchanger = FakeExchanger(fake_clock, delay=0.05)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(auth.installation_token(3, exchanger)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(exchanger.calls) == 1
    assert len(set(results)) == 1
    assert len(results) == 8


def test_invalidate_drops_only_the_refused_token(app_key: AppKey, fake_clock: FakeClock) -> None:
    auth = AppAuth(1, app_key.private_pem, clock=fake_clock)
    exchanger = FakeExchanger(fake_clock)
    first = auth.installation_token(4, exchanger)
    auth.invalidate(4, "ghs_some_older_token")
    assert auth.installation_token(4, exchanger) == first
    auth.invalidate(4, first)
    assert auth.installation_token(4, exchanger) != first


def test_app_needs_an_installation_id(app_key: AppKey, fake_clock: FakeClock) -> None:
    auth = AppAuth(1, app_key.private_pem, clock=fake_clock)
    with pytest.raises(ConfigError, match="no installation id"):
        auth.token(None, FakeExchanger(fake_clock))
    assert TokenAuth("ghp_x").token(None, FakeExchanger(fake_clock)) == "ghp_x"


def test_make_auth_picks_the_credentials(app_key: AppKey) -> None:
    assert isinstance(make_auth(app_id=5, private_key_pem=app_key.private_pem), AppAuth)
    assert isinstance(make_auth(token="ghp_x"), TokenAuth)
    # An App wins over a token when both are set.
    assert make_auth(app_id="5", private_key_pem=app_key.private_pem, token="ghp_x").is_app
    with pytest.raises(ConfigError, match="both its id and its private key"):
        make_auth(app_id=5, token="ghp_x")
    with pytest.raises(ConfigError, match="no GitHub credentials"):
        make_auth()
