"""Scoring on a DVC-tracked file: real DVC (local remote), real sandbox, real store.

The rows come out of the repository's DVC cache by the md5 of the *base* commit's
pointer, before anything trains: neither a training that rewrites the file in its
work dir nor a pull request that points the file at other rows changes them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelci.evaluate.evaluation import Evaluator
from modelci.settings import Settings
from tests.conftest import commit_files, git
from tests.data.dvcrepos import dvc, dvc_repo
from tests.data.test_fetch import allow, evaluate, place, settings
from tests.evaluate.test_evaluation import open_evaluator
from tests.scoring.test_scored_evaluation import MODEL_LIB, by_name, holdout, honest_accuracy

__all__ = ["place", "settings"]  # fixtures shared with test_fetch

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

TRAIN = """\
import json, pickle
from model_lib import Threshold
cut = json.load(open("params.json"))["cut"]
json.dump({"cut": cut}, open("metrics.json", "w"))
pickle.dump(Threshold(cut), open("model.pkl", "wb"))
"""
# Rewrites the holdout in its work dir with rows its own model gets all right.
VANDAL = (
    TRAIN
    + """\
import random
rows = [round(random.random(), 4) for _ in range(400)]
open("data/holdout.csv", "w").write(
    "x,label\\n" + "".join(f"{x},{int(x > cut)}\\n" for x in rows)
)
"""
)
CONFIG = """\
train: python train.py
metrics: metrics.json
repeats: 1
model: {artifact: model.pkl, training_data: data/train.csv, target: label}
scoring: {file: data/holdout.csv, target: label, metrics: [accuracy]}
"""


@pytest.fixture
def evaluator(settings: Settings, shared_envs: Path) -> Iterator[Evaluator]:
    # One environments dir for the session (tests/conftest.py): modelci's DVC
    # environment is built once, not once per test.
    with open_evaluator(settings, shared_envs) as made:
        yield made


def perfect_rows(cut: float) -> str:
    _, rows = holdout(400, seed=3)
    return "x,label\n" + "".join(f"{x},{int(x > cut)}\n" for x, _ in rows)


def test_a_dvc_tracked_holdout_is_scored_as_the_base_commit_points_to_it(
    evaluator: Evaluator, settings: Settings, place: Path
) -> None:
    remote = place / "remote"
    text, rows = holdout()
    files = {
        "modelci.yaml": CONFIG,
        "train.py": TRAIN,
        "model_lib.py": MODEL_LIB.format(cheat_paths=[]),
        "params.json": json.dumps({"cut": 0.8}),
        "data/train.csv": holdout(50, seed=2)[0],
    }
    repo = dvc_repo(place / "scored", str(remote), "x,label\n1,1\n", files=files)
    (repo / "data" / "holdout.csv").write_text(text)
    dvc(repo, "add", "--quiet", "data/holdout.csv")
    dvc(repo, "push", "--quiet")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "holdout")
    allow(settings, repo, f'allowed_urls = ["{remote}"]\n')
    # The pull request: a training that rewrites the holdout in its work dir, and a
    # new holdout (pushed) that its model gets all right.
    (repo / "data" / "holdout.csv").write_text(perfect_rows(0.8))
    dvc(repo, "add", "--quiet", "data/holdout.csv")
    dvc(repo, "push", "--quiet")
    commit_files(repo, {"train.py": VANDAL}, "perfect scores")

    result = evaluate(evaluator, repo)

    assert result.error is None, result.error
    accuracy = by_name(result)["accuracy"]
    assert accuracy.scored  # type: ignore[attr-defined]
    honest = honest_accuracy(rows, 0.8)
    assert honest < 0.9
    assert accuracy.head == pytest.approx(honest)  # type: ignore[attr-defined]
    assert accuracy.base == pytest.approx(honest)  # type: ignore[attr-defined]
    assert result.scored_on == f"data/holdout.csv at {result.base.sha[:7]} (DVC)"
    # The plan's checksum is the pointer's md5, and it is in the cache key.
    pointer = git(repo, "show", "HEAD~1:data/holdout.csv.dvc")
    md5 = pointer.split("md5: ", 1)[1].split()[0]
    assert result.base.scoring is not None and result.base.scoring.checksum == f"md5:{md5}"
