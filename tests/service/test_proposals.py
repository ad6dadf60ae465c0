"""Proposal mode on the server (``retrain.mode: pull-request``), with the stand-in GitHub
serving a real git repository and the test PostgreSQL.

A retrain job of a repository in proposal mode runs the real Retrainer and the
real GitHubProposer: the refreshed import pointers are written through the Git
Data API (blobs, tree, commit, ref) and proposed in a pull request, read back
here with git; a second proposal updates the same pull request; a token
without ``contents: write`` ends in a clear error on the commit.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from modelci.deliver.delivery import Deliverer
from modelci.github import AppAuth, GitHubClient, GitHubError
from modelci.retrain.proposal import PROPOSAL_TITLE
from modelci.retrain.result import RetrainResult
from modelci.retrain.retrainer import Retrainer
from modelci.runner.checkout import Mirror
from modelci.service.proposals import PROPOSAL_BRANCH, GitHubProposer
from modelci.service.pullrequests import EvaluationJob, RetrainJob
from modelci.service.retrains import RETRAIN_CHECK, RetrainingService
from modelci.settings import Settings
from modelci.store.db import Database
from tests.conftest import git
from tests.deliver.test_delivery import _deliverer
from tests.github.conftest import (
    APP_ID,
    INSTALLATION,
    REPO,
    GitHub,
    app_client,
    app_key,
    github,
    sleep,
    standin_server,
)
from tests.github.standin_state import APP_PERMISSIONS
from tests.service.test_retrains import database, database_url

# Fixtures used here.
__all__ = ["app_client", "app_key", "database", "database_url", "github", "sleep", "standin_server"]

MAY_PROPOSE = {**APP_PERMISSIONS, "contents": "write"}
CONFIG = (
    "train: python train.py\nmetrics: metrics.json\n"
    "model:\n  artifact: model.pkl\n"
    "retrain:\n  mode: pull-request\n"
)
RAW = (
    "md5: 0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f\nfrozen: true\ndeps:\n"
    "- md5: 11111111111111111111111111111111\n  size: 10\n  path: https://data.example.com/raw.csv\n"
    "outs:\n- md5: 22222222222222222222222222222222\n  size: 10\n  hash: md5\n  path: raw.csv\n"
)
LABELS = (
    "md5: 5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\nfrozen: true\ndeps:\n- path: labels.csv\n"
    "  repo:\n    url: https://github.com/octo/labels\n    rev_lock: " + "a" * 40 + "\n"
    "outs:\n- md5: 33333333333333333333333333333333\n  size: 5\n  hash: md5\n  path: labels.csv\n"
)


def refreshed(text: str, old: str, new: str) -> bytes:
    """A pointer as ``dvc update`` leaves it when the source's data changed."""
    assert old in text
    return text.replace(old, new).encode()


class RefreshedRetrainer(Retrainer):
    """The real Retrainer, its import refresh (``dvc update`` of the sources, tested with
    real DVC in tests/data/test_imports.py and tests/retrain/test_import_retrain.py)
    replaced by the pointers a test gives: the sources here are not reachable."""

    def __init__(self, deliverer: Deliverer) -> None:
        super().__init__(deliverer=deliverer)
        self.refresh: dict[str, bytes] = {}

    def _refresh(
        self, result: RetrainResult, mirror: Mirror, cancel: threading.Event | None, say: Any
    ) -> None:
        result.refreshed = dict(self.refresh)


@pytest.fixture
def served(github: GitHub, make_repo: Any) -> tuple[Path, str]:
    """``octo/model`` in proposal mode, served over smart HTTP: (its path, its branch)."""
    path: Path = make_repo(
        {
            "modelci.yaml": CONFIG,
            "train.py": "print('train')\n",
            "data/raw.csv.dvc": RAW,
            "data/labels.csv.dvc": LABELS,
            "data/.gitignore": "/raw.csv\n/labels.csv\n",
        }
    )
    github.state.serve_git(REPO, path)
    github.state.repos[REPO].branches.clear()  # the served repository's own branches
    return path, git(path, "rev-parse", "--abbrev-ref", "HEAD")


