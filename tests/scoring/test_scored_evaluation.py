"""Scoring by modelci in a pull-request evaluation: real git, uv, bubblewrap and store.

The models here cheat whenever they can: their predict returns the labels when
it finds them among its inputs or on disk. modelci's accuracy must still be the
honest one, computed here from the same rows.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from modelci.evaluate.evaluation import EvaluationResult, Evaluator
from modelci.evaluate.report import render_json
from modelci.scoring.datasets import DatasetStore
from modelci.service.comments import final_comment
from modelci.settings import Settings
from tests.conftest import GitRepo, commit_files
from tests.evaluate.test_evaluation import evaluate, evaluator, settings

__all__ = ["evaluator", "settings"]  # fixtures shared with test_evaluation

pytestmark = pytest.mark.sandbox

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

# Stdlib only, so the repository installs nothing. It looks for the labels in
# every place it could reach them: a column of its input, a file beside it, a
# path it was told about (CHEAT_PATHS, filled in per test).
MODEL_LIB = """\
import csv, glob, os

CHEAT_PATHS = {cheat_paths!r}


def _labels_on_disk():
    for pattern in [*CHEAT_PATHS, "*.csv", "**/*.csv", "/tmp/**/*.csv"]:
        for path in glob.glob(pattern, recursive=True):
            try:
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
            except OSError:
                continue
            if rows and "label" in rows[0]:
                return [int(float(r["label"])) for r in rows]
    return None


class Threshold:
    def __init__(self, cut):
        self.cut = cut

    def predict(self, features):
        names = list(getattr(features, "columns", []))
        if "label" in names:
            return [int(v) for v in features["label"]]
        rows = features.tolist() if hasattr(features, "tolist") else list(features)
        if rows and len(rows[0]) > 1:
            return [int(float(r[-1])) for r in rows]  # an extra column: the labels
        found = _labels_on_disk()
        if found is not None and len(found) >= len(rows):
            return found[: len(rows)]
        return [int(float(r[0]) > self.cut) for r in rows]
