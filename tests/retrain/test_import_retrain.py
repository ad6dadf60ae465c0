"""A retrain of a commit with a DVC import: refreshed from its source before training.

Real DVC (`dvc import-url` of a local file), the real sandbox, real MLflow; the
champion is the commit as delivered, and the retrain trains on what the source
holds now, without any new commit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modelci.deliver.delivery import Deliverer
from modelci.evaluate.report import escape_markdown
from modelci.retrain.report import retrain_markdown
from modelci.retrain.retrainer import Retrainer
from tests.data.dvcrepos import csv_rows, import_url_repo
from tests.data.test_fetch import allow, place
from tests.deliver.test_delivery import MODEL_LIB
from tests.deliver.test_dvc_delivery import CONFIG, TRAIN, deliverer

__all__ = ["deliverer", "place"]  # fixtures shared with the delivery tests

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)


def test_a_retrain_refreshes_the_import_and_trains_on_the_new_data(
    deliverer: Deliverer, place: Path
) -> None:
    source = place / "source"
    source.mkdir()
    (source / "data.csv").write_text(csv_rows(ones=30, zeros=70))
    files = {"modelci.yaml": CONFIG, "train.py": TRAIN, "model_lib.py": MODEL_LIB}
    repo = import_url_repo(
        place / "churn", source / "data.csv", "data/data.csv", remote=place / "remote", files=files
    )
    allow(deliverer.settings, repo, f'allowed_urls = ["{place / "remote"}", "{source}"]\n')
    champion = deliverer.deliver(str(repo), "HEAD", actor="merge")
    assert champion.promoted, champion.error
    retrainer = Retrainer(deliverer=deliverer)

    unchanged = retrainer.retrain(str(repo), "HEAD", trigger="data", actor="test")
    assert unchanged.decision == "skipped", unchanged.error
    assert unchanged.refreshed == {}

    (source / "data.csv").write_text(csv_rows(ones=10, zeros=10))
    result = retrainer.retrain(str(repo), "HEAD", trigger="data", actor="test")

    assert result.decision != "failed", result.error
    assert list(result.refreshed) == ["data/data.csv.dvc"]
    ((source_name, old, new),) = result.refreshed_from.values()
    assert source_name == str(source / "data.csv") and old != new
    assert result.data_changed == {"data/data.csv": (old, new)}
    version = deliverer.registry.get_version("churn", result.version or 0)
    assert version.metrics["rows"] == 20 and version.data_version == {"data/data.csv": new}
    body = retrain_markdown(result, history_plot_url=None, sparkline=None)
    # The path as Markdown shows it (a temporary directory's name may hold "_").
    assert "Imports refreshed" in body and escape_markdown(str(source / "data.csv")) in body
    assert result.as_json()["refreshed"]["data/data.csv.dvc"]["new"] == new

    # The source unchanged since: the same refreshed data as that version's.
    again = retrainer.retrain(str(repo), "HEAD", trigger="data", actor="test")
    assert again.refreshed == result.refreshed
    assert again.data_version == result.data_version