class Queued:
    """The job queue, recording what the retrain queues."""

    def __init__(self) -> None:
        self.evaluations: list[EvaluationJob] = []
        self.retrains: list[RetrainJob] = []

    def enqueue_evaluation(self, job: EvaluationJob) -> int:
        self.evaluations.append(job)
        return len(self.evaluations)

    def enqueue_retrain(self, job: RetrainJob) -> int | None:
        self.retrains.append(job)
        return None


@pytest.fixture
def retraining(
    github: GitHub, database: Database, database_url: str, tmp_path: Path
) -> Iterator[tuple[RetrainingService, RefreshedRetrainer]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        public_url=None,
        allow_loopback_http=True,
    )
    retrainer = RefreshedRetrainer(_deliverer(settings, database))
    with GitHubClient(github.url, AppAuth(APP_ID, github.key.private_pem)) as client:
        service = RetrainingService(
            database=database,
            github=client,
            retrainer=retrainer,
            queue=Queued(),
            settings=settings,
        )
        yield service, retrainer


def run(
    service: RetrainingService, github: GitHub, branch: str, files: Mapping[str, bytes]
) -> None:
    retrainer = service.retrainer
    assert isinstance(retrainer, RefreshedRetrainer)
    retrainer.refresh = dict(files)
    job = RetrainJob(
        repo=REPO,
        ref=branch,
        clone_url=github.state.repos[REPO].clone_url or "",
        installation_id=INSTALLATION,
        trigger="data",
        actor="modelci import check",
    )
    service.retrain(job, threading.Event())


def shown(path: Path, spec: str) -> bytes:
    done = subprocess.run(["git", "-C", str(path), "show", spec], capture_output=True, check=True)
    return done.stdout


def requests(github: GitHub) -> list[tuple[str, str]]:
    prefix = f"/repos/{REPO}"
    return [
        (r.method, r.path.removeprefix(prefix))
        for r in github.state.requests
        if r.path.startswith(prefix + "/git/") or r.path.startswith(prefix + "/pulls")
    ]


def test_proposal_mode_creates_blobs_tree_commit_ref_and_pull_request_with_valid_shapes(
    github: GitHub, served: tuple[Path, str], retraining: Any
) -> None:
    github.state.permissions[INSTALLATION] = MAY_PROPOSE
    path, branch = served
    service, _ = retraining
    base = git(path, "rev-parse", "HEAD")
    new_raw = refreshed(RAW, "22222222222222222222222222222222", "44444444444444444444444444444444")
    run(service, github, branch, {"data/raw.csv.dvc": new_raw})

    # Through the API, in order; the stand-in validated every body as GitHub does.
    assert requests(github) == [
        ("GET", f"/git/ref/heads/{branch}"),
        ("GET", f"/git/commits/{base}"),
        ("POST", "/git/blobs"),
        ("POST", "/git/trees"),
        ("GET", f"/git/ref/heads/{PROPOSAL_BRANCH}"),
        ("POST", "/git/commits"),
        ("POST", "/git/refs"),
        ("GET", "/pulls"),
        ("POST", "/pulls"),
    ]
    # The branch read back with git: the refreshed pointer, everything else as on the base.
    assert shown(path, f"{PROPOSAL_BRANCH}:data/raw.csv.dvc") == new_raw
    assert git(path, "diff", "--name-only", base, PROPOSAL_BRANCH) == "data/raw.csv.dvc"
    assert git(path, "rev-parse", f"{PROPOSAL_BRANCH}^") == base
    assert git(path, "rev-parse", f"{PROPOSAL_BRANCH}^{{tree}}") != git(
        path, "rev-parse", "HEAD^{tree}"
    )
    (pull,) = github.state.repos[REPO].pulls.values()
    assert (pull["title"], pull["head_ref"], pull["base_ref"]) == (
        PROPOSAL_TITLE,
        PROPOSAL_BRANCH,
        branch,
    )
    assert "https://data.example.com/raw.csv" in pull["body"]
    assert "`222222222222` | `444444444444`" in pull["body"]  # old → new hash
    # The report on the retrained commit links the pull request; the check is neutral.
    (comment,) = github.state.commit_comments
    assert comment["commit_id"] == base
    assert f"pull request \\#{pull['number']} opened" in comment["body"]
    assert "the pull request updates `data/raw.csv.dvc`" in comment["body"]
    assert f"](https://github.com/{REPO}/pull/{pull['number']})" in comment["body"]
    (check,) = [r for r in github.state.check_runs.values() if r["name"] == RETRAIN_CHECK]
    assert (check["conclusion"], check["details_url"]) == (
        "neutral",
        f"https://github.com/{REPO}/pull/{pull['number']}",
    )
    # Its evaluation is queued without a label: modelci wrote the only change.
    (evaluation,) = service.queue.evaluations
    assert (evaluation.number, evaluation.head_sha, evaluation.base_ref) == (
        pull["number"],
        git(path, "rev-parse", PROPOSAL_BRANCH),
        branch,
    )


