"""Log loss and Brier score intervals: from the predictions' ``scores``, covering the true
difference on synthetic data whose answer is known."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from modelci.evaluate.bootstrap import PairedData, metric_value, paired_bootstrap_delta
from modelci.evaluate.compare import compare, predictions_from_json

# Head predicts the true probability; base the same, shrunk halfway towards 0.5. Both
# predict the same labels (shrinking never crosses 0.5), so only the scores differ.
SHRINK = 0.5


def _population(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    return rng.beta(0.7, 0.7, n)  # the true P(y = 1) of each row, often confident


def _scores(p: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
    return p, 0.5 + SHRINK * (p - 0.5)


def _expected_loss(kind: str, p: npt.NDArray[np.float64], s: npt.NDArray[np.float64]) -> float:
    """The metric's expectation over y ~ Bernoulli(p), for scores s: no sampling of y."""
    s = np.clip(s, 1e-15, 1 - 1e-15)
    if kind == "brier":
        return float(np.mean(p * (1 - s) ** 2 + (1 - p) * s**2))
    return float(np.mean(-(p * np.log(s) + (1 - p) * np.log(1 - s))))


def _true_delta(kind: str) -> float:
    # Averaged over a million rows of the population, the sampling error is ~1e-4.
    p = _population(np.random.default_rng(12345), 1_000_000)
    head, base = _scores(p)
    return _expected_loss(kind, p, head) - _expected_loss(kind, p, base)


def _sample(seed: int, n: int) -> PairedData:
    rng = np.random.default_rng(seed)
    p = _population(rng, n)
    y = (rng.random(n) < p).astype(np.int64)
    head, base = _scores(p)
    labels = (head > 0.5).astype(np.int64)
    assert np.array_equal(labels, (base > 0.5).astype(np.int64))
    return PairedData(y, labels, labels.copy(), head, base)


@pytest.mark.parametrize("kind", ["log_loss", "brier"])
def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time(kind: str) -> None:
    truth = _true_delta(kind)
    assert truth < 0  # calibrated scores are better, for both proper scoring rules
    trials, covered = 100, 0
    for trial in range(trials):
        interval = paired_bootstrap_delta(kind, _sample(trial, 300), n_resamples=400, seed=trial)
        covered += interval.low <= truth <= interval.high
    assert 0.88 <= covered / trials <= 1.0


@pytest.mark.parametrize("kind", ["log_loss", "brier"])
def test_the_interval_comes_from_the_scores_not_the_labels(kind: str) -> None:
    data = _sample(7, 2000)
    interval = paired_bootstrap_delta(kind, data)
    # The labels are identical: any difference comes from the scores.
    assert interval.high < 0
    head = metric_value(kind, data, head=True)
    base = metric_value(kind, data, head=False)
    assert interval.estimate == pytest.approx(head - base)
    s, t = data.head_scores, data.y_true
    assert s is not None
    direct = np.mean((s - t) ** 2) if kind == "brier" else -np.mean(np.log(np.where(t, s, 1 - s)))
    assert head == pytest.approx(direct)
    # Swap the scores: the interval mirrors, the labels unchanged.
    swapped = PairedData(data.y_true, data.head_pred, data.base_pred, data.base_scores, s)
    mirrored = paired_bootstrap_delta(kind, swapped)
    assert (mirrored.low, mirrored.high) == pytest.approx((-interval.high, -interval.low))


def test_a_comparison_reports_score_intervals_from_the_predictions_file() -> None:
    data = _sample(8, 1000)
    assert data.head_scores is not None and data.base_scores is not None

    def as_json(scores: npt.NDArray[np.float64]) -> dict[str, list[float]]:
        return {
            "y_true": data.y_true.tolist(),
            "y_pred": data.head_pred.tolist(),
            "scores": scores.tolist(),
        }

    head = predictions_from_json(as_json(data.head_scores), source="predictions.json")
    base = predictions_from_json(as_json(data.base_scores), source="predictions.json")
    metrics = {
        side: {k: metric_value(k, data, head=side == "head") for k in ("log_loss", "brier")}
        for side in ("head", "base")
    }
    result = compare(
        {"log_loss": metrics["head"]["log_loss"], "brier_score": metrics["head"]["brier"]},
        {"log_loss": metrics["base"]["log_loss"], "brier_score": metrics["base"]["brier"]},
        [],
        head_predictions=head,
        base_predictions=base,
    )
    rows = {m.name: m for m in result.metrics}
    for name in ("log_loss", "brier_score"):
        assert rows[name].verdict == "improved"
        interval = rows[name].interval
        assert interval is not None and interval.high < 0
