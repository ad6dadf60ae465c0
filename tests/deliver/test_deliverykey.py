"""A registered version is reused only for the same commit, environment, configuration
and scored rows: real git, sandbox, MLflow, and server-held datasets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modelci.deliver.delivery import Deliverer
from modelci.scoring.datasets import DatasetStore
from tests.conftest import GitRepo
from tests.deliver.test_delivery import data_dir, deliverer
from tests.scoring.test_scored_evaluation import holdout, honest_accuracy, scored_repo

__all__ = ["data_dir", "deliverer"]  # fixtures shared with test_delivery

pytestmark = pytest.mark.sandbox

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

HELD = "  dataset: holdout\n  target: label\n  metrics: [accuracy]\n"


def test_a_held_dataset_replaced_under_the_same_name_is_scored_again(
    deliverer: Deliverer, make_repo: GitRepo, tmp_path: Path
) -> None:
    store = DatasetStore(deliverer.settings.datasets_dir)
    old_text, old_rows = holdout(300, seed=7)
    (tmp_path / "old.csv").write_text(old_text)
    store.add("holdout", tmp_path / "old.csv")
    repo, _ = scored_repo(make_repo, cut=0.7, scoring=HELD)

    first = deliverer.deliver(str(repo), "HEAD", actor="merge")
    assert first.error is None, first.error
    assert first.metrics["accuracy"] == pytest.approx(honest_accuracy(old_rows, 0.7))
    again = deliverer.deliver(str(repo), "HEAD", actor="merge")  # a retried job
    assert again.reused and again.version == first.version

    # The server's holdout is replaced under the same name: the commit, its environment
    # and its configuration are the same, its scores are not.
    new_text, new_rows = holdout(300, seed=8)
    (tmp_path / "new.csv").write_text(new_text)
    store.remove("holdout")
    store.add("holdout", tmp_path / "new.csv")
    rescored = deliverer.deliver(str(repo), "HEAD", actor="merge")

    assert rescored.error is None, rescored.error
    assert not rescored.reused and rescored.version == 2
    assert rescored.metrics["accuracy"] == pytest.approx(honest_accuracy(new_rows, 0.7))
    assert rescored.metrics["accuracy"] != pytest.approx(first.metrics["accuracy"])
