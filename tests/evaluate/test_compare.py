from __future__ import annotations

import numpy as np
import pytest

from modelci.errors import OutputError
from modelci.evaluate.compare import MetricRule, Predictions, compare, predictions_from_json


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