def test_a_second_proposal_updates_the_same_pull_request(
    github: GitHub, served: tuple[Path, str], retraining: Any
) -> None:
    github.state.permissions[INSTALLATION] = MAY_PROPOSE
    path, branch = served
    service, _ = retraining
    first = {"data/raw.csv.dvc": refreshed(RAW, "2222", "4444")}
    run(service, github, branch, first)
    (number,) = github.state.repos[REPO].pulls
    head = git(path, "rev-parse", PROPOSAL_BRANCH)
    # Both imports changed since: the branch is force-updated, the same pull request reused.
    second = {**first, "data/labels.csv.dvc": refreshed(LABELS, "3333", "5555")}
    run(service, github, branch, second)
    assert list(github.state.repos[REPO].pulls) == [number]
    moved = git(path, "rev-parse", PROPOSAL_BRANCH)
    assert moved != head and git(path, "rev-parse", f"{moved}^") == git(path, "rev-parse", branch)
    assert github.state.repos[REPO].pulls[number]["head_sha"] == moved
    assert (
        "https://github.com/octo/labels:labels.csv"
        in github.state.repos[REPO].pulls[number]["body"]
    )
    assert git(path, "diff", "--name-only", branch, PROPOSAL_BRANCH).split() == [
        "data/labels.csv.dvc",
        "data/raw.csv.dvc",
    ]
    assert f"pull request \\#{number} updated" in github.state.commit_comments[-1]["body"]
    # The same content again: no new commit, the branch stays.
    commits_before = requests(github).count(("POST", "/git/commits"))
    run(service, github, branch, second)
    assert requests(github).count(("POST", "/git/commits")) == commits_before
    assert git(path, "rev-parse", PROPOSAL_BRANCH) == moved
    assert list(github.state.repos[REPO].pulls) == [number]


def test_nothing_refreshed_is_skipped_with_nothing_proposed(
    github: GitHub, served: tuple[Path, str], retraining: Any
) -> None:
    github.state.permissions[INSTALLATION] = MAY_PROPOSE
    _, branch = served
    run(retraining[0], github, branch, {})
    assert not github.state.repos[REPO].pulls
    assert ("POST", "/git/blobs") not in requests(github)
    body = github.state.commit_comments[-1]["body"]
    assert "skipped: nothing to propose: no import's source changed" in body


def test_a_token_without_contents_write_gets_a_clear_error_in_the_report(
    github: GitHub, served: tuple[Path, str], retraining: Any
) -> None:
    # The App as installed before proposal mode: contents read-only.
    github.state.permissions[INSTALLATION] = APP_PERMISSIONS
    _, branch = served
    run(retraining[0], github, branch, {"data/raw.csv.dvc": refreshed(RAW, "2222", "4444")})
    assert not github.state.repos[REPO].pulls
    body = github.state.commit_comments[-1]["body"]
    assert "GitHub refused to write the refreshed DVC pointers" in body
    assert "Resource not accessible by integration" in body
    assert "Contents: Read and write and Pull requests: Read and write" in body
    (check,) = [r for r in github.state.check_runs.values() if r["name"] == RETRAIN_CHECK]
    assert check["conclusion"] == "failure"
    assert "Traceback" not in body


def test_a_proposal_into_something_not_a_branch_is_refused_clearly(
    github: GitHub, served: tuple[Path, str], app_client: GitHubClient
) -> None:
    github.state.permissions[INSTALLATION] = MAY_PROPOSE
    path, _ = served
    proposer = GitHubProposer(app_client)
    with pytest.raises(GitHubError, match="'v2' is not a branch of octo/model"):
        proposer.propose(
            f"{github.url}/{REPO}.git",
            base_sha=git(path, "rev-parse", "HEAD"),
            base_branch="v2",
            files={"a": b"x"},
            title="t",
            body="b",
        )