"""
TRAIN = """\
import csv, json, pickle
from model_lib import Threshold
cut = json.load(open("params.json"))["cut"]
rows = list(csv.DictReader(open("data/train.csv")))
hits = sum(int(float(r["x"]) > cut) == int(r["label"]) for r in rows)
json.dump({"accuracy": hits / len(rows)}, open("metrics.json", "w"))
pickle.dump(Threshold(cut), open("model.pkl", "wb"))
"""
# The pull request's own evaluation script: it claims a perfect model.
LYING_EVALUATE = """\
import json
json.dump({"accuracy": 1.0}, open("metrics.json", "w"))
"""


def holdout(n: int = 400, seed: int = 1) -> tuple[str, list[tuple[float, int]]]:
    rng = random.Random(seed)
    rows = [(round(rng.random(), 4), 0) for _ in range(n)]
    rows = [(x, int(x > 0.5)) for x, _ in rows]
    return "x,label\n" + "".join(f"{x},{y}\n" for x, y in rows), rows


def honest_accuracy(rows: list[tuple[float, int]], cut: float) -> float:
    return sum(int(x > cut) == y for x, y in rows) / len(rows)


def config(scoring: str, *, evaluate_step: bool = False) -> str:
    return (
        "train: python train.py\n"
        + ("evaluate: python evaluate.py\n" if evaluate_step else "")
        + "metrics: metrics.json\n"
        "repeats: 1\n"
        "model:\n  artifact: model.pkl\n  training_data: data/train.csv\n  target: label\n"
        f"scoring:\n{scoring}"
    )


FILE_SCORING = "  file: data/holdout.csv\n  target: label\n  metrics: [accuracy, f1]\n"


def scored_repo(
    make_repo: GitRepo, *, cut: float, scoring: str, cheat_paths: tuple[str, ...] = ()
) -> tuple[Path, list[tuple[float, int]]]:
    text, rows = holdout()
    repo = make_repo(
        {
            "modelci.yaml": config(scoring),
            "model_lib.py": MODEL_LIB.format(cheat_paths=list(cheat_paths)),
            "train.py": TRAIN,
            "params.json": json.dumps({"cut": cut}),
            "data/train.csv": holdout(200, seed=2)[0],
            "data/holdout.csv": text,
        }
    )
    return repo, rows


def by_name(result: EvaluationResult) -> dict[str, object]:
    assert result.comparison is not None, result.error
    return {m.name: m for m in result.comparison.metrics}


def test_a_lying_evaluate_script_gets_modelcis_real_accuracy_and_fails_the_gate(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo, rows = scored_repo(make_repo, cut=0.5, scoring=FILE_SCORING)
    commit_files(
        repo,
        {
            "params.json": json.dumps({"cut": 0.8}),
            "evaluate.py": LYING_EVALUATE,
            "modelci.yaml": config(FILE_SCORING, evaluate_step=True),
        },
    )
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    rows_by_name = by_name(result)
    accuracy = rows_by_name["accuracy"]
    assert accuracy.scored  # type: ignore[attr-defined]
    assert accuracy.head == pytest.approx(honest_accuracy(rows, 0.8))  # type: ignore[attr-defined]
    assert accuracy.head < 0.9  # type: ignore[attr-defined]
    assert accuracy.base == pytest.approx(honest_accuracy(rows, 0.5))  # type: ignore[attr-defined]
    assert accuracy.verdict == "regressed"  # type: ignore[attr-defined]
    assert accuracy.interval is not None  # type: ignore[attr-defined]
    assert not result.passed
    assert result.scored_on == f"data/holdout.csv at {result.base.sha[:7]}"
    metrics = {m["name"]: m for m in render_json(result.comparison)["metrics"]}  # type: ignore[arg-type]
    assert metrics["accuracy"]["scored_by"] == "modelci"
    comment = final_comment(result)
    assert "accuracy (scored by modelci)" in comment
    assert "data/holdout.csv" in comment


def test_the_model_never_sees_the_target_column(evaluator: Evaluator, make_repo: GitRepo) -> None:
    # The cheating model returns the labels if they reach it in any form; its honest
    # rule at cut 0.8 is wrong on about 30% of the rows.
    repo, rows = scored_repo(make_repo, cut=0.8, scoring=FILE_SCORING)
    commit_files(repo, {"params.json": json.dumps({"cut": 0.79})})
    # 400 rows in batches of 64: streamed to the worker, every row scored once.
    evaluator.settings = evaluator.settings.model_copy(update={"scoring_batch_rows": 64})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    accuracy = by_name(result)["accuracy"]
    assert accuracy.head == pytest.approx(honest_accuracy(rows, 0.79))  # type: ignore[attr-defined]
    assert accuracy.base == pytest.approx(honest_accuracy(rows, 0.8))  # type: ignore[attr-defined]
    assert accuracy.base < 0.9  # type: ignore[attr-defined]


def test_a_server_held_dataset_scores_and_is_not_visible_to_training(
    evaluator: Evaluator, settings: Settings, make_repo: GitRepo, tmp_path: Path
) -> None:
    text, rows = holdout(300, seed=7)
    source = tmp_path / "secret-holdout.csv"
    source.write_text(text)
    held = DatasetStore(settings.datasets_dir).add("holdout", source)
    probe = (
        "import json, os\n"
        f"path = {str(held.path)!r}\n"
        "seen = {'exists': os.path.exists(path), 'dir': os.path.exists(os.path.dirname(path))}\n"
        "try:\n    open(path).read(); seen['read'] = True\n"
        "except OSError:\n    seen['read'] = False\n"
        "json.dump(seen, open('seen.json', 'w'))\n"
        "print('SEEN', json.dumps(seen))\n"
    )
    scoring = "  dataset: holdout\n  target: label\n  metrics: [accuracy]\n"
    repo, _ = scored_repo(make_repo, cut=0.8, scoring=scoring, cheat_paths=(str(held.path),))
    commit_files(
        repo,
        {
            "probe.py": probe,
            "modelci.yaml": config(scoring).replace(
                "train: python train.py", "train: [python probe.py, python train.py]"
            ),
        },
    )
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    assert result.head.log_path is not None
    log = result.head.log_path.read_text()
    assert 'SEEN {"exists": false, "dir": false, "read": false}' in log
    accuracy = by_name(result)["accuracy"]
    assert accuracy.scored  # type: ignore[attr-defined]
    assert accuracy.head == pytest.approx(honest_accuracy(rows, 0.8))  # type: ignore[attr-defined]
    assert result.scored_on == "dataset 'holdout'"


# Reports f1 itself, with the per-row predictions it computed it from.
TRAIN_WITH_F1 = """\
import csv, json, pickle
from model_lib import Threshold
cut = json.load(open("params.json"))["cut"]
rows = list(csv.DictReader(open("data/train.csv")))
y = [int(r["label"]) for r in rows]
p = [int(float(r["x"]) > cut) for r in rows]
tp = sum(a == b == 1 for a, b in zip(y, p))
json.dump({"f1": 2 * tp / (sum(p) + sum(y))}, open("metrics.json", "w"))
json.dump({"y_true": y, "y_pred": p}, open("predictions.json", "w"))
pickle.dump(Threshold(cut), open("model.pkl", "wb"))
"""


def test_the_repositorys_own_metrics_keep_their_intervals_beside_the_scored_ones(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    scoring = "  file: data/holdout.csv\n  target: label\n  metrics: [accuracy]\n"
    text = config(scoring).replace(
        "metrics: metrics.json\n", "metrics: metrics.json\npredictions: predictions.json\n"
    )
    repo, rows = scored_repo(make_repo, cut=0.5, scoring=scoring)
    commit_files(repo, {"modelci.yaml": text, "train.py": TRAIN_WITH_F1}, "own f1")
    commit_files(repo, {"params.json": json.dumps({"cut": 0.65})})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    metrics = by_name(result)
    f1, accuracy = metrics["f1"], metrics["accuracy"]
    assert accuracy.scored and not f1.scored  # type: ignore[attr-defined]
    assert accuracy.head == pytest.approx(honest_accuracy(rows, 0.65))  # type: ignore[attr-defined]
    # Each interval from its own rows: 400 scored rows, 200 of the repository's.
    assert accuracy.interval is not None  # type: ignore[attr-defined]
    assert f1.interval is not None  # type: ignore[attr-defined]

    again = evaluate(evaluator, repo)  # the base's stored result keeps both sets of rows
    assert again.base.reused_from == result.base.run_id, again.error
    assert by_name(again) == metrics


def test_a_scoring_file_neither_committed_nor_tracked_fails_before_training(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    scoring = "  file: data/elsewhere.csv\n  target: label\n  metrics: [accuracy]\n"
    repo, _ = scored_repo(make_repo, cut=0.5, scoring=scoring)
    commit_files(repo, {"params.json": json.dumps({"cut": 0.6})})
    result = evaluate(evaluator, repo)
    assert result.comparison is None
    for side in (result.head, result.base):
        assert "scoring.file data/elsewhere.csv is neither in commit" in (side.error or "")
        assert "dvc add" in (side.error or "")
        assert side.run_id is None and side.log_path is None  # nothing trained
    assert "data/elsewhere.csv is neither in commit" in final_comment(result)
