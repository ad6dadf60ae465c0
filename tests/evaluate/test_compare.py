from __future__ import annotations

import numpy as np
import pytest

from modelci.errors import OutputError
from modelci.evaluate.compare import (
    MetricRule,
    Predictions,
    ScoredRows,
    compare,
    head_only,
    predictions_from_json,
)


def verdicts(comparison) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {m.name: m.verdict for m in comparison.metrics}


def test_verdicts_follow_directions_and_tolerances() -> None:
    head = {"accuracy": 0.90, "loss": 0.30, "f1": 0.799, "auc": 0.7, "epochs": 12, "new": 1.0}
    base = {"accuracy": 0.85, "loss": 0.25, "f1": 0.80, "auc": 0.7, "epochs": 10, "gone": 0.5}
    rules = [MetricRule("f1", "higher", tolerance=0.002)]
    result = compare(head, base, rules)
    assert verdicts(result) == {
        "accuracy": "improved",
        "loss": "regressed",
        "f1": "within_tolerance",
        "auc": "unchanged",
        "epochs": "informational",
        "new": "new",
        "gone": "missing",
    }
    assert not result.passed
    assert [m.name for m in result.regressions] == ["loss"]


def test_ungated_regressions_do_not_fail() -> None:
    result = compare({"loss": 0.5}, {"loss": 0.1}, [MetricRule("loss", "lower", gate=False)])
    assert verdicts(result) == {"loss": "regressed"}
    assert result.passed


def test_a_gated_metric_missing_in_head_fails() -> None:
    result = compare({}, {"accuracy": 0.9}, [MetricRule("accuracy", "higher")])
    assert verdicts(result) == {"accuracy": "missing"}
    assert not result.passed


def test_default_gate_off_only_reports() -> None:
    result = compare({"accuracy": 0.5}, {"accuracy": 0.9}, [], default_gate=False)
    assert result.passed


def test_noise_never_fails_the_gate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    base = np.where(rng.random(60) < 0.8, y, 1 - y)
    head = base.copy()
    head[np.flatnonzero(base == y)[:1]] ^= 1  # one more error: -1/60 accuracy
    acc = lambda p: float((p == y).mean())  # noqa: E731
    result = compare(
        {"accuracy": acc(head)},
        {"accuracy": acc(base)},
        [],
        head_predictions=Predictions(y, head),
        base_predictions=Predictions(y, base),
    )
    metric = result.metrics[0]
    assert metric.interval is not None and metric.interval.contains_zero()
    assert metric.verdict == "within_noise"
    assert result.passed


def test_interval_only_when_predictions_reproduce_the_metric() -> None:
    y = np.array([0, 1] * 50)
    pred = y.copy()
    # The reported accuracy (0.9) is not what these predictions give (1.0).
    result = compare(
        {"accuracy": 0.9},
        {"accuracy": 0.8},
        [],
        head_predictions=Predictions(y, pred),
        base_predictions=Predictions(y, pred),
    )
    assert result.metrics[0].interval is None


def _f1(y: np.ndarray, p: np.ndarray) -> float:  # type: ignore[type-arg]
    tp = float(((p == 1) & (y == 1)).sum())
    return 2 * tp / (float((p == 1).sum()) + float((y == 1).sum()))


def test_scored_metrics_and_the_runs_own_each_take_intervals_from_their_rows() -> None:
    # The repository reports f1 on its own split; modelci scores accuracy on its holdout.
    rng = np.random.default_rng(3)
    y_own, y_held = rng.integers(0, 2, 300), rng.integers(0, 2, 200)
    own = {s: np.where(rng.random(300) < q, y_own, 1 - y_own) for s, q in (("h", 0.8), ("b", 0.9))}
    held = {
        s: np.where(rng.random(200) < q, y_held, 1 - y_held) for s, q in (("h", 0.7), ("b", 0.9))
    }
    metrics = {
        s: {"f1": _f1(y_own, own[s]), "accuracy": float((held[s] == y_held).mean())}
        for s in ("h", "b")
    }
    scored = ScoredRows(
        frozenset({"accuracy"}), Predictions(y_held, held["h"]), Predictions(y_held, held["b"])
    )
    result = compare(
        metrics["h"],
        metrics["b"],
        [],
        head_predictions=Predictions(y_own, own["h"]),
        base_predictions=Predictions(y_own, own["b"]),
        scored=scored,
    )
    rows = {m.name: m for m in result.metrics}
    assert rows["f1"].interval is not None and rows["accuracy"].interval is not None
    assert rows["accuracy"].verdict == rows["f1"].verdict == "regressed"
    # One set of rows for both (what a scored run kept before) leaves f1 without one.
    only_scored = compare(
        metrics["h"],
        metrics["b"],
        [],
        head_predictions=scored.head,
        base_predictions=scored.base,
    )
    assert {m.name: m.interval is None for m in only_scored.metrics} == {
        "accuracy": False,
        "f1": True,
    }


def test_predictions_on_other_rows_are_refused() -> None:
    a = Predictions(np.array([0, 1] * 10), np.array([0, 1] * 10))
    b = Predictions(np.array([1, 0] * 10), np.array([0, 1] * 10))
    with pytest.raises(OutputError, match="same evaluation rows"):
        compare({"accuracy": 1.0}, {"accuracy": 0.0}, [], head_predictions=a, base_predictions=b)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "must be an object"),
        ({"y_true": [1]}, "must be an object"),
        ({"y_true": [1, 2], "y_pred": [1]}, "same length"),
        ({"y_true": [1, [2]], "y_pred": [1, 2]}, "shapes|nested"),
        ({"y_true": [1, 2], "y_pred": [1, 2], "scores": ["a", "b"]}, "scores"),
        ({"y_true": "abc", "y_pred": [1]}, "must be a list"),
    ],
)
def test_malformed_predictions(data: object, message: str) -> None:
    with pytest.raises(OutputError, match=message):
        predictions_from_json(data, source="predictions.json")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_head_value_that_is_not_a_number_fails_the_gate_with_its_own_verdict(
    value: float,
) -> None:
    result = compare({"accuracy": value, "epochs": value}, {"accuracy": 0.9, "epochs": 3.0}, [])
    assert verdicts(result) == {"accuracy": "not_a_number", "epochs": "not_a_number"}
    # Gated (accuracy has a direction) it fails; informational (epochs) it is only shown.
    assert [m.name for m in result.regressions] == ["accuracy"]
    assert not result.passed


def test_a_base_that_is_not_a_number_does_not_fail_head() -> None:
    result = compare({"accuracy": 0.9}, {"accuracy": float("nan")}, [])
    assert verdicts(result) == {"accuracy": "not_a_number"}
    assert result.passed


def test_head_only_lists_the_gates_that_apply_once_merged_and_fails_nothing() -> None:
    rules = [MetricRule("loss", "lower", gate=False), MetricRule("speed", "higher")]
    result = head_only({"accuracy": 0.4, "loss": 0.9, "speed": float("nan"), "n": 3.0}, rules)
    assert result.head_only and result.passed and not result.regressions
    rows = {m.name: (m.verdict, m.gated, m.direction, m.base) for m in result.metrics}
    assert rows == {
        "accuracy": ("new", True, "higher", None),
        "loss": ("new", False, "lower", None),
        "speed": ("not_a_number", True, "higher", None),
        "n": ("new", False, None, None),
    }
