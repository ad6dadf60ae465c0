"""``modelci models score``: a registered version scored again, on a file or a held dataset."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from modelci.deliver.delivery import Deliverer
from tests.conftest import GitRepo
from tests.deliver.test_delivery import data_dir, deliverer
from tests.scoring.test_scored_evaluation import FILE_SCORING, holdout, honest_accuracy, scored_repo
from tests.test_cli import modelci

__all__ = ["data_dir", "deliverer"]  # fixtures shared with test_delivery

pytestmark = pytest.mark.sandbox

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)


@pytest.fixture
def cli_env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MODELCI_DATA_DIR": str(data_dir),
        "MODELCI_DATABASE_URL": f"sqlite:///{data_dir}/store.db",
    }


def test_a_registered_version_is_scored_on_fresh_data(
    deliverer: Deliverer, make_repo: GitRepo, cli_env: dict[str, str], tmp_path: Path
) -> None:
    repo, rows = scored_repo(make_repo, cut=0.7, scoring=FILE_SCORING)
    delivered = deliverer.deliver(str(repo), "HEAD", actor="test")
    assert delivered.error is None, delivered.error
    assert delivered.version is not None
    version = deliverer.registry.get_version(delivered.model_name, delivered.version)
    # Delivery scored it too: the registered accuracy is modelci's on the holdout.
    assert version.metrics["accuracy"] == pytest.approx(honest_accuracy(rows, 0.7))

    text, fresh = holdout(250, seed=11)
    (tmp_path / "fresh.csv").write_text(text)
    done = modelci(
        cli_env, "models", "score", delivered.model_name, "--version", str(delivered.version),
        "--dataset", str(tmp_path / "fresh.csv"), "--target", "label",
        "--metric", "accuracy", "--metric", "f1", "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["scored_by"] == "modelci"
    assert payload["rows"] == 250
    assert payload["metrics"]["accuracy"] == pytest.approx(honest_accuracy(fresh, 0.7))

    added = modelci(cli_env, "datasets", "add", "fresh", str(tmp_path / "fresh.csv"))
    assert added.returncode == 0, added.stderr
    # No --version: the champion. No --metric: the version's own that modelci can compute.
    table = modelci(
        cli_env, "models", "score", delivered.model_name, "--dataset", "fresh", "--target", "label"
    )
    assert table.returncode == 0, table.stderr
    assert "scored by modelci on dataset 'fresh' (250 rows)" in table.stdout

    (tmp_path / "wrong.csv").write_text("y,label\n1,0\n2,1\n")
    wrong = modelci(
        cli_env, "models", "score", delivered.model_name, "--dataset",
        str(tmp_path / "wrong.csv"), "--target", "label",
    )  # fmt: skip
    assert wrong.returncode == 2
    assert "lacks the model's input column 'x'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
