"""Seeds and repeats end to end: real git repositories, uv, the sandbox and a store."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import uv

from modelci.evaluate.evaluation import EvaluationRequest, EvaluationResult, Evaluator
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import make_sandbox
from modelci.settings import Settings
from modelci.store.db import Database, open_database
from tests.conftest import GitRepo, commit_files

pytestmark = pytest.mark.sandbox

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

# Reports the seed variables it was given as metrics (informational: no direction).
SEED_ECHO = """\
import json, os
json.dump(
    {"seed": int(os.environ["MODELCI_SEED"]), "hashseed": int(os.environ["PYTHONHASHSEED"])},
    open("metrics.json", "w"),
)
"""


@pytest.fixture
def settings() -> Iterator[Settings]:
    # Not under pytest's tmp_path: /tmp/pytest-of-root is 0700 and the sandbox's
    # uid must be able to reach its work dir.
    data = Path(tempfile.mkdtemp(prefix="modelci-test-", dir="/var/tmp"))
    try:
        yield Settings(
            data_dir=data, database_url=f"sqlite:///{data}/store.db", max_parallel_runs=2
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def evaluator(settings: Settings) -> Iterator[Evaluator]:
    db: Database = open_database(settings)
    try:
        yield Evaluator(
            settings=settings,
            database=lambda: db,
            sandbox=make_sandbox(),
            environments=EnvironmentManager(
                envs_dir=settings.envs_dir, python=settings.python, uv_bin=uv.find_uv_bin()
            ),
        )
    finally:
        db.close()


def evaluate(evaluator: Evaluator, repo: Path) -> EvaluationResult:
    return evaluator.evaluate(EvaluationRequest(repo=str(repo), base="HEAD~1", head="HEAD"))


def test_every_run_gets_a_seed_and_a_hash_seed(evaluator: Evaluator, make_repo: GitRepo) -> None:
    config = "train: python train.py\nmetrics: metrics.json\n"
    repo = make_repo({"modelci.yaml": config, "train.py": SEED_ECHO})
    commit_files(repo, {"README": "a change that does nothing"})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    for side in (result.head, result.base):
        assert side.metrics == {"seed": 0.0, "hashseed": 0.0}
