"""Fixtures: a stand-in GitHub on loopback, an App key pair, clients wired to them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from modelci.github import AppAuth, GitHubClient, TokenAuth
from tests.github.helpers import FakeClock, RecordingSleep
from tests.github.standin import StandIn
from tests.github.standin_state import StandInState

APP_ID = 424242
REPO = "octo/model"
INSTALLATION = 7


@dataclass(frozen=True)
class AppKey:
    private_pem: bytes
    public_pem: bytes


@dataclass
class GitHub:
    """The stand-in for one test: its URL, its state, the App's key."""

    url: str
    state: StandInState
    key: AppKey
    app_id: int = APP_ID


@pytest.fixture(scope="session")
def app_key() -> AppKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return AppKey(
        private_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        public_pem=key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


@pytest.fixture(scope="session")
def standin_server(app_key: AppKey) -> Iterator[StandIn]:
    server = StandIn(StandInState(app_id=APP_ID, public_key_pem=app_key.public_pem, host_url=""))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def github(standin_server: StandIn, app_key: AppKey) -> GitHub:
    """A fresh stand-in state with one repository ``octo/model`` in installation 7."""
    state = StandInState(
        app_id=APP_ID, public_key_pem=app_key.public_pem, host_url=standin_server.url
    )
    state.add_repo(REPO, installation_id=INSTALLATION)
    standin_server.state = state
    return GitHub(standin_server.url, state, app_key)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def app_client(github: GitHub, sleep: RecordingSleep) -> Iterator[GitHubClient]:
    """A client authenticated as the App, bound to the repository's installation."""
    auth = AppAuth(APP_ID, github.key.private_pem)
    with GitHubClient(github.url, auth, sleep=sleep) as client:
        yield client.for_installation(INSTALLATION)


@pytest.fixture
def token_client(github: GitHub, sleep: RecordingSleep) -> Iterator[GitHubClient]:
    """A client authenticated with a classic personal access token."""
    github.state.add_pat("ghp_testtoken", login="octocat")
    with GitHubClient(github.url, TokenAuth("ghp_testtoken"), sleep=sleep) as client:
        yield client


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
