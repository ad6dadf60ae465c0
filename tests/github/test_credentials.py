"""Passing an installation token to git through the environment, checked with real git."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from modelci.github import git_credentials
from tests.conftest import GitRepo
from tests.github.conftest import INSTALLATION, GitHub

TOKEN = "ghs_0123456789abcdefSECRET"
BASIC = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


BASE_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
}


def run_git(url: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**BASE_ENV, **extra_env}
    return subprocess.run(
        ["git", "ls-remote", url], env=env, capture_output=True, text=True, timeout=30
    )


def test_environment_entries() -> None:
    env = git_credentials(TOKEN, "https://github.com/octo/model.git")
    assert env == {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "http.https://github.com/.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: {BASIC}",
        "GIT_CONFIG_KEY_1": "credential.helper",
        "GIT_CONFIG_VALUE_1": "",
        "GIT_TERMINAL_PROMPT": "0",
    }


def test_existing_config_entries_are_kept() -> None:
    base = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.askPass", "GIT_CONFIG_VALUE_0": ""}
    env = git_credentials(TOKEN, "https://ghe.example/org/repo.git", env=base)
    assert env["GIT_CONFIG_COUNT"] == "3"
    assert env["GIT_CONFIG_KEY_1"] == "http.https://ghe.example/.extraHeader"
    assert "GIT_CONFIG_KEY_0" not in env


@pytest.mark.parametrize(
    "url",
    ["git@github.com:octo/model.git", "https://x-access-token:t@github.com/o/r.git", "file:///r"],
)
def test_unusable_clone_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="clone URL"):
        git_credentials(TOKEN, url)


def test_git_sends_the_token_as_a_header_and_nowhere_else(github: GitHub) -> None:
    clone_url = f"{github.url}/octo/model.git"
    done = run_git(clone_url, git_credentials(TOKEN, clone_url))
    assert done.returncode != 0  # the stand-in serves no repository
    (probe,) = [r for r in github.state.requests if r.path.endswith("/info/refs")]
    assert probe.headers["authorization"] == BASIC
    assert TOKEN not in done.stderr + done.stdout


def test_the_header_is_scoped_to_the_clone_urls_host(github: GitHub) -> None:
    # Same server, other origin (localhost instead of 127.0.0.1): no header.
    other = github.url.replace("127.0.0.1", "localhost") + "/octo/model.git"
    run_git(other, git_credentials(TOKEN, f"{github.url}/octo/model.git"))
    probes = [r for r in github.state.requests if r.path.endswith("/info/refs")]
    assert probes, "git never reached the server: the test would prove nothing"
    assert all("authorization" not in probe.headers for probe in probes)


def test_a_repository_is_cloned_over_http_with_the_installation_token(
    github: GitHub, make_repo: GitRepo, tmp_path: Path
) -> None:
    source = make_repo({"train.py": "print('hi')\n"})
    clone_url = github.state.serve_git("octo/model", source)
    token = github.state.issue_token(INSTALLATION).value
    target = tmp_path / "clone"
    env = {**BASE_ENV, **git_credentials(token, clone_url)}
    done = subprocess.run(
        ["git", "clone", "--quiet", clone_url, str(target)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (target / "train.py").read_text() == "print('hi')\n"
    assert token not in done.stderr


@pytest.mark.parametrize("token", ["", "ghs_not_issued"])
def test_without_a_valid_token_the_clone_is_refused(
    github: GitHub, make_repo: GitRepo, tmp_path: Path, token: str
) -> None:
    clone_url = github.state.serve_git("octo/model", make_repo({"a": "1"}))
    env = {**BASE_ENV, **(git_credentials(token, clone_url) if token else {})}
    env["GIT_TERMINAL_PROMPT"] = "0"
    done = subprocess.run(
        ["git", "clone", "--quiet", clone_url, str(tmp_path / "clone")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert not (tmp_path / "clone" / "a").exists()


def test_tokens_never_go_over_plain_http_to_another_machine() -> None:
    with pytest.raises(ValueError, match="plain http"):
        git_credentials(TOKEN, "http://github.example/octo/model.git")
    assert git_credentials(TOKEN, "http://127.0.0.1:9/octo/model.git")  # this machine only
