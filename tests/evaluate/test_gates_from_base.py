"""A security rule: a pull request is judged by its base commit's gates, never its own.

Each head makes the model clearly worse and, in the same commit, loosens the
gates in ``modelci.yaml`` (tolerance raised, gate switched off, direction
flipped, the metric dropped from ``gates`` with default gating off). The
evaluation must still fail on the base's gate.
"""

from __future__ import annotations

import json

import pytest

from modelci.evaluate.evaluation import Evaluator
from tests.conftest import GitRepo, commit_files
from tests.evaluate.test_evaluation import TRAIN, evaluate, evaluator, settings

__all__ = ["evaluator", "settings"]  # fixtures shared with test_evaluation

pytestmark = pytest.mark.sandbox

COMMANDS = "train: python train.py\nmetrics: metrics.json\npredictions: predictions.json\n"
# Only accuracy is gated, so the verdict rests on that one gate.
BASE = COMMANDS + "default_gate: false\ngates:\n  accuracy: {direction: higher, tolerance: 0}\n"
LOOSENED = {
    "tolerance-raised": BASE.replace("tolerance: 0}", "tolerance: 1.0}"),
    "gate-switched-off": BASE.replace("tolerance: 0}", "tolerance: 0, gate: false}"),
    "direction-flipped": BASE.replace("direction: higher", "direction: lower"),
    "gate-removed": COMMANDS + "default_gate: false\n",
}


@pytest.mark.parametrize("head_config", LOOSENED.values(), ids=LOOSENED.keys())
def test_a_pull_request_cannot_loosen_the_gates_it_is_judged_by(
    evaluator: Evaluator, make_repo: GitRepo, head_config: str
) -> None:
    repo = make_repo(
        {"modelci.yaml": BASE, "train.py": TRAIN, "params.json": json.dumps({"skill": 0.95})}
    )
    commit_files(repo, {"modelci.yaml": head_config, "params.json": json.dumps({"skill": 0.6})})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    assert result.comparison is not None
    accuracy = {m.name: m for m in result.comparison.metrics}["accuracy"]
    assert accuracy.verdict == "regressed"
    assert accuracy.gated
    assert not result.passed


def test_the_heads_tighter_gates_do_not_apply_before_the_merge_either(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    # The rule cuts both ways: the head's own (stricter) config is not what judges it.
    loose = BASE.replace("tolerance: 0}", "tolerance: 0.5}")
    repo = make_repo(
        {"modelci.yaml": loose, "train.py": TRAIN, "params.json": json.dumps({"skill": 0.95})}
    )
    strict = BASE.replace("default_gate: false", "default_gate: true")
    commit_files(repo, {"modelci.yaml": strict, "params.json": json.dumps({"skill": 0.6})})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    assert result.passed
