"""The weighted (fast) bootstrap against resampling rows and re-ranking them: the same
metric on every resample, the same intervals within Monte-Carlo error, and fast."""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pytest

from modelci.evaluate.bootstrap import (
    PairedData,
    bootstrap_weights,
    metric_value,
    paired_bootstrap_delta,
    paired_deltas,
)
from modelci.evaluate.compare import Predictions, compare

Array = npt.NDArray[np.float64]


def reranked_auc(y_pos: npt.NDArray[np.bool_], scores: Array) -> float:
    """The AUC of rows as given, from tied (average) ranks: Mann-Whitney."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end - 1) / 2.0 + 1.0
            start = end
    n_pos = float(y_pos.sum())
    n_neg = len(scores) - n_pos
    return float((ranks[y_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def direct(kind: str, y: npt.NDArray[np.int64], pred: npt.NDArray[np.int64], s: Array) -> float:
    """Each metric computed plainly on (resampled) rows."""
    if kind == "accuracy":
        return float(np.mean(pred == y))
    if kind == "f1":
        tp = np.sum((pred == 1) & (y == 1))
        fp = np.sum((pred == 1) & (y == 0))
        fn = np.sum((pred == 0) & (y == 1))
        return float(2 * tp / (2 * tp + fp + fn))
    if kind == "log_loss":
        return float(-np.mean(np.log(np.where(y == 1, s, 1 - s))))
    assert kind == "auc"
    return reranked_auc(y == 1, s)


def data(n: int, seed: int, *, levels: int | None) -> PairedData:
    """Two noisy classifiers; ``levels``: scores rounded to that many values (ties)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)

    def scores(noise: float) -> Array:
        p = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, noise, n), 0.02, 0.98)
        return np.clip(np.round(p * levels) / levels, 0.01, 0.99) if levels else p

    head, base = scores(0.25), scores(0.27)
    return PairedData(y, (head > 0.5).astype(np.int64), (base > 0.5).astype(np.int64), head, base)


def resampled_rows(data: PairedData, weights: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The rows a weight vector stands for: row i repeated weights[i] times, shuffled."""
    rows = np.repeat(np.arange(len(weights)), weights)
    return np.random.default_rng(0).permutation(rows)


@pytest.mark.parametrize("levels", [4, 30, None], ids=["4 values", "30 values", "continuous"])
def test_the_weighted_auc_is_exactly_the_reranked_auc_of_the_resampled_rows(
    levels: int | None,
) -> None:
    d = data(300, seed=1, levels=levels)
    if levels is None:  # continuous, but with a few ties between a positive and a negative
        assert d.head_scores is not None
        d.head_scores[:40] = d.head_scores[40:80]
    weights = bootstrap_weights(300, 6, seed=3).astype(np.int64)
    weights[0] = 1  # the full sample
    weights[1] = 0
    weights[1, :5] = 2  # a handful of rows only
    assert d.head_scores is not None and d.base_scores is not None
    deltas = paired_deltas("auc", d, weights)
    for w, delta in zip(weights, deltas, strict=True):
        rows = resampled_rows(d, w)
        y = d.y_true[rows] == 1
        if y.all() or not y.any():
            assert np.isnan(delta)
            continue
        expected = reranked_auc(y, d.head_scores[rows]) - reranked_auc(y, d.base_scores[rows])
        assert delta == expected  # exactly: whole-number sums, one rounding
    assert metric_value("auc", d, head=True) == reranked_auc(d.y_true == 1, d.head_scores)


@pytest.mark.parametrize("kind", ["accuracy", "f1", "log_loss"])
def test_weighted_metrics_equal_the_metric_of_the_resampled_rows(kind: str) -> None:
    for levels in (10, None):
        d = data(200, seed=2, levels=levels)
        assert d.head_scores is not None and d.base_scores is not None
        weights = bootstrap_weights(200, 5, seed=4).astype(np.int64)
        for w, delta in zip(weights, paired_deltas(kind, d, weights), strict=True):
            rows = resampled_rows(d, w)
            y = d.y_true[rows]
            expected = direct(kind, y, d.head_pred[rows], d.head_scores[rows]) - direct(
                kind, y, d.base_pred[rows], d.base_scores[rows]
            )
            assert delta == pytest.approx(expected, abs=1e-12)


def test_weights_must_be_counts() -> None:
    d = data(50, seed=5, levels=None)
    with pytest.raises(ValueError, match="whole numbers"):
        paired_deltas("accuracy", d, np.full((2, 50), 0.5))
    with pytest.raises(ValueError, match="whole numbers"):
        paired_deltas("accuracy", d, -np.ones((2, 50)))
    with pytest.raises(ValueError, match="shape"):
        paired_deltas("accuracy", d, np.ones((2, 49)))


def rowwise_interval(kind: str, d: PairedData, n_resamples: int, seed: int) -> tuple[float, ...]:
    """The interval the way it was computed before weights: draw n row indices with
    replacement, recompute (re-rank, for the AUC) on those rows. Also the spread."""
    assert d.head_scores is not None and d.base_scores is not None
    rng = np.random.default_rng(seed)
    n = len(d.y_true)
    deltas = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        y = d.y_true[idx]
        deltas.append(
            direct(kind, y, d.head_pred[idx], d.head_scores[idx])
            - direct(kind, y, d.base_pred[idx], d.base_scores[idx])
        )
    low, high = np.quantile(deltas, [0.025, 0.975])
    return float(low), float(high), float(np.std(deltas))


@pytest.mark.parametrize("kind", ["accuracy", "f1", "log_loss", "auc"])
@pytest.mark.parametrize("levels", [30, None], ids=["30 values", "continuous"])
def test_intervals_agree_with_resampling_rows_within_monte_carlo_error(
    kind: str, levels: int | None
) -> None:
    d = data(400, seed=6, levels=levels)
    low, high, spread = rowwise_interval(kind, d, 3000, seed=11)
    interval = paired_bootstrap_delta(kind, d, n_resamples=3000, seed=12)
    # With 3000 resamples each way, a 2.5% quantile differs between two
    # bootstraps by about 0.07 standard deviations of the delta: 0.25 is ~3.5x that.
    assert interval.low == pytest.approx(low, abs=0.25 * spread)
    assert interval.high == pytest.approx(high, abs=0.25 * spread)


def test_compare_of_four_metrics_on_2000_rows_takes_milliseconds() -> None:
    # The budget is 50 ms for 2,000 rows x 4 metrics x 2,000 resamples;
    # re-ranking every resample took about a second. The bound here leaves room
    # for a busy test machine.
    d = data(2000, seed=7, levels=30)
    assert d.head_scores is not None and d.base_scores is not None
    head = Predictions(d.y_true, d.head_pred, d.head_scores)
    base = Predictions(d.y_true, d.base_pred, d.base_scores)
    kinds = {"accuracy": "accuracy", "f1": "f1", "roc_auc": "auc", "log_loss": "log_loss"}

    def metrics(side: bool) -> dict[str, float]:
        return {name: metric_value(kind, d, head=side) for name, kind in kinds.items()}

    head_metrics, base_metrics = metrics(True), metrics(False)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        result = compare(
            head_metrics, base_metrics, [], head_predictions=head, base_predictions=base
        )
        timings.append(time.perf_counter() - started)
    assert all(m.interval is not None for m in result.metrics)
    assert min(timings) < 0.15
