"""The stand-in GitHub's fixtures, for sign-in and permissions."""

from __future__ import annotations

from tests.github import conftest as github_fixtures

app_key = github_fixtures.app_key
standin_server = github_fixtures.standin_server
github = github_fixtures.github
app_client = github_fixtures.app_client
sleep = github_fixtures.sleep
