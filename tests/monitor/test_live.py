"""The live metric from feedback labels, beside the metric at registration."""

from __future__ import annotations

from modelci.monitor.live import live_metrics


def test_labels_pair_with_predictions_row_by_row() -> None:
    pairs = [([1, 0], ["1", "0"]), ([1, 1], [0, 1]), ([0] * 8, [0] * 8), ([1], [0, 1])]
    found = live_metrics(pairs, ["accuracy", "roc_auc", "f1"], {"accuracy": 0.95})
    by_name = {m.name: m for m in found}
    assert set(by_name) == {"accuracy", "f1"}  # AUC needs probabilities the log does not keep
    accuracy = by_name["accuracy"]
    assert accuracy.rows == 12 and accuracy.value == 11 / 12 and accuracy.registered == 0.95
    assert by_name["f1"].registered is None


def test_too_few_labels_say_nothing() -> None:
    assert live_metrics([([1], [1])] * 5, ["accuracy"], {}) == []


def test_regression_metrics() -> None:
    pairs = [([float(i)], [float(i) + 1.0]) for i in range(20)]
    (rmse,) = live_metrics(pairs, ["rmse"], {"rmse": 0.5})
    assert abs(rmse.value - 1.0) < 1e-12
