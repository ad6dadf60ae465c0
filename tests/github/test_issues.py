"""Issues (a model's drift alert) against the stand-in: opened, edited, commented, closed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from modelci.github import GitHubClient, GitHubError
from tests.github.conftest import INSTALLATION, REPO, GitHub
from tests.github.standin_state import APP_PERMISSIONS


def test_an_alert_is_opened_edited_commented_and_closed(
    github: GitHub, app_client: GitHubClient
) -> None:
    opened = app_client.create_issue(
        REPO, title="x" * 300, body="drift in churn", labels=["modelci"]
    )
    assert opened.state == "open" and opened.html_url.endswith(f"/issues/{opened.number}")
    issue = github.state.repos[REPO].issues[opened.number]
    assert len(issue["title"]) == 256 and issue["labels"] == ["modelci"]
    app_client.update_issue(REPO, number=opened.number, body="still drifting")
    app_client.comment_on_issue(REPO, number=opened.number, body="back to normal")
    closed = app_client.update_issue(REPO, number=opened.number, state="closed")
    assert closed.state == "closed"
    assert (issue["body"], issue["state_reason"]) == ("still drifting", "completed")
    (comment,) = [c for c in github.state.comments if c["_issue"] == opened.number]
    assert comment["body"] == "back to normal"
    sent = [r.json for r in github.state.requests if r.method == "PATCH"]
    assert sent == [{"body": "still drifting"}, {"state": "closed", "state_reason": "completed"}]


def test_without_issues_write_github_refuses(github: GitHub, app_client: GitHubClient) -> None:
    github.state.permissions[INSTALLATION] = {**APP_PERMISSIONS, "issues": "read"}
    with pytest.raises(GitHubError) as caught:
        app_client.create_issue(REPO, title="drift", body="")
    assert caught.value.status == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"body": "no title"}, '"title" wasn\'t supplied.'),
        ({"title": "t", "colour": "red"}, '"colour" is not a permitted key.'),
        ({"title": ["t"]}, "is not a string or integer"),
        ({"title": "t", "labels": [1]}, "labels must be a list of names"),
    ],
)
def test_the_stand_in_refuses_bodies_github_refuses(
    github: GitHub, app_client: GitHubClient, body: dict[str, Any], message: str
) -> None:
    token = github.state.issue_token(INSTALLATION).value
    answer = httpx.post(
        f"{github.url}/repos/{REPO}/issues",
        json=body,
        headers={"authorization": f"token {token}"},
    )
    assert answer.status_code == 422 and message in answer.json()["message"]
