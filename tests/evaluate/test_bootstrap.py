"""The paired bootstrap against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from modelci.errors import OutputError
from modelci.evaluate.bootstrap import PairedData, metric_kind, metric_value, paired_bootstrap_delta


def classification(n: int, base_acc: float, gain: float, seed: int) -> PairedData:
    """Head is right wherever base is, and on ``gain * n`` more rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    base = np.where(rng.random(n) < base_acc, y, 1 - y)
    head = base.copy()
    fix = np.flatnonzero(base != y)[: round(gain * n)]
    head[fix] = y[fix]
    return PairedData(y, head, base)


def test_identical_predictions_give_exactly_zero() -> None:
    data = classification(500, 0.8, 0.0, seed=1)
    interval = paired_bootstrap_delta("accuracy", data, n_resamples=500)
    assert (interval.low, interval.high, interval.estimate) == (0.0, 0.0, 0.0)


def test_a_clear_improvement_excludes_zero_and_covers_the_truth() -> None:
    data = classification(1000, 0.7, 0.2, seed=2)
    interval = paired_bootstrap_delta("accuracy", data)
    assert interval.estimate == pytest.approx(0.2)
    assert 0 < interval.low < 0.2 < interval.high


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    data = classification(300, 0.7, 0.05, seed=3)
    a = paired_bootstrap_delta("accuracy", data, seed=7)
    assert a == paired_bootstrap_delta("accuracy", data, seed=7)
    assert a != paired_bootstrap_delta("accuracy", data, seed=8)


def test_width_matches_the_analytic_paired_standard_error() -> None:
    # Discordant pairs b (head right only) and c (base right only) give the
    # paired SE of the accuracy delta: sqrt(b + c - (b - c)^2 / n) / n.
    rng = np.random.default_rng(4)
    n = 2000
    y = rng.integers(0, 2, n)
    base = np.where(rng.random(n) < 0.75, y, 1 - y)
    head = np.where(rng.random(n) < 0.78, y, 1 - y)
    b = int(((head == y) & (base != y)).sum())
    c = int(((head != y) & (base == y)).sum())
    se = np.sqrt(b + c - (b - c) ** 2 / n) / n
    interval = paired_bootstrap_delta("accuracy", PairedData(y, head, base), n_resamples=4000)
    assert (interval.high - interval.low) / (2 * 1.96) == pytest.approx(se, rel=0.1)


def test_coverage_is_about_95_percent() -> None:
    # Rows are drawn from a population where head's accuracy is 0.80 and base's
    # 0.75 (independent errors): the true delta is 0.05.
    rng = np.random.default_rng(5)
    trials, n, covered = 200, 400, 0
    for trial in range(trials):
        y = rng.integers(0, 2, n)
        head = np.where(rng.random(n) < 0.80, y, 1 - y)
        base = np.where(rng.random(n) < 0.75, y, 1 - y)
        interval = paired_bootstrap_delta(
            "accuracy", PairedData(y, head, base), n_resamples=400, seed=trial
        )
        covered += interval.low <= 0.05 <= interval.high
    assert 0.89 <= covered / trials <= 0.995


def test_auc_equals_brute_force_with_ties() -> None:
    rng = np.random.default_rng(6)
    n = 300
    y = rng.integers(0, 2, n)
    head_s = np.round(np.clip(y * 0.4 + rng.random(n) * 0.6, 0, 1), 1)  # many ties
    base_s = np.round(rng.random(n), 1)
    data = PairedData(y, (head_s > 0.5).astype(int), (base_s > 0.5).astype(int), head_s, base_s)

    def brute(s: np.ndarray) -> float:
        p, q = s[y == 1], s[y == 0]
        wins = (p[:, None] > q[None, :]).sum() + 0.5 * (p[:, None] == q[None, :]).sum()
        return float(wins / (len(p) * len(q)))

    assert metric_value("auc", data, head=True) == pytest.approx(brute(head_s))
    interval = paired_bootstrap_delta("auc", data, n_resamples=300)
    assert interval.estimate == pytest.approx(brute(head_s) - brute(base_s))
    assert interval.low < interval.estimate < interval.high


def test_regression_metrics_known_values() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0] * 5)
    head = y + np.array([0.5, -0.5] * 10)
    base = y + np.array([1.0, -1.0] * 10)
    data = PairedData(y, head, base)
    assert metric_value("mae", data, head=True) == pytest.approx(0.5)
    assert metric_value("rmse", data, head=False) == pytest.approx(1.0)
    assert metric_value("mse", data, head=False) == pytest.approx(1.0)
    assert metric_value("r2", data, head=True) == pytest.approx(1 - 0.25 / 1.25)
    interval = paired_bootstrap_delta("mae", data, n_resamples=200)
    assert interval.low == interval.high == pytest.approx(-0.5)  # every row improves by 0.5


def test_binary_metrics_known_values() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0])
    pred = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 0])
    data = PairedData(y, pred, pred)
    assert metric_value("precision", data, head=True) == pytest.approx(3 / 4)
    assert metric_value("recall", data, head=True) == pytest.approx(3 / 5)
    assert metric_value("f1", data, head=True) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))


def test_names_map_to_kinds() -> None:
    assert metric_kind("val_accuracy") == "accuracy"
    assert metric_kind("roc_auc") == "auc"
    assert metric_kind("test.f1_score") == "f1"
    assert metric_kind("log_loss") == "log_loss"
    assert metric_kind("loss") is None  # ambiguous: no interval
    assert metric_kind("epochs") is None


def test_bad_inputs_are_clear_errors() -> None:
    y = np.arange(20) % 2
    with pytest.raises(OutputError, match="different lengths"):
        paired_bootstrap_delta("accuracy", PairedData(y, y[:10], y))
    with pytest.raises(OutputError, match="at least"):
        paired_bootstrap_delta("accuracy", PairedData(y[:5], y[:5], y[:5]))
    with pytest.raises(OutputError, match="needs scores"):
        paired_bootstrap_delta("auc", PairedData(y, y, y))
