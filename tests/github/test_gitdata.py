"""The Git Data API and pull request writes against the stand-in, over a real git repository."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest

from modelci.github import GitHubClient, GitHubError
from tests.conftest import commit_files, git
from tests.github.conftest import INSTALLATION, REPO, GitHub
from tests.github.standin_state import APP_PERMISSIONS

WRITE = {**APP_PERMISSIONS, "contents": "write"}


@pytest.fixture
def served(github: GitHub, make_repo: Any) -> Path:
    """``octo/model`` served from a real repository with two files; the App may write."""
    github.state.permissions[INSTALLATION] = WRITE
    path: Path = make_repo(
        {"data/raw.csv.dvc": "outs:\n- md5: aaa\n  path: raw.csv\n", "a.py": "1"}
    )
    github.state.serve_git(REPO, path)
    github.state.repos[REPO].branches.clear()  # the served repository's own branches
    return path


def bodies(github: GitHub, method: str, suffix: str) -> list[Any]:
    return [r.json for r in github.state.requests if r.method == method and r.path.endswith(suffix)]


def test_a_commit_on_a_new_branch_through_blobs_tree_commit_and_ref(
    github: GitHub, app_client: GitHubClient, served: Path
) -> None:
    base = git(served, "rev-parse", "HEAD")
    content = b"outs:\n- md5: bbb\n  path: raw.csv\n\xff binary survives\n"
    blob = app_client.create_blob(REPO, content=content)
    base_commit = app_client.get_commit(REPO, sha=base)
    assert base_commit.sha == base and base_commit.parents == ()
    tree = app_client.create_tree(
        REPO, base_tree=base_commit.tree_sha, blobs={"data/raw.csv.dvc": blob}
    )
    made = app_client.create_commit(
        REPO, message="Retrain: data refreshed", tree=tree, parents=[base]
    )
    assert (made.tree_sha, made.parents) == (tree, (base,))
    ref = app_client.create_ref(REPO, ref="refs/heads/modelci/retrain-data", sha=made.sha)
    assert (ref.ref, ref.sha) == ("refs/heads/modelci/retrain-data", made.sha)
    assert app_client.get_ref(REPO, ref="heads/modelci/retrain-data") == ref
    assert app_client.get_ref(REPO, ref="heads/nothing-here") is None
    # What GitHub was sent: base64 content, a tree entry by sha on top of the base tree.
    (sent_blob,) = bodies(github, "POST", "/git/blobs")
    assert sent_blob == {"content": base64.b64encode(content).decode(), "encoding": "base64"}
    (sent_tree,) = bodies(github, "POST", "/git/trees")
    assert sent_tree == {
        "base_tree": base_commit.tree_sha,
        "tree": [{"path": "data/raw.csv.dvc", "mode": "100644", "type": "blob", "sha": blob}],
    }
    # Read back with git: the pointer changed, everything else as on the base.
    branch = "modelci/retrain-data"
    shown = subprocess.run(
        ["git", "-C", str(served), "show", f"{branch}:data/raw.csv.dvc"],
        capture_output=True,
        check=True,
    )
    assert shown.stdout == content
    assert git(served, "diff", "--name-only", base, branch) == "data/raw.csv.dvc"
    assert git(served, "log", "--format=%an %s", "-1", branch) == (
        "modelci-test[bot] Retrain: data refreshed"
    )


def test_a_ref_moves_by_fast_forward_unless_forced(
    github: GitHub, app_client: GitHubClient, served: Path
) -> None:
    first = git(served, "rev-parse", "HEAD")
    app_client.create_ref(REPO, ref="refs/heads/side", sha=first)
    second = commit_files(served, {"a.py": "2"})
    assert app_client.update_ref(REPO, ref="heads/side", sha=second).sha == second
    with pytest.raises(GitHubError) as caught:
        app_client.update_ref(REPO, ref="heads/side", sha=first)
    assert caught.value.status == 422 and "not a fast forward" in str(caught.value)
    assert app_client.update_ref(REPO, ref="heads/side", sha=first, force=True).sha == first
    with pytest.raises(GitHubError, match="Reference already exists"):
        app_client.create_ref(REPO, ref="refs/heads/side", sha=second)
    assert bodies(github, "PATCH", "/git/refs/heads/side")[-1] == {"sha": first, "force": True}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/git/refs", {"ref": "heads/x", "sha": "0" * 40}, "at least two slashes"),
        ("/git/refs", {"ref": "refs/heads/x"}, '"sha" wasn\'t supplied'),
        (
            "/git/trees",
            {"tree": [{"path": "a", "mode": "100644", "type": "blob"}]},
            "either tree.sha or tree.content",
        ),
        (
            "/git/trees",
            {"tree": [{"path": "a", "mode": "644", "type": "blob", "sha": "0" * 40}]},
            "is not one of",
        ),
        (
            "/git/trees",
            {"tree": [{"path": "a", "mode": "100644", "type": "blob", "sha": "0" * 40}]},
            "not a valid blob",
        ),
        ("/git/trees", {"tree": []}, None),
        ("/git/blobs", {"content": "x", "encoding": "base64", "extra": 1}, "not a permitted key"),
        ("/git/commits", {"message": "m", "tree": "0" * 40}, "Tree SHA does not exist"),
        ("/pulls", {"title": "t", "head": "nope", "base": "master"}, "invalid"),
    ],
)
def test_the_stand_in_refuses_what_github_refuses(
    app_client: GitHubClient, served: Path, path: str, body: dict[str, Any], message: str | None
) -> None:
    if message is None:  # an empty tree is allowed: GitHub answers the empty tree
        answer = app_client._request("POST", f"/repos/{REPO}{path}", json=body).json()
        assert answer["sha"] == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        return
    with pytest.raises(GitHubError) as caught:
        app_client._request("POST", f"/repos/{REPO}{path}", json=body)
    assert caught.value.status == 422
    assert message in str(caught.value) + repr(caught.value.errors)


def test_without_contents_write_the_git_database_is_refused(
    github: GitHub, app_client: GitHubClient, served: Path
) -> None:
    github.state.permissions[INSTALLATION] = APP_PERMISSIONS  # contents: read
    with pytest.raises(GitHubError) as caught:
        app_client.create_blob(REPO, content=b"x")
    assert caught.value.status == 403
    assert "Resource not accessible by integration" in str(caught.value)
    # Reading still works with contents: read.
    assert app_client.get_commit(REPO, sha=git(served, "rev-parse", "HEAD")).parents == ()


def test_a_pull_request_is_opened_found_by_its_head_and_edited(
    github: GitHub, app_client: GitHubClient, served: Path
) -> None:
    base = git(served, "rev-parse", "HEAD")
    branch = git(served, "rev-parse", "--abbrev-ref", "HEAD")
    blob = app_client.create_blob(REPO, content=b"new")
    tree = app_client.create_tree(
        REPO, base_tree=app_client.get_commit(REPO, sha=base).tree_sha, blobs={"a.py": blob}
    )
    made = app_client.create_commit(REPO, message="m", tree=tree, parents=[base])
    app_client.create_ref(REPO, ref="refs/heads/modelci/retrain-data", sha=made.sha)
    assert app_client.find_pull_request(REPO, head="octo:modelci/retrain-data") is None
    opened = app_client.create_pull_request(
        REPO,
        title="Retrain: data refreshed",
        head="modelci/retrain-data",
        base=branch,
        body="- data/raw.csv",
    )
    assert (opened.head_sha, opened.base_ref, opened.state) == (made.sha, branch, "open")
    found = app_client.find_pull_request(REPO, head="octo:modelci/retrain-data")
    assert found is not None and found.number == opened.number
    assert app_client.find_pull_request(REPO, head="other:modelci/retrain-data") is None
    with pytest.raises(GitHubError, match="already exists"):
        app_client.create_pull_request(
            REPO, title="again", head="modelci/retrain-data", base=branch, body=""
        )
    edited = app_client.update_pull_request(REPO, number=opened.number, body="- two imports")
    assert edited.number == opened.number
    assert github.state.repos[REPO].pulls[opened.number]["body"] == "- two imports"


def test_a_token_cannot_be_widened_past_the_installation(github: GitHub) -> None:
    token = github.state.issue_token(INSTALLATION)
    assert token.permissions == APP_PERMISSIONS
    assert token.may("contents", "read") and not token.may("contents", "write")
