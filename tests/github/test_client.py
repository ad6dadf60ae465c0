"""The client against the stand-in GitHub over loopback."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from modelci.errors import ConfigError
from modelci.github import (
    AppAuth,
    CheckOutput,
    GitHubClient,
    GitHubError,
    NotModified,
    PullRequestPage,
    RateLimitExceeded,
    TokenAuth,
    comment_marker,
)
from modelci.github.models import COMMENT_LIMIT, render_comment
from tests.github.conftest import APP_ID, INSTALLATION, REPO, GitHub
from tests.github.helpers import FakeClock, RecordingSleep

MARKER = comment_marker("evaluation")
SHA = "c" * 40


def paths(github: GitHub, method: str | None = None) -> list[str]:
    return [r.path for r in github.state.requests if method in (None, r.method)]


# -- authentication ----------------------------------------------------------------------


def test_requests_carry_githubs_headers_and_an_installation_token(
    github: GitHub, app_client: GitHubClient
) -> None:
    github.state.set_role(REPO, "alice", "write")
    app_client.get_collaborator_permission(REPO, username="alice")
    exchange, call = github.state.requests
    assert exchange.path == f"/app/installations/{INSTALLATION}/access_tokens"
    claims = github.state.jwt_claims[0]
    assert claims["iss"] == str(APP_ID)
    assert claims["exp"] - claims["iat"] <= 600
    assert call.headers["authorization"] == f"Bearer {github.state.issued_tokens[0]}"
    assert call.headers["accept"] == "application/vnd.github+json"
    assert call.headers["x-github-api-version"] == "2022-11-28"
    assert call.headers["user-agent"] == "modelci"


def test_bad_token_gives_githubs_401(github: GitHub) -> None:
    with (
        GitHubClient(github.url, TokenAuth("ghp_unknown")) as client,
        pytest.raises(GitHubError) as caught,
    ):
        client.get_branch(REPO, branch="main")
    error = caught.value
    assert error.status == 401
    assert error.github_message == "Bad credentials"
    assert error.documentation_url == "https://docs.github.com/rest"
    assert "ghp_unknown" not in str(error)


def test_app_without_installation_id_is_a_configuration_error(github: GitHub) -> None:
    with GitHubClient(github.url, AppAuth(APP_ID, github.key.private_pem)) as client:
        with pytest.raises(ConfigError, match="installation"):
            client.get_branch(REPO, branch="main")
        assert client.get_branch(REPO, branch="main", installation_id=INSTALLATION).name == "main"


def test_repository_of_another_installation_is_not_found(
    github: GitHub, app_client: GitHubClient
) -> None:
    github.state.add_repo("other/repo", installation_id=99)
    with pytest.raises(GitHubError, match="not installed") as caught:
        app_client.get_branch("other/repo", branch="main")
    assert caught.value.status == 404


def test_expiring_token_is_renewed_before_use(github: GitHub, fake_clock: FakeClock) -> None:
    github.state.clock = fake_clock
    github.state.token_lifetime_s = 600
    auth = AppAuth(APP_ID, github.key.private_pem, clock=fake_clock)
    with GitHubClient(github.url, auth, clock=fake_clock) as client:
        view = client.for_installation(INSTALLATION)
        view.get_branch(REPO, branch="main")
        fake_clock.advance(200)  # 400 s left: reused
        view.get_branch(REPO, branch="main")
        fake_clock.advance(200)  # 200 s left, under the 5 min margin: renewed
        view.get_branch(REPO, branch="main")
        fake_clock.advance(700)  # long expired on GitHub's side too
        view.get_branch(REPO, branch="main")
    assert len(github.state.issued_tokens) == 3
    assert all(r.method == "GET" or "access_tokens" in r.path for r in github.state.requests)
    assert [r.headers["authorization"][7:] for r in github.state.requests if r.method == "GET"] == [
        github.state.issued_tokens[0],
        github.state.issued_tokens[0],
        github.state.issued_tokens[1],
        github.state.issued_tokens[2],
    ]


def test_refused_installation_token_is_renewed_once(
    github: GitHub, app_client: GitHubClient
) -> None:
    app_client.get_branch(REPO, branch="main")
    github.state.tokens.clear()  # revoked on GitHub's side
    assert app_client.get_branch(REPO, branch="main").name == "main"
    assert len(github.state.issued_tokens) == 2
    github.state.installations.clear()  # uninstalled: renewal itself fails
    github.state.tokens.clear()
    with pytest.raises(GitHubError) as caught:
        app_client.get_branch(REPO, branch="main")
    assert caught.value.status == 404


# -- permissions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "permission", "can_write"),
    [
        ("admin", "admin", True),
        ("maintain", "write", True),
        ("write", "write", True),
        ("triage", "read", False),
        ("read", "read", False),
        ("none", "none", False),
    ],
)
def test_write_access_by_role(
    github: GitHub, app_client: GitHubClient, role: str, permission: str, can_write: bool
) -> None:
    github.state.set_role(REPO, "bob", role)
    found = app_client.get_collaborator_permission(REPO, username="bob")
    assert (found.permission, found.role_name) == (permission, role)
    assert app_client.has_write_access(REPO, username="bob") is can_write


def test_unknown_user_has_no_write_access(app_client: GitHubClient) -> None:
    assert app_client.has_write_access(REPO, username="stranger") is False


# -- the one comment -----------------------------------------------------------------------


def our_comments(github: GitHub) -> list[dict[str, object]]:
    return [c for c in github.state.comments if MARKER in str(c["body"])]


def test_comment_is_created_once_then_updated(github: GitHub, app_client: GitHubClient) -> None:
    github.state.add_pull(REPO, 3)
    first = app_client.upsert_comment(REPO, issue_number=3, marker=MARKER, body="running")
    second = app_client.upsert_comment(REPO, issue_number=3, marker=MARKER, body="done")
    assert first.created
    assert not second.created
    assert first.id == second.id
    (comment,) = our_comments(github)
    assert comment["body"] == f"{MARKER}\ndone"
    assert comment["user"]["login"] == "modelci-test[bot]"  # type: ignore[index]
    assert first.html_url.endswith(f"#issuecomment-{first.id}")


def test_comment_found_beyond_the_first_page(github: GitHub, app_client: GitHubClient) -> None:
    github.state.add_pull(REPO, 4)
    for i in range(150):
        github.state.add_comment(REPO, 4, f"chatter {i}", login="someone")
    made = app_client.upsert_comment(REPO, issue_number=4, marker=MARKER, body="v1")
    for i in range(100):
        github.state.add_comment(REPO, 4, f"more chatter {i}", login="someone")
    again = app_client.upsert_comment(REPO, issue_number=4, marker=MARKER, body="v2")
    assert made.created
    assert not again.created
    assert made.id == again.id
    assert len(our_comments(github)) == 1
    listing = [r for r in github.state.requests if r.path.endswith("/issues/4/comments")]
    # Each listing stops at the page holding the comment (the 151st).
    pages = [r.query.get("page") for r in listing if r.method == "GET"]
    assert pages == [None, "2", None, "2"]


def test_marker_planted_by_someone_else_is_not_taken_over(
    github: GitHub, app_client: GitHubClient
) -> None:
    github.state.add_pull(REPO, 5)
    planted = github.state.add_comment(REPO, 5, f"{MARKER}\nfake results", login="mallory")
    made = app_client.upsert_comment(REPO, issue_number=5, marker=MARKER, body="real results")
    assert made.created
    assert made.id != planted["id"]
    assert planted["body"] == f"{MARKER}\nfake results"


def test_known_comment_id_skips_the_listing_and_survives_deletion(
    github: GitHub, app_client: GitHubClient
) -> None:
    github.state.add_pull(REPO, 6)
    made = app_client.upsert_comment(REPO, issue_number=6, marker=MARKER, body="a")
    github.state.requests.clear()
    app_client.upsert_comment(REPO, issue_number=6, marker=MARKER, body="b", comment_id=made.id)
    assert paths(github) == [f"/repos/{REPO}/issues/comments/{made.id}"]
    github.state.comments.clear()  # someone deleted it
    again = app_client.upsert_comment(
        REPO, issue_number=6, marker=MARKER, body="c", comment_id=made.id
    )
    assert again.created
    assert len(our_comments(github)) == 1


def test_concurrent_upserts_still_make_one_comment(
    github: GitHub, app_client: GitHubClient
) -> None:
    github.state.add_pull(REPO, 7)
    with ThreadPoolExecutor(6) as pool:
        upserts = [
            pool.submit(
                app_client.upsert_comment, repo=REPO, issue_number=7, marker=MARKER, body=f"v{i}"
            )
            for i in range(6)
        ]
        # .result() re-raises what a thread raised: every upsert must have succeeded.
        results = [future.result(timeout=60) for future in upserts]
    assert len(our_comments(github)) == 1
    assert sum(result.created for result in results) == 1
    assert len({result.id for result in results}) == 1


def test_long_comment_is_truncated_to_githubs_limit_keeping_the_marker(
    github: GitHub, app_client: GitHubClient
) -> None:
    github.state.add_pull(REPO, 8)
    app_client.upsert_comment(REPO, issue_number=8, marker=MARKER, body="é" * 100_000)
    (comment,) = our_comments(github)
    body = str(comment["body"])
    assert len(body) == COMMENT_LIMIT
    assert body.startswith(MARKER)
    assert "comment truncated" in body


def test_stand_in_rejects_an_over_long_comment_like_github(
    github: GitHub, app_client: GitHubClient
) -> None:
    github.state.add_pull(REPO, 9)
    with pytest.raises(GitHubError) as caught:
        app_client._request(
            "POST", f"/repos/{REPO}/issues/9/comments", json={"body": "x" * (COMMENT_LIMIT + 1)}
        )
    assert caught.value.status == 422
    assert caught.value.errors[0]["message"] == "Body is too long (maximum is 65536 characters)"


def test_markers_are_validated() -> None:
    with pytest.raises(ValueError, match="may only hold"):
        comment_marker("bad --> key")
    with pytest.raises(ValueError, match="not a modelci comment marker"):
        render_comment("<!-- other -->", "x")


def test_each_commit_comment_is_a_new_one_on_that_commit(
    github: GitHub, app_client: GitHubClient
) -> None:
    first = app_client.create_commit_comment(REPO, sha=SHA, body="retrained: kept")
    second = app_client.create_commit_comment(REPO, sha=SHA, body="retrained: promoted")
    assert first.created and second.created and first.id != second.id
    assert f"/commit/{SHA}#commitcomment-{first.id}" in first.html_url
    bodies = [(c["commit_id"], c["body"]) for c in github.state.commit_comments]
    assert bodies == [(SHA, "retrained: kept"), (SHA, "retrained: promoted")]
    assert paths(github, "POST")[-1] == f"/repos/{REPO}/commits/{SHA}/comments"


def test_a_long_commit_comment_is_cut_to_githubs_limit(
    github: GitHub, app_client: GitHubClient
) -> None:
    app_client.create_commit_comment(REPO, sha=SHA, body="x" * (COMMENT_LIMIT + 10))
    assert len(github.state.commit_comments[0]["body"]) == COMMENT_LIMIT


@pytest.mark.parametrize(
    ("sha", "payload", "message"),
    [
        (SHA, {}, '"body" wasn\'t supplied'),
        (SHA, {"body": 5}, "is not a string"),
        (SHA, {"body": "x", "colour": "red"}, '"colour" is not a permitted key'),
        (SHA, {"body": "x", "position": "3"}, "is not an integer"),
        ("main", {"body": "x"}, "Validation Failed"),
    ],
)
def test_stand_in_validates_commit_comments_like_github(
    app_client: GitHubClient, sha: str, payload: dict[str, object], message: str
) -> None:
    with pytest.raises(GitHubError, match=message) as caught:
        app_client._request("POST", f"/repos/{REPO}/commits/{sha}/comments", json=payload)
    assert caught.value.status == 422


# -- checks and statuses ---------------------------------------------------------------------


def test_check_run_is_created_then_completed(github: GitHub, app_client: GitHubClient) -> None:
    started = app_client.publish_check(
        REPO, head_sha=SHA, name="modelci", status="in_progress",
        output=CheckOutput("Evaluating", "Training head and base"),
        details_url="https://modelci.example/runs/1",
    )  # fmt: skip
    assert started.kind == "check_run"
    done = app_client.publish_check(
        REPO, head_sha=SHA, name="modelci", status="completed", conclusion="failure",
        output=CheckOutput("accuracy regressed", "s" * 70_000, "t" * 70_000),
        check_run_id=started.id,
    )  # fmt: skip
    assert done.id == started.id
    run = github.state.check_runs[started.id]
    assert (run["status"], run["conclusion"], run["head_sha"]) == ("completed", "failure", SHA)
    assert run["details_url"] == "https://modelci.example/runs/1"
    assert len(run["output"]["summary"]) == len(run["output"]["text"]) == 65_535
    assert "summary truncated" in run["output"]["summary"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"name": "m"}, '"head_sha" wasn\'t supplied'),
        ({"name": "m", "head_sha": SHA, "status": "done"}, "is not one of"),
        ({"name": "m", "head_sha": SHA, "conclusion": "great"}, "is not one of"),
        ({"name": "m", "head_sha": SHA, "status": "completed"}, '"conclusion" wasn\'t supplied'),
        ({"name": "m", "head_sha": SHA, "output": {"title": "t", "summary": "s" * 65_536}},
         "Only 65535 characters are allowed; 65536 were supplied"),
    ],
)  # fmt: skip
def test_stand_in_validates_check_runs_like_github(
    app_client: GitHubClient, payload: dict[str, object], message: str
) -> None:
    with pytest.raises(GitHubError, match=message) as caught:
        app_client._request("POST", f"/repos/{REPO}/check-runs", json=payload)
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("ghp_classic", "You must authenticate via a GitHub App."),
        ("github_pat_finegrained", "Resource not accessible by personal access token"),
    ],
)
def test_plain_token_falls_back_to_a_commit_status(
    github: GitHub, token: str, message: str
) -> None:
    github.state.add_pat(token)
    with GitHubClient(github.url, TokenAuth(token)) as client:
        with pytest.raises(GitHubError, match=message):
            client.create_check_run(REPO, head_sha=SHA, name="modelci")
        first = client.publish_check(
            REPO, head_sha=SHA, name="modelci", status="in_progress",
            output=CheckOutput("Evaluating", "..."), details_url="https://modelci.example/r/1",
        )  # fmt: skip
        github.state.requests.clear()
        second = client.publish_check(
            REPO, head_sha=SHA, name="modelci", status="completed", conclusion="failure",
            output=CheckOutput("accuracy fell from 0.91 to 0.84 " + "x" * 200, "..."),
        )  # fmt: skip
    assert first.kind == second.kind == "commit_status"
    assert paths(github) == [f"/repos/{REPO}/statuses/{SHA}"]  # no second check-run attempt
    pending, failed = github.state.statuses
    assert (pending["state"], pending["context"]) == ("pending", "modelci")
    assert pending["target_url"] == "https://modelci.example/r/1"
    assert failed["state"] == "failure"
    assert len(failed["description"]) == 140


def test_stand_in_rejects_an_over_long_status_description(token_client: GitHubClient) -> None:
    with pytest.raises(GitHubError, match="description is too long") as caught:
        token_client._request(
            "POST",
            f"/repos/{REPO}/statuses/{SHA}",
            json={"state": "success", "description": "d" * 141},
        )
    assert caught.value.status == 422
    assert caught.value.errors[0]["field"] == "description"


def test_app_check_run_errors_are_not_hidden_by_a_fallback(
    github: GitHub, app_client: GitHubClient
) -> None:
    github.state.fail_next(403, path_contains="check-runs")  # no rate-limit headers: plain 403
    github.state.faults[0].body = {"message": "Resource not accessible by integration"}
    with pytest.raises(GitHubError, match="Resource not accessible by integration"):
        app_client.publish_check(
            REPO, head_sha=SHA, name="modelci", status="queued", output=CheckOutput("t", "s")
        )
    assert github.state.statuses == []


# -- pull requests, branches, polling ---------------------------------------------------------


def test_pull_request_and_branch(github: GitHub, app_client: GitHubClient) -> None:
    github.state.add_pull(REPO, 12, head_sha="d" * 40, labels=("evaluate",), fork="fan/model")
    pr = app_client.get_pull_request(REPO, number=12)
    assert (pr.number, pr.head_sha, pr.labels, pr.is_fork) == (12, "d" * 40, ("evaluate",), True)
    assert pr.head_clone_url == "https://github.com/fan/model.git"
    branch = app_client.get_branch(REPO, branch="main")
    assert (branch.name, branch.sha) == ("main", "b" * 40)
    with pytest.raises(GitHubError) as caught:
        app_client.get_pull_request(REPO, number=404)
    assert caught.value.status == 404


def test_polling_with_etag(github: GitHub, app_client: GitHubClient) -> None:
    for number in range(1, 131):
        github.state.add_pull(REPO, number, updated_at=1_700_000_000 + number)
    page = app_client.list_open_pull_requests(REPO)
    assert isinstance(page, PullRequestPage)
    assert page.etag
    assert len(page.items) == 130
    assert page.items[0].number == 130
    unchanged = app_client.list_open_pull_requests(REPO, etag=page.etag)
    assert unchanged == NotModified(page.etag)
    assert github.state.requests[-1].headers["if-none-match"] == page.etag
    github.state.add_pull(REPO, 131, updated_at=1_800_000_000)
    changed = app_client.list_open_pull_requests(REPO, etag=page.etag)
    assert isinstance(changed, PullRequestPage)
    assert changed.items[0].number == 131


# -- rate limits and concurrency ------------------------------------------------------------------


def test_retry_after_is_obeyed(
    github: GitHub, app_client: GitHubClient, sleep: RecordingSleep
) -> None:
    app_client.get_branch(REPO, branch="main")
    github.state.fail_next(403, retry_after=3)
    assert app_client.get_branch(REPO, branch="main").name == "main"
    assert sleep.waits == [3]


def test_exhausted_quota_waits_for_the_reset(github: GitHub, fake_clock: FakeClock) -> None:
    github.state.clock = fake_clock
    github.state.add_pat("ghp_quota")
    sleep = RecordingSleep(fake_clock)
    with GitHubClient(github.url, TokenAuth("ghp_quota"), sleep=sleep, clock=fake_clock) as client:
        github.state.fail_next(429, reset_in=120)
        assert client.get_branch(REPO, branch="main").name == "main"
    assert sleep.waits == [121]


def test_secondary_limits_back_off_then_give_up(
    github: GitHub, app_client: GitHubClient, sleep: RecordingSleep
) -> None:
    github.state.fail_next(403, secondary=True, times=10, path_contains="/branches/")
    with pytest.raises(RateLimitExceeded) as caught:
        app_client.get_branch(REPO, branch="main")
    assert sleep.waits == [60, 120, 240]  # max_retries=3, then give up
    assert caught.value.retry_at is not None
    assert caught.value.http_status == 503
    assert "secondary rate limit" in str(caught.value)


def test_too_long_a_wait_is_not_slept(github: GitHub, sleep: RecordingSleep) -> None:
    github.state.add_pat("ghp_wait")
    with GitHubClient(github.url, TokenAuth("ghp_wait"), sleep=sleep, max_wait_s=60) as client:
        github.state.fail_next(403, reset_in=3000)
        with pytest.raises(RateLimitExceeded, match="next try at") as caught:
            client.get_branch(REPO, branch="main")
    assert sleep.waits == []
    assert caught.value.retry_at is not None


def test_at_most_max_concurrency_requests_in_flight(github: GitHub) -> None:
    github.state.add_pat("ghp_busy")
    github.state.delay_s = 0.05
    # Requests wait (up to 10 s) until two were in flight at once, so the client's
    # limit is reached whatever the machine's load; a third would be seen too.
    github.state.gather_in_flight = 2
    with (
        GitHubClient(github.url, TokenAuth("ghp_busy"), max_concurrency=2) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        calls = [pool.submit(client.get_branch, REPO, branch="main") for _ in range(8)]
        branches = [future.result(timeout=60) for future in calls]  # re-raises a thread's error
    assert len(branches) == 8
    assert len(github.state.requests) == 8
    assert github.state.max_in_flight == 2


def test_next_links_to_another_host_are_refused(github: GitHub, app_client: GitHubClient) -> None:
    with pytest.raises(GitHubError, match="refusing to follow"):
        app_client._request("GET", "https://evil.example/repos/x/y")


def test_errors_serialize_without_secrets(github: GitHub) -> None:
    with (
        GitHubClient(github.url, TokenAuth("ghp_leak_check")) as client,
        pytest.raises(GitHubError) as caught,
    ):
        client.get_branch(REPO, branch="main")
    text = json.dumps([str(caught.value), repr(client), caught.value.documentation_url])
    assert "ghp_leak_check" not in text


def test_actions_style_token_creates_check_runs_and_comments(github: GitHub) -> None:
    """A plain installation token (like Actions' GITHUB_TOKEN) may create check runs."""
    github.state.add_pull(REPO, 20)
    token = github.state.issue_token(INSTALLATION).value
    with GitHubClient(github.url, TokenAuth(token)) as client:
        published = client.publish_check(
            REPO, head_sha=SHA, name="modelci", status="queued", output=CheckOutput("t", "s")
        )
        assert published.kind == "check_run"
        # It cannot read /user, so its comment is found by the marker alone.
        first = client.upsert_comment(REPO, issue_number=20, marker=MARKER, body="a")
        second = client.upsert_comment(REPO, issue_number=20, marker=MARKER, body="b")
    assert first.id == second.id
    assert len(our_comments(github)) == 1
    assert github.state.statuses == []
