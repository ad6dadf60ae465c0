"""DVC pipelines: dvc.yaml without modelci.yaml, and `train: dvc repro` with it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modelci.evaluate.evaluation import Evaluator
from modelci.settings import Settings
from tests.conftest import git
from tests.data.dvcrepos import (
    PIPELINE,
    PIPELINE_TRAIN,
    PREPARE,
    commit_data,
    csv_rows,
    dvc_repo,
)
from tests.data.test_fetch import allow, evaluate, evaluator, place, settings, shared_envs

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]
__all__ = ["evaluator", "place", "settings", "shared_envs"]  # fixtures shared with test_fetch

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)


def pipeline_repo(place: Path, *, modelci_yaml: str | None) -> tuple[Path, Path]:
    remote = place / "remote"
    files = {"dvc.yaml": PIPELINE, "prepare.py": PREPARE, "train.py": PIPELINE_TRAIN}
    repo = dvc_repo(place / "pipe", str(remote), csv_rows(ones=1, zeros=3), files=files)
    if modelci_yaml is None:
        git(repo, "rm", "--quiet", "modelci.yaml")
    else:
        (repo / "modelci.yaml").write_text(modelci_yaml)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "pipeline")
    commit_data(repo, csv_rows(ones=3, zeros=1), "new data")
    return repo, remote


@pytest.mark.parametrize(
    "modelci_yaml", [None, "train: dvc repro\nmetrics: metrics.json\nrepeats: 1\n"]
)
def test_a_dvc_pipeline_is_reproduced_on_each_commits_data(
    evaluator: Evaluator, settings: Settings, place: Path, modelci_yaml: str | None
) -> None:
    repo, remote = pipeline_repo(place, modelci_yaml=modelci_yaml)
    allow(settings, repo, f'allowed_urls = ["{remote}"]\n')

    result = evaluate(evaluator, repo)

    assert result.base.ok, result.base.error
    assert result.head.ok, result.head.error
    assert result.base.metrics["accuracy"] == pytest.approx(0.25)
    assert result.head.metrics["accuracy"] == pytest.approx(0.75)
    assert result.head.log_path is not None
    assert "Running stage 'train'" in result.head.log_path.read_text()
