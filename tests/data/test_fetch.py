"""DVC data fetched for evaluations: real DVC, real local-directory remote, real sandbox."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelci.evaluate.evaluation import EvaluationRequest, EvaluationResult, Evaluator
from modelci.settings import Settings
from tests.conftest import commit_files, git
from tests.data.dvcrepos import (
    commit_data,
    csv_rows,
    damaged_cache_objects,
    data_fetcher,
    dvc,
    dvc_repo,
    fetch_clone,
)
from tests.evaluate.test_evaluation import open_evaluator

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)


@pytest.fixture
def place() -> Iterator[Path]:
    # Not under pytest's tmp_path (0700): the sandbox's uid reaches the remote and data dir.
    root = Path(tempfile.mkdtemp(prefix="modelci-dvc-test-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def settings(place: Path) -> Settings:
    data = place / "data"
    made = Settings(data_dir=data, database_url=f"sqlite:///{place}/store.db", max_parallel_runs=2)
    made.prepare_data_dir()
    return made


@pytest.fixture
def evaluator(settings: Settings, shared_envs: Path) -> Iterator[Evaluator]:
    # One environments dir for the session (tests/conftest.py): modelci's DVC
    # environment is built once, not once per test.
    with open_evaluator(settings, shared_envs) as made:
        yield made


def allow(settings: Settings, repo: Path, text: str) -> None:
    settings.dvc_remotes_path.write_text(f'[repositories."{repo.name}"]\n{text}')


def evaluate(evaluator: Evaluator, repo: Path, base: str = "HEAD~1") -> EvaluationResult:
    return evaluator.evaluate(EvaluationRequest(repo=str(repo), base=base, head="HEAD"))


def fetch_logs(settings: Settings) -> list[Path]:
    return sorted(settings.logs_dir.glob("*.fetch.log"))


def test_a_data_change_pull_request_is_evaluated_on_each_commits_data(
    evaluator: Evaluator, settings: Settings, place: Path
) -> None:
    remote = place / "remote"
    repo = dvc_repo(place / "churn", str(remote), csv_rows(ones=30, zeros=70))
    commit_data(repo, csv_rows(ones=60, zeros=40), "new data")
    allow(settings, repo, f'allowed_urls = ["{remote}"]\n')

    result = evaluate(evaluator, repo)

    assert result.head.ok, result.head.error
    assert result.base.ok, result.base.error
    assert result.base.metrics["accuracy"] == pytest.approx(0.3)
    assert result.head.metrics["accuracy"] == pytest.approx(0.6)
    assert result.comparison is not None
    assert result.head.timings["data_bytes"] > 0
    # The cache's objects are the data, whole and unlinked from any work dir.
    caches = list(settings.dvc_cache_dir.iterdir())
    assert [c for c in caches if c.is_dir()] and not damaged_cache_objects(
        next(c for c in caches if c.is_dir())
    )


def test_a_second_commit_with_the_same_data_fetches_nothing(
    evaluator: Evaluator, settings: Settings, place: Path
) -> None:
    remote = place / "remote"
    repo = dvc_repo(place / "churn", str(remote), csv_rows(ones=50, zeros=50))
    allow(settings, repo, f'allowed_urls = ["{remote}/"]\n')
    first = evaluate(evaluator, repo, base="HEAD")
    assert first.head.ok, first.head.error
    size = len(csv_rows(ones=50, zeros=50))
    # Head and base (the same commit) fetch one after the other: the first downloads.
    fetched = sorted(side.timings["data_bytes"] for side in (first.head, first.base))
    assert fetched[0] == 0 and fetched[1] >= size

    commit_files(repo, {"train.py": (repo / "train.py").read_text() + "\n# a code change\n"})
    second = evaluate(evaluator, repo, base="HEAD")

    assert second.head.ok, second.head.error
    assert second.head.timings["data_bytes"] == second.base.timings["data_bytes"] == 0
    assert second.head.metrics["accuracy"] == pytest.approx(0.5)


def test_a_training_that_writes_into_its_data_cannot_change_the_cache(
    evaluator: Evaluator, settings: Settings, place: Path
) -> None:
    remote = place / "remote"
    vandal = (
        "open('data/data.csv', 'w').write('x,label\\n1,1\\n')\n"
        "import json; json.dump({'accuracy': 1.0}, open('metrics.json', 'w'))\n"
    )
    repo = dvc_repo(place / "churn", str(remote), csv_rows(ones=20, zeros=80))
    allow(settings, repo, f'allowed_urls = ["{remote}"]\n')
    commit_files(repo, {"train.py": vandal})

    first = evaluate(evaluator, repo, base="HEAD")  # the vandal
    assert first.head.ok, first.head.error
    git(repo, "revert", "--no-edit", "HEAD")
    second = evaluate(evaluator, repo, base="HEAD")  # the honest training, same data

    assert second.head.ok, second.head.error
    assert second.head.timings["data_bytes"] == 0
    assert second.head.metrics["accuracy"] == pytest.approx(0.2)
    cache = next(c for c in settings.dvc_cache_dir.iterdir() if c.is_dir())
    assert not damaged_cache_objects(cache)


def test_a_remote_url_the_server_does_not_allow_is_refused_before_any_request(
    evaluator: Evaluator, settings: Settings, place: Path
) -> None:
    remote = place / "remote"
    repo = dvc_repo(place / "churn", str(remote), csv_rows(ones=1, zeros=1))
    allow(settings, repo, f'allowed_urls = ["{place}/elsewhere", "s3://team-bucket/churn"]\n')

    result = evaluate(evaluator, repo, base="HEAD")

    assert not result.head.ok
    error = result.head.error or ""
    assert "'storage'" in error and str(remote) in error
    assert "allowed_urls" in error and str(settings.dvc_remotes_path) in error
    assert fetch_logs(settings) == []  # no fetch ever started


@pytest.mark.parametrize(
    "url",
    [
        "../../../../etc",  # a relative path out of the repository
        "s3://team-bucket/churn-other/x",  # a sibling of the allowed prefix
        "s3://team-bucket/churn/../secrets",
        "http://169.254.169.254/latest",
    ],
)
def test_pointing_the_remote_elsewhere_in_a_pull_request_is_refused(
    evaluator: Evaluator, settings: Settings, place: Path, url: str
) -> None:
    remote = place / "remote"
    repo = dvc_repo(place / "churn", str(remote), csv_rows(ones=1, zeros=1))
    allow(settings, repo, f'allowed_urls = ["{remote}", "s3://team-bucket/churn"]\n')
    config = (repo / ".dvc" / "config").read_text().replace(str(remote), url)
    commit_files(repo, {".dvc/config": config})

    result = evaluate(evaluator, repo)

    assert result.base.ok, result.base.error
    assert not result.head.ok
    assert "does not allow" in (result.head.error or "")
    assert len(fetch_logs(settings)) == 1  # the base's


def test_missing_credentials_name_the_remote_and_the_setting(
    evaluator: Evaluator, settings: Settings, place: Path
) -> None:
    repo = dvc_repo(place / "churn", "s3://team-bucket/churn", csv_rows(ones=1, zeros=1))
    allow(settings, repo, 'allowed_urls = ["s3://team-bucket/churn"]\n')

    result = evaluate(evaluator, repo, base="HEAD")

    error = result.head.error or ""
    assert "'storage'" in error and "no credentials" in error
    assert f'[repositories."{repo.name}".remotes.storage]' in error
    assert "MODELCI_DVC_REMOTES_FILE" in error
    assert fetch_logs(settings) == []


def test_data_missing_from_the_remote_names_the_file(
    evaluator: Evaluator, settings: Settings, place: Path
) -> None:
    remote = place / "remote"
    repo = dvc_repo(place / "churn", str(remote), csv_rows(ones=1, zeros=1))
    allow(settings, repo, f'allowed_urls = ["{remote}"]\n')
    commit_data(repo, csv_rows(ones=5, zeros=1), "data never pushed", push=False)

    result = evaluate(evaluator, repo)

    assert result.base.ok, result.base.error
    assert "could not fetch data/data.csv from the DVC remote 'storage'" in (
        result.head.error or ""
    )


def test_data_the_cache_holds_is_copied_from_it_without_running_dvc(
    settings: Settings, place: Path
) -> None:
    remote = place / "remote"
    repo = dvc_repo(place / "churn", str(remote), csv_rows(ones=3, zeros=1))
    (repo / "data" / "images" / "sub").mkdir(parents=True)
    for index in range(20):
        (repo / "data" / "images" / "sub" / f"{index}.bin").write_bytes(os.urandom(1000))
    dvc(repo, "add", "--quiet", "data/images")
    dvc(repo, "push", "--quiet")
    commit_files(repo, {}, "images")
    allow(settings, repo, f'allowed_urls = ["{remote}"]\n')
    fetcher, sandbox = data_fetcher(settings)

    first = fetch_clone(fetcher, settings, repo, place / "first")
    assert first is not None and first.bytes_fetched > 20_000
    assert [command.split()[-3:] for command in sandbox.commands] == [
        ["fetch", "data/data.csv.dvc", "data/images.dvc"]  # DVC downloads, modelci copies
    ]
    second = fetch_clone(fetcher, settings, repo, place / "second")

    assert second is not None and second.bytes_fetched == 0
    assert len(sandbox.commands) == 1  # no sandbox, no DVC the second time
    assert "copied from the repository's DVC cache" in second.log_path.read_text()
    for name in ("data/data.csv", *(f"data/images/sub/{i}.bin" for i in range(20))):
        assert (place / "second" / name).read_bytes() == (repo / name).read_bytes()
    assert (place / "second" / "data" / "data.csv").stat().st_nlink == 1
