from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelci.errors import CheckoutError
from modelci.runner.checkout import is_remote_url, open_mirror, repository_name
from tests.conftest import GitRepo, commit_files, git


def test_resolve_checkout_and_cleanup(make_repo: GitRepo, tmp_path: Path) -> None:
    repo = make_repo({"a.txt": "one", "dir/b.txt": "two"})
    first = git(repo, "rev-parse", "HEAD")
    second = commit_files(repo, {"a.txt": "changed"})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    assert mirror.resolve("main") == second
    assert mirror.resolve("HEAD~1") == first
    assert mirror.read_file(first, "a.txt") == b"one"
    assert mirror.read_file(first, "missing.txt") is None
    assert mirror.read_file(first, "dir") is None
    with mirror.checkout(first, tmp_path / "runs") as workdir:
        assert (workdir / "a.txt").read_text() == "one"
        assert (workdir / "dir" / "b.txt").read_text() == "two"
        assert not (workdir / ".git").exists()
    assert not workdir.exists()
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_file_over_the_limit_is_refused_without_reading_it_whole(
    make_repo: GitRepo, tmp_path: Path
) -> None:
    repo = make_repo({"small.txt": "x" * 1024 * 1024, "big.txt": "x" * (1024 * 1024 + 1)})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    sha = mirror.resolve("main")
    assert mirror.read_file(sha, "small.txt") == b"x" * 1024 * 1024
    with pytest.raises(CheckoutError, match=r"big\.txt at \w+ is over the 1048576 bytes allowed"):
        mirror.read_file(sha, "big.txt")


def test_new_commits_are_fetched_into_the_existing_mirror(
    make_repo: GitRepo, tmp_path: Path
) -> None:
    repo = make_repo({"a.txt": "one"})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    mirror.resolve("main")
    newer = commit_files(repo, {"a.txt": "two"})
    again = open_mirror(str(repo), tmp_path / "mirrors")
    assert again.path == mirror.path
    assert again.resolve(newer) == newer  # a sha unknown to the mirror triggers a fetch
    assert again.resolve("main") == newer


def test_changed_files_between_commits_by_pathspec(make_repo: GitRepo, tmp_path: Path) -> None:
    repo = make_repo({"a.dvc": "1", "sub/b.dvc": "1", "dvc.lock": "1", "train.py": "1"})
    first = git(repo, "rev-parse", "HEAD")
    second = commit_files(repo, {"sub/b.dvc": "2", "dvc.lock": "2", "train.py": "2", "n.dvc": "x"})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    mirror.resolve(second)

    assert mirror.changed_files(first, second, "*.dvc", "dvc.lock") == [
        "dvc.lock",
        "n.dvc",
        "sub/b.dvc",
    ]
    assert mirror.changed_files(first, second) == ["dvc.lock", "n.dvc", "sub/b.dvc", "train.py"]
    assert mirror.changed_files(first, second, limit=1) == ["dvc.lock"]
    assert mirror.changed_files(second, second) == []
    with pytest.raises(CheckoutError, match="could not compare"):
        mirror.changed_files(first, "0" * 40)


def test_checkout_is_removed_when_the_body_fails(make_repo: GitRepo, tmp_path: Path) -> None:
    repo = make_repo({"a.txt": "one"})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    sha = mirror.resolve("main")
    with pytest.raises(RuntimeError), mirror.checkout(sha, tmp_path / "runs") as workdir:
        raise RuntimeError("boom")
    assert not workdir.exists()


def test_unknown_ref_and_missing_repo_are_clear_errors(make_repo: GitRepo, tmp_path: Path) -> None:
    repo = make_repo({"a.txt": "one"})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    with pytest.raises(CheckoutError, match="is not a commit"):
        mirror.resolve("no-such-branch")
    with pytest.raises(CheckoutError, match="is not a commit"):
        mirror.resolve("0" * 40)
    with pytest.raises(CheckoutError, match="invalid ref"):
        mirror.resolve("--upload-pack=touch /tmp/x")
    with pytest.raises(CheckoutError, match="does not exist"):
        open_mirror(str(tmp_path / "nowhere"), tmp_path / "mirrors")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CheckoutError, match="plain is not a git repository") as caught:
        open_mirror(str(plain), tmp_path / "mirrors")
    assert "does not exist" not in str(caught.value) and "git -C" in str(caught.value)
    (repo / "sub").mkdir()
    with pytest.raises(CheckoutError, match="is the subdirectory sub of the git repository") as sub:
        open_mirror(str(repo / "sub"), tmp_path / "mirrors")
    assert f"give the repository itself ({repo})" in str(sub.value)


def test_symlinks_are_checked_out_as_links(make_repo: GitRepo, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    repo = make_repo({"a.txt": "one"})
    os.symlink(secret, repo / "link")
    sha = commit_files(repo, {})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    with mirror.checkout(sha, tmp_path / "runs") as workdir:
        # The symlink is recreated as a symlink; it is the sandbox that keeps the
        # target out of reach, and outputs are read without following links.
        assert (workdir / "link").is_symlink()
        assert os.readlink(workdir / "link") == str(secret)
    assert secret.read_text() == "s3cret"


HOOKS = ("reference-transaction", "post-index-change", "post-checkout", "post-merge")


def test_no_hook_runs_on_fetch_or_checkout(
    make_repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hooks that would record that they ran, wherever git might find them: the
    # mirror's hooks dir, core.hooksPath in the mirror's config, and the server
    # user's global config.
    ran = tmp_path / "hooks-ran"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    repo = make_repo({"a.txt": "one"})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    newer = commit_files(repo, {"a.txt": "two"})  # before the hooks: not for this git
    for directory in (hooks, mirror.path / "hooks"):
        for name in HOOKS:
            hook = directory / name
            hook.write_text(f"#!/bin/sh\necho {name} >> {ran}\ncat >/dev/null\n")
            hook.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f"[core]\n\thooksPath = {hooks}\n")
    monkeypatch.setenv("HOME", str(home))
    assert mirror.resolve(newer) == newer  # a fetch: ref updates
    with mirror.checkout(newer, tmp_path / "runs") as workdir:  # an index written
        assert (workdir / "a.txt").read_text() == "two"
    assert not ran.exists(), ran.read_text()
    # They do run when git is allowed to run them: the check above can fail.
    git(mirror.path, "update-ref", "refs/heads/control", newer)
    assert "reference-transaction" in ran.read_text()


def test_names() -> None:
    assert is_remote_url("https://github.com/o/r.git")
    assert is_remote_url("git@github.com:o/r.git")
    assert not is_remote_url("/srv/repo")
    assert repository_name("https://github.com/o/r.git") == "o/r"
    assert repository_name("git@github.com:o/r.git") == "o/r"


def test_a_local_repositorys_refs_are_read_in_the_repository_without_a_fetch(
    make_repo: GitRepo, tmp_path: Path
) -> None:
    repo = make_repo({"a.txt": "one"})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    first = mirror.resolve("main")
    git(repo, "branch", "already-fetched-commit", first)  # a new ref, a known commit
    assert mirror.resolve("already-fetched-commit") == first
    refs = git(repo, "--git-dir", str(mirror.path), "for-each-ref", "--format=%(refname)")
    assert "already-fetched-commit" not in refs  # resolved in the repository: no fetch
    git(repo, "checkout", "--quiet", "-b", "work")
    newer = commit_files(repo, {"a.txt": "two"})
    # HEAD is the repository's checkout, and a commit the mirror lacks is fetched.
    assert mirror.resolve_many("HEAD", "main") == [newer, first]
    assert mirror.read_file(newer, "a.txt") == b"two"
