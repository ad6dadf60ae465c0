"""Shared fixtures: real git repositories built on the fly."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelci.store.pgembed import EmbeddedPostgres

GitRepo = Callable[..., Path]


def git(path: Path, *args: str) -> str:
    done = subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=path,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit_files(path: Path, files: dict[str, str | bytes], message: str = "change") -> str:
    """Write files into the repository at ``path``, commit them, return the sha."""
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "--allow-empty", "-m", message)
    return git(path, "rev-parse", "HEAD")


@pytest.fixture
def make_repo(tmp_path: Path) -> GitRepo:
    """A factory of real git repositories with one commit of the given files."""
    counter = iter(range(1000))

    def make(files: dict[str, str | bytes]) -> Path:
        path = tmp_path / f"repo{next(counter)}"
        path.mkdir()
        git(path, "init", "--quiet")
        commit_files(path, files, "initial")
        return path

    return make


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """CI's server (MODELCI_TEST_POSTGRES_URL), else an embedded one for this session."""
    url = os.environ.get("MODELCI_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if os.environ.get("CI"):
        pytest.fail("CI must set MODELCI_TEST_POSTGRES_URL (scripts/test starts a server)")
    directory = Path(tempfile.mkdtemp(prefix="modelci-pg-", dir="/var/tmp"))
    server = EmbeddedPostgres(directory)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_store() -> Iterator[Path]:
    """An MLflow SQLite store with its tables made, to copy into a test's data dir.

    Making them runs MLflow's whole migration history, about 10 s: once a session,
    not in every delivery test. It is made by the Registry itself, as a data dir's
    ``store-mlflow.db`` beside a SQLite ``store.db``."""
    from modelci.deliver.tracking import Registry
    from modelci.settings import Settings

    directory = Path(tempfile.mkdtemp(prefix="modelci-mlflow-", dir="/var/tmp"))
    try:
        settings = Settings(data_dir=directory, database_url=f"sqlite:///{directory}/store.db")
        Registry.from_settings(settings, settings.database_url or "").model_names()
        yield directory / MLFLOW_STORE
    finally:
        shutil.rmtree(directory, ignore_errors=True)


MLFLOW_STORE = "store-mlflow.db"  # MLflow's store beside sqlite:///<data dir>/store.db


@pytest.fixture(scope="session")
def shared_envs() -> Iterator[Path]:
    """An environments dir for the tests of one session that share environments (modelci's
    DVC takes ~8 s to install): the server shares its envs dir between jobs the same way.
    Reachable by the sandbox's uids (0755, not under pytest's 0700 tmp_path)."""
    directory = Path(tempfile.mkdtemp(prefix="modelci-envs-", dir="/var/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
