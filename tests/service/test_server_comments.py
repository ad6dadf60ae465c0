"""End to end, what a pull request is told, through `modelci serve`, the real sandbox
and the stand-in GitHub: a failed training's log tail (no server paths, the whole log
through the API), and a pull request that adds modelci.yaml evaluated alone.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import GitRepo, commit_files, git
from tests.github.conftest import REPO, GitHub, app_key, github, standin_server
from tests.service.test_server import (
    CLONE_URLS,
    CONFIG,
    TRAIN,
    Service,
    comments,
    labeled,
    model_repo,
    service,
    wait_for,
)

__all__ = ["app_key", "github", "service", "standin_server"]  # fixtures used here

pytestmark = pytest.mark.sandbox


def completed(github: GitHub, head_sha: str) -> dict[str, object] | None:
    runs = [r for r in github.state.check_runs.values() if r["head_sha"] == head_sha]
    return next((r for r in runs if r["status"] == "completed"), None)


def test_a_failed_training_shows_the_end_of_its_log_and_links_the_whole_log(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    failing = "print('loading data')\nraise ValueError('learning rate must be positive')\n"
    repo, head = model_repo(github, make_repo, head_files={"train.py": failing})
    service.env["MODELCI_PUBLIC_URL"] = service.url
    service.serve()
    assert service.deliver(labeled(repo, head)).status_code == 202
    wait_for(lambda: completed(github, head) is not None, service)
    run = completed(github, head)
    assert run is not None and run["conclusion"] == "failure"
    body = comments(github)[0]["body"]
    assert "<details><summary>head: the last" in body
    assert 'File "train.py", line 2, in <module>' in body
    assert "ValueError: learning rate must be positive" in body
    data_dir = service.env["MODELCI_DATA_DIR"]
    assert data_dir not in body and data_dir not in str(run["output"])
    link = re.search(r"\[The whole log\]\((\S+/api/runs/\d+/log)\)", body)
    assert link is not None, body
    # The log is behind the API's tokens, like every /api route.
    assert httpx.get(link.group(1), timeout=10).status_code == 401
    service.api("/api/jobs")  # makes the service's token
    log = httpx.get(link.group(1), headers={"Authorization": f"Bearer {service.token}"})
    assert log.status_code == 200 and "learning rate must be positive" in log.text


def test_a_pull_request_that_adds_modelci_yaml_is_evaluated_alone(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    repo = make_repo({"train.py": TRAIN, "params.json": '{"skill": 0.8}'})
    CLONE_URLS[repo] = github.state.serve_git(REPO, repo)
    git(repo, "checkout", "-q", "-b", "feature")
    head = commit_files(repo, {"modelci.yaml": CONFIG})
    git(repo, "checkout", "-q", "main")
    github.state.add_pull(REPO, 1, head_sha=head, head_ref="feature", labels=("evaluate",))
    service.serve()
    assert service.deliver(labeled(repo, head)).status_code == 202
    wait_for(lambda: completed(github, head) is not None, service)
    run = completed(github, head)
    assert run is not None and run["conclusion"] == "success", run
    body = comments(github)[0]["body"]
    assert "PASS: head evaluated alone, the base has no modelci.yaml" in body
    assert "| accuracy | – |" in body and "gated once merged" in body
    assert "not run: the base commit has no modelci.yaml" in body
