"""A merge of a repository whose data is in DVC: fetched, trained, registered.

Real DVC against a local-directory remote, the real sandbox, real MLflow. The
delivery fetches exactly the data the commit points to before training, into
the repository's one DVC cache: a later commit with the same data fetches
nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelci.deliver.delivery import Deliverer
from modelci.settings import Settings
from modelci.store.db import open_database
from tests.conftest import MLFLOW_STORE, commit_files
from tests.data.dvcrepos import commit_data, csv_rows, dvc_repo
from tests.data.test_fetch import allow, place
from tests.deliver.test_delivery import MODEL_LIB, _deliverer

__all__ = ["place"]  # the fixture shared with test_fetch

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

# Trains a threshold on the DVC-tracked data/data.csv (x, label).
TRAIN = """\
import csv, json, pickle
from model_lib import Threshold
rows = list(csv.DictReader(open("data/data.csv")))
model = Threshold(0.5)
hits = sum(int(float(r["x"]) > 0.5) == int(r["label"]) for r in rows)
json.dump({"accuracy": hits / len(rows), "rows": len(rows)}, open("metrics.json", "w"))
pickle.dump(model, open("model.pkl", "wb"))
"""
CONFIG = """\
train: python train.py
metrics: metrics.json
model: {name: churn, artifact: model.pkl, training_data: data/data.csv, target: label}
"""


@pytest.fixture
def deliverer(place: Path, mlflow_store: Path, shared_envs: Path) -> Iterator[Deliverer]:
    data = place / "data"
    settings = Settings(data_dir=data, database_url=f"sqlite:///{place}/store.db")
    settings.prepare_data_dir()
    shutil.copyfile(mlflow_store, place / MLFLOW_STORE)
    db = open_database(settings)
    try:
        yield _deliverer(settings, db, envs_dir=shared_envs)
    finally:
        db.close()


def test_a_merge_with_dvc_data_is_fetched_trained_and_registered(
    deliverer: Deliverer, place: Path
) -> None:
    remote = place / "remote"
    files = {"modelci.yaml": CONFIG, "train.py": TRAIN, "model_lib.py": MODEL_LIB}
    repo = dvc_repo(place / "churn", str(remote), csv_rows(ones=30, zeros=70), files=files)
    commit_data(repo, csv_rows(ones=60, zeros=40), "new data")  # the merge
    allow(deliverer.settings, repo, f'allowed_urls = ["{remote}"]\n')

    first = deliverer.deliver(str(repo), "HEAD", actor="merge")

    assert first.error is None, first.error
    assert first.promoted and first.version == 1
    assert first.metrics["rows"] == 100  # the merge's data, not the initial commit's
    assert first.timings["data_bytes"] >= len(csv_rows(ones=60, zeros=40))
    version = deliverer.registry.get_version("churn", 1)
    assert version.sha == first.sha

    # The next merge changes code only: the same data, already in the cache.
    commit_files(repo, {"train.py": TRAIN + "# a code change\n"}, "code only")
    second = deliverer.deliver(str(repo), "HEAD", actor="merge")

    assert second.error is None, second.error
    assert second.version == 2 and not second.reused
    assert second.timings["data_bytes"] == 0
    assert second.metrics["rows"] == 100
    assert second.to_json()["timings"]["data_bytes"] == 0


def test_refreshed_imports_are_trained_on_and_change_the_key_and_data_version(
    deliverer: Deliverer, place: Path
) -> None:
    from modelci.data.versions import data_version
    from modelci.retrain.refresh import refresh_imports
    from modelci.runner.checkout import open_mirror
    from tests.data.dvcrepos import import_url_repo

    source = place / "source"
    source.mkdir()
    (source / "data.csv").write_text(csv_rows(ones=30, zeros=70))
    files = {"modelci.yaml": CONFIG, "train.py": TRAIN, "model_lib.py": MODEL_LIB}
    repo = import_url_repo(
        place / "churn", source / "data.csv", "data/data.csv", remote=place / "remote", files=files
    )
    allow(deliverer.settings, repo, f'allowed_urls = ["{place / "remote"}", "{source}"]\n')
    first = deliverer.deliver(str(repo), "HEAD", actor="merge")
    assert first.error is None, first.error
    assert first.metrics["rows"] == 100

    (source / "data.csv").write_text(csv_rows(ones=10, zeros=10))
    mirror = open_mirror(str(repo), deliverer.settings.mirrors_dir)
    sha = mirror.resolve("HEAD")
    refresh = refresh_imports(deliverer.evaluator, mirror, sha, repo=str(repo))
    assert list(refresh.changed) == ["data/data.csv.dvc"]

    # reuse=True: the commit is registered, but not with this data.
    second = deliverer.deliver(str(repo), "HEAD", actor="data", overlay=refresh.changed)

    assert second.error is None, second.error
    assert not second.reused and second.version == 2
    assert second.metrics["rows"] == 20  # the source's new rows, from the cache
    assert second.data_version == data_version(mirror, sha, refresh.changed)
    assert second.data_version != first.data_version == data_version(mirror, sha)
    assert deliverer.registry.get_version("churn", 2).data_version == second.data_version
    # The same overlay again is that version: reused.
    third = deliverer.deliver(str(repo), "HEAD", actor="data", overlay=refresh.changed)
    assert third.reused and third.version == 2
