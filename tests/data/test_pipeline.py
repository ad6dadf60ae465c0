"""DVC pipelines: dvc.yaml without modelci.yaml, and `train: dvc repro` with it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modelci.data.pipeline import PIPELINE_COMMAND, pipeline_config
from modelci.errors import ConfigError
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
from tests.data.test_fetch import allow, evaluate, evaluator, place, settings

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]
__all__ = ["evaluator", "place", "settings"]  # fixtures shared with test_fetch

sandboxed = pytest.mark.skipif(
    shutil.which("bwrap") is None or os.geteuid() != 0,
    reason="needs bubblewrap and root (scripts/setup installs it)",
)


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


@sandboxed
@pytest.mark.sandbox
@pytest.mark.slow
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
    if modelci_yaml is None:  # every metrics file dvc.yaml declares, YAML too
        assert result.head.metrics["prepared.rows"] == 4
    else:  # modelci.yaml names the one it wants
        assert "prepared.rows" not in result.head.metrics
    assert result.head.log_path is not None
    assert "Running stage 'train'" in result.head.log_path.read_text()


# Two stages, each declaring its metrics (one JSON, one YAML, one in a stage's wdir),
# and a top-level metrics file as well.
MANY_METRICS = """\
metrics: [summary.json]
stages:
  train:
    cmd: python train.py
    metrics:
      - metrics.json: {cache: false}
  evaluate:
    cmd: python evaluate.py
    wdir: eval
    metrics:
      - scores.yaml: {cache: false}
      - ../metrics.json
"""


def test_every_metrics_file_a_pipeline_declares_is_read() -> None:
    files = {"dvc.yaml": MANY_METRICS.encode()}
    config = pipeline_config(files.get)
    assert config is not None
    assert config.commands() == [PIPELINE_COMMAND]
    # In dvc.yaml's order, once each, stage paths taken from their wdir.
    assert config.metrics_files() == ("summary.json", "metrics.json", "eval/scores.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stages:\n  train:\n    cmd: python train.py\n", "declares no metrics file"),
        ("metrics: [../../etc/passwd]\n", "outside the repository (../../etc/passwd)"),
        ("stages: [\n", "dvc.yaml is not valid YAML"),
    ],
)
def test_a_pipeline_without_usable_metrics_says_what_to_fix(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        pipeline_config({"dvc.yaml": text.encode()}.get)
    assert expected in str(info.value)
    assert "How to fix" in str(info.value)
