"""Seeds and repeats end to end: real git repositories, uv, the sandbox and a store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modelci.evaluate.evaluation import EvaluationRequest, EvaluationResult, Evaluator
from tests.conftest import GitRepo, commit_files
from tests.evaluate.test_evaluation import evaluator, settings

__all__ = ["evaluator", "settings"]  # fixtures shared with test_evaluation

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


def evaluate(evaluator: Evaluator, repo: Path) -> EvaluationResult:
    return evaluator.evaluate(EvaluationRequest(repo=str(repo), base="HEAD~1", head="HEAD"))


def test_every_run_gets_a_seed_and_a_hash_seed(evaluator: Evaluator, make_repo: GitRepo) -> None:
    config = "train: python train.py\nmetrics: metrics.json\nrepeats: 1\n"
    repo = make_repo({"modelci.yaml": config, "train.py": SEED_ECHO})
    commit_files(repo, {"README": "a change that does nothing"})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    for side in (result.head, result.base):
        assert side.metrics == {"seed": 0.0, "hashseed": 0.0}


# A model whose quality moves with its seed (a global shift and per-row flips),
# on 2,000 fixed rows; params.json sets its skill.
NOISY = """\
import json, os, random
seed = int(os.environ["MODELCI_SEED"])
skill = json.load(open("params.json"))["skill"]
rows = random.Random(0)
y = [rows.randint(0, 1) for _ in range(2000)]
hard = [rows.random() for _ in range(2000)]
training = random.Random(seed)
shift = training.gauss(0, 0.01)
pred = [t if h + training.gauss(0, 0.03) < skill + shift else 1 - t for t, h in zip(y, hard)]
acc = sum(a == b for a, b in zip(y, pred)) / len(y)
json.dump({"accuracy": acc}, open("metrics.json", "w"))
json.dump({"y_true": y, "y_pred": pred}, open("predictions.json", "w"))
"""
NOISY_CONFIG = "train: python train.py\nmetrics: metrics.json\npredictions: predictions.json\n"


def test_nondeterministic_training_is_repeated_and_a_no_op_change_is_noise(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    from modelci.evaluate.noise import AUTO_REPEATS, NoiseInterval

    files = {"modelci.yaml": NOISY_CONFIG, "train.py": NOISY, "params.json": '{"skill": 0.9}'}
    repo = make_repo(files)
    # Nothing changes but the seeds the training draws (as a refactoring would).
    commit_files(repo, {"train.py": NOISY.replace("Random(seed)", "Random(seed + 100)")})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    assert len(result.base.repeats) == len(result.head.repeats) == AUTO_REPEATS - 1
    assert [r.seed for r in result.head.repeats] == list(range(1, AUTO_REPEATS))
    assert result.base.repeats_reason and "nondeterministic" in result.base.repeats_reason
    assert result.comparison is not None
    (row,) = result.comparison.metrics
    assert isinstance(row.interval, NoiseInterval)
    assert (row.interval.head_runs, row.interval.base_runs) == (AUTO_REPEATS, AUTO_REPEATS)
    assert row.interval.training > 0 and row.interval.sample is not None
    assert result.passed, row
    assert [u.name for u in result.unstable] == ["accuracy", "accuracy"]
    # Every base run, seeds included, is reused the next time: the decision too.
    again = evaluate(evaluator, repo)
    assert all(r.reused_from is not None for r in [again.base, *again.base.repeats])
    assert len(again.head.repeats) == AUTO_REPEATS - 1


def test_deterministic_training_runs_once_per_side(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    train = NOISY.replace('int(os.environ["MODELCI_SEED"])', "0")
    files = {"modelci.yaml": NOISY_CONFIG, "train.py": train, "params.json": '{"skill": 0.9}'}
    repo = make_repo(files)
    commit_files(repo, {"params.json": '{"skill": 0.8}'})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    assert result.base.repeats == [] and result.head.repeats == []
    assert not result.passed  # ten points worse, one run each: the paired bootstrap


def forest_repository(make_repo: GitRepo) -> Path:
    """tests/evaluate/noisyrepos' random forest as a repository: seeded from MODELCI_SEED."""
    source = Path(__file__).parent / "noisyrepos"
    return make_repo(
        {
            "modelci.yaml": NOISY_CONFIG,
            "requirements.txt": "numpy\nscikit-learn\n",
            "data.py": (source / "data.py").read_text(),
            "common.py": (source / "common.py").read_text(),
            "train.py": (source / "forest.py").read_text(),
        }
    )


def test_a_random_forest_whose_seed_changes_passes_with_repeats(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    from modelci.evaluate.noise import AUTO_REPEATS

    repo = forest_repository(make_repo)
    train = (repo / "train.py").read_text()
    # The pull request changes nothing but the seeds the forest draws.
    commit_files(
        repo, {"train.py": train.replace("write(*train(seed()))", "write(*train(seed() + 100))")}
    )
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    assert len(result.head.repeats) == AUTO_REPEATS - 1
    assert result.comparison is not None
    assert {m.name for m in result.comparison.metrics} == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert all(m.interval is not None for m in result.comparison.metrics)
    assert result.passed, result.comparison
