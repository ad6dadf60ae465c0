"""A person's repositories from GitHub (the stand-in), cached per login."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelci.github import AppAuth, GitHubClient, GitHubError
from modelci.web.identity import Viewer
from modelci.web.permissions import PermissionCache
from tests.github.conftest import APP_ID, REPO, GitHub
from tests.github.standin_oauth import oauth_of

CALLBACK = "http://127.0.0.1:9/oauth/callback"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(github: GitHub) -> Iterator[GitHubClient]:
    with GitHubClient(github.url, AppAuth(APP_ID, github.key.private_pem)) as found:
        yield found


def user_token(github: GitHub, client: GitHubClient, login: str) -> str:
    """A real user token from the stand-in's web flow, for ``login``."""
    oauth = oauth_of(github.state)
    if CALLBACK not in oauth.callback_urls:
        oauth.callback_urls.append(CALLBACK)
    oauth.browser_login = login
    url = client.authorize_url(client_id=oauth.client_id, redirect_uri=CALLBACK, state="s")
    location = httpx.get(url).headers["location"]
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
    return client.exchange_oauth_code(
        client_id=oauth.client_id,
        client_secret=oauth.client_secret,
        code=code,
        redirect_uri=CALLBACK,
    ).token


def calls(github: GitHub) -> int:
    return sum(r.path == "/user/installations" for r in github.state.requests)


def test_roles_become_access_and_are_cached_a_minute(github: GitHub, client: GitHubClient) -> None:
    github.state.add_repo("octo/other", installation_id=7)
    github.state.set_role(REPO, "alice", "triage")
    github.state.set_role("octo/other", "alice", "maintain")
    token = user_token(github, client, "alice")
    clock = Clock()
    cache = PermissionCache(client, ttl_s=60, clock=clock)
    repos = cache.repos_for("alice", user_token=token)
    assert dict(repos) == {REPO: "read", "octo/other": "write"}
    viewer = Viewer("alice", "github", repos)
    assert viewer.can_read(REPO) and not viewer.can_write(REPO) and viewer.can_write("octo/other")
    # Taken away on GitHub: still cached for the minute, gone after it.
    github.state.set_role("octo/other", "alice", "none")
    clock.now += 59
    assert "octo/other" in cache.repos_for("alice", user_token=token)
    assert calls(github) == 1
    clock.now += 1
    assert dict(cache.repos_for("alice", user_token=token)) == {REPO: "read"}
    assert calls(github) == 2
    cache.forget("alice")
    cache.repos_for("alice", user_token=token)
    assert calls(github) == 3


def test_one_lookup_per_login_at_a_time(github: GitHub, client: GitHubClient) -> None:
    github.state.set_role(REPO, "alice", "write")
    token = user_token(github, client, "alice")
    github.state.delay_s = 0.2
    cache = PermissionCache(client)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.repos_for("alice", user_token=token)))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 5 and all(dict(r) == {REPO: "write"} for r in results)
    assert calls(github) == 1


def test_github_down_uses_a_recent_answer_but_a_refused_token_ends_it(
    github: GitHub, client: GitHubClient
) -> None:
    github.state.set_role(REPO, "alice", "read")
    token = user_token(github, client, "alice")
    clock = Clock()
    cache = PermissionCache(client, ttl_s=60, stale_s=300, clock=clock)
    cache.repos_for("alice", user_token=token)
    clock.now += 120
    github.state.fail_next(502, path_contains="/user/installations")
    assert dict(cache.repos_for("alice", user_token=token)) == {REPO: "read"}
    clock.now += 300  # now older than stale_s
    github.state.fail_next(502, path_contains="/user/installations")
    with pytest.raises(GitHubError):
        cache.repos_for("alice", user_token=token)
    del github.state.tokens[token]  # revoked on GitHub
    with pytest.raises(GitHubError) as caught:
        cache.repos_for("alice", user_token=token)
    assert caught.value.status == 401
