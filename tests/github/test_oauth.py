"""Signing in with the App (github.oauth) against the stand-in's OAuth web flow."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import httpx
import pytest

from modelci.github import AppAuth, GitHubClient, GitHubError
from modelci.github.oauth import UserToken, web_url_for
from tests.github.conftest import APP_ID, REPO, GitHub
from tests.github.standin_oauth import CODE_LIFETIME_S, OAuthState, oauth_of

CALLBACK = "http://127.0.0.1:9/oauth/callback"


@pytest.mark.parametrize(
    ("api_url", "web_url"),
    [
        ("https://api.github.com", "https://github.com"),
        ("https://api.github.com/", "https://github.com"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com"),
        ("https://ghe.example.com/api/v3/", "https://ghe.example.com"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
    ],
)
def test_the_web_url_follows_the_api_url(api_url: str, web_url: str) -> None:
    assert web_url_for(api_url) == web_url


@pytest.fixture
def oauth(github: GitHub) -> OAuthState:
    found = oauth_of(github.state)
    found.callback_urls.append(CALLBACK)
    return found


@pytest.fixture
def client(github: GitHub) -> Iterator[GitHubClient]:
    with GitHubClient(github.url, AppAuth(APP_ID, github.key.private_pem)) as found:
        yield found


def browse(url: str) -> dict[str, str]:
    """What a browser does at GitHub's authorize page: follow it to the callback's query."""
    response = httpx.get(url, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK)
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def sign_in(client: GitHubClient, oauth: OAuthState) -> tuple[str, UserToken]:
    back = browse(
        client.authorize_url(client_id=oauth.client_id, redirect_uri=CALLBACK, state="s1")
    )
    assert back["state"] == "s1"
    token = client.exchange_oauth_code(
        client_id=oauth.client_id,
        client_secret=oauth.client_secret,
        code=back["code"],
        redirect_uri=CALLBACK,
    )
    return back["code"], token


def test_a_person_signs_in_and_sees_their_repositories(
    github: GitHub, oauth: OAuthState, client: GitHubClient
) -> None:
    state = github.state
    state.add_repo("octo/other", installation_id=7)
    state.add_repo("acme/secret", installation_id=8)
    state.add_repo("acme/shared", installation_id=8)
    state.add_repo("else/where", installation_id=9)  # no role there
    state.set_role(REPO, "alice", "read")
    state.set_role("octo/other", "alice", "maintain")
    state.set_role("acme/shared", "alice", "admin")
    state.set_role("else/where", "bob", "write")
    oauth.browser_login = "alice"
    _, token = sign_in(client, oauth)
    assert token.token.startswith("ghu_") and "ghu_" not in repr(token)
    assert token.expires_at is not None and token.refresh_token
    assert client.user_login(user_token=token.token) == "alice"
    assert client.user_installations(user_token=token.token) == [7, 8]
    repos = client.user_repositories(user_token=token.token)
    assert sorted(repos) == ["acme/shared", "octo/model", "octo/other"]
    assert repos["octo/model"]["pull"] and not repos["octo/model"]["push"]
    assert repos["octo/other"]["push"] and not repos["octo/other"]["admin"]
    assert repos["acme/shared"]["admin"]
    # Each call carried the person's token, never an installation's.
    calls = [r for r in state.requests if r.path.startswith("/user")]
    assert calls and all(r.headers["authorization"] == f"Bearer {token.token}" for r in calls)


def test_many_repositories_are_read_page_by_page(
    github: GitHub, oauth: OAuthState, client: GitHubClient
) -> None:
    for i in range(130):
        github.state.add_repo(f"big/r{i:03}", installation_id=7)
        github.state.set_role(f"big/r{i:03}", "octocat", "write")
    _, token = sign_in(client, oauth)
    repos = client.user_installation_repositories(user_token=token.token, installation_id=7)
    assert len(repos) == 130
    pages = [r for r in github.state.requests if r.path == "/user/installations/7/repositories"]
    assert len(pages) == 2


def test_a_wrong_client_secret_says_which_setting(oauth: OAuthState, client: GitHubClient) -> None:
    back = browse(client.authorize_url(client_id=oauth.client_id, redirect_uri=CALLBACK, state="s"))
    with pytest.raises(GitHubError, match="incorrect_client_credentials") as caught:
        client.exchange_oauth_code(
            client_id=oauth.client_id,
            client_secret="wrong",
            code=back["code"],
            redirect_uri=CALLBACK,
        )
    assert "MODELCI_GITHUB_CLIENT_SECRET_PATH" in str(caught.value)


def test_a_code_works_once_and_a_replay_withdraws_its_token(
    oauth: OAuthState, client: GitHubClient
) -> None:
    code, token = sign_in(client, oauth)
    with pytest.raises(GitHubError, match="bad_verification_code") as caught:
        client.exchange_oauth_code(
            client_id=oauth.client_id,
            client_secret=oauth.client_secret,
            code=code,
            redirect_uri=CALLBACK,
        )
    assert "sign in again" in str(caught.value)
    with pytest.raises(GitHubError) as refused:
        client.user_login(user_token=token.token)
    assert refused.value.status == 401


def test_a_code_expires_after_ten_minutes(
    github: GitHub, oauth: OAuthState, client: GitHubClient
) -> None:
    back = browse(client.authorize_url(client_id=oauth.client_id, redirect_uri=CALLBACK, state="s"))
    now = github.state.clock()
    github.state.clock = lambda: now + CODE_LIFETIME_S + 1
    with pytest.raises(GitHubError, match="bad_verification_code"):
        client.exchange_oauth_code(
            client_id=oauth.client_id,
            client_secret=oauth.client_secret,
            code=back["code"],
            redirect_uri=CALLBACK,
        )


def test_the_redirect_uri_must_be_the_registered_one(
    oauth: OAuthState, client: GitHubClient
) -> None:
    elsewhere = "http://127.0.0.1:9/elsewhere"
    response = httpx.get(
        client.authorize_url(client_id=oauth.client_id, redirect_uri=elsewhere, state="s")
    )
    location = response.headers["location"]
    assert location.startswith(CALLBACK) and "error=redirect_uri_mismatch" in location
    assert "code=" not in location and "state=s" in location
    back = browse(client.authorize_url(client_id=oauth.client_id, redirect_uri=CALLBACK, state="s"))
    with pytest.raises(GitHubError, match="redirect_uri_mismatch") as caught:
        client.exchange_oauth_code(
            client_id=oauth.client_id,
            client_secret=oauth.client_secret,
            code=back["code"],
            redirect_uri=elsewhere,
        )
    assert f"add {elsewhere} as a Callback URL" in str(caught.value)


def test_an_unknown_client_gets_no_redirect(oauth: OAuthState, client: GitHubClient) -> None:
    url = client.authorize_url(client_id="Iv1.unknown", redirect_uri=CALLBACK, state="s")
    assert httpx.get(url).status_code == 404


def test_only_user_tokens_list_user_installations(app_client: GitHubClient) -> None:
    with pytest.raises(GitHubError) as caught:
        app_client._request("GET", "/user/installations")
    assert caught.value.status == 403
