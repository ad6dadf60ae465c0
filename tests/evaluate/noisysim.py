"""Seed-noisy trainings: per-seed predictions of a classifier on fixed rows.

``runs`` simulates them: each row has a fixed difficulty (the part every training
shares); each seed adds a shift common to all rows (a different forest is better
or worse overall) and noise per row (borderline rows flip), as a random forest's
seeds do. ``trained_runs`` trains the real ones in ``noisyrepos/`` (a forest, SGD
with shuffling, a numpy neural net), once per seed; ``dropped`` makes a run one
accuracy point worse.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelci.evaluate.compare import Predictions
from modelci.evaluate.noise import SeedRun, compare_repeated

ROWS = 2000
NOISY_REPOS = Path(__file__).resolve().parent / "noisyrepos"
METRICS = (("accuracy", "accuracy"), ("f1", "f1"), ("roc_auc", "auc"), ("log_loss", "log_loss"))


def population(rng: np.random.Generator, rows: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Labels and each row's shared logit of the true class (about 89% accuracy)."""
    y = rng.integers(0, 2, size=rows)
    margin = rng.normal(2.0, 1.6, size=rows)
    return y, margin


def training(
    y: np.ndarray, margin: np.ndarray, seed_rng: np.random.Generator, *, flipped: int = 0
) -> Predictions:
    """One training's predictions; ``flipped`` correct predictions are made wrong."""
    shift = seed_rng.normal(0.0, 0.02)
    logit = margin + shift + seed_rng.normal(0.0, 0.3, size=len(y))
    p_true = 1.0 / (1.0 + np.exp(-logit))
    scores = np.where(y == 1, p_true, 1.0 - p_true)
    if flipped:
        right = np.flatnonzero((scores >= 0.5) == (y == 1))
        chosen = seed_rng.choice(right, size=flipped, replace=False)
        scores[chosen] = 1.0 - scores[chosen]
    y_pred = (scores >= 0.5).astype(np.int64)
    return Predictions(y, y_pred, scores)


def metrics_of(p: Predictions, *, auc: bool = True) -> dict[str, float]:
    from modelci.evaluate.bootstrap import PairedData, metric_value

    data = PairedData(p.y_true, p.y_pred, p.y_pred, p.scores, p.scores)
    return {
        name: metric_value(kind, data, head=True) for name, kind in METRICS if auc or kind != "auc"
    }


def runs(
    y: np.ndarray,
    margin: np.ndarray,
    seeds: list[int],
    *,
    salt: int,
    flipped: int = 0,
    auc: bool = True,
) -> list[SeedRun]:
    out = []
    for seed in seeds:
        p = training(y, margin, np.random.default_rng([salt, seed]), flipped=flipped)
        out.append(SeedRun(seed, metrics_of(p, auc=auc), p))
    return out


def trained_runs(training: str, seeds: range) -> list[SeedRun]:
    """``noisyrepos/<training>.py`` trained once per seed, in this process (as its
    ``train.py`` would in a sandbox): the metrics it reports, checked against modelci's."""
    if str(NOISY_REPOS) not in sys.path:
        sys.path.insert(0, str(NOISY_REPOS))
    module = __import__(training)
    out = []
    for seed in seeds:
        reported, raw = module.train(seed)
        p = Predictions(
            np.asarray(raw["y_true"]), np.asarray(raw["y_pred"]), np.asarray(raw["scores"])
        )
        metrics = metrics_of(p)
        if any(abs(metrics[k] - reported[k]) > 1e-6 for k in metrics):
            raise AssertionError(
                f"{training}: modelci reads {metrics}, the script reports {reported}"
            )
        out.append(SeedRun(seed, metrics, p))
    return out


def dropped(run: SeedRun, rng: np.random.Generator, *, flipped: int = 20) -> SeedRun:
    """The same model with ``flipped`` of its correct predictions made wrong (20 of 2,000
    rows: one accuracy point)."""
    p = run.predictions
    assert p is not None and p.scores is not None
    right = np.flatnonzero(p.y_pred == p.y_true)
    chosen = rng.choice(right, size=flipped, replace=False)
    y_pred, scores = p.y_pred.copy(), p.scores.copy()
    y_pred[chosen] = 1 - y_pred[chosen]
    scores[chosen] = 1.0 - scores[chosen]
    worse = Predictions(p.y_true, y_pred, scores)
    return SeedRun(run.seed, metrics_of(worse), worse)


@dataclass
class PairRates:
    """Counts over simulated pull requests: seed-only ones, and one-point drops."""

    pairs: int = 0
    noop_failed: int = 0  # the gate failed on a seed-only change
    regressed: dict[str, int] = field(default_factory=lambda: {name: 0 for name, _ in METRICS})
    caught: int = 0  # the gate failed on the drop
    caught_by_accuracy: int = 0  # accuracy itself was "regressed" on the drop


def simulate_pairs(
    runs: list[SeedRun],
    per_side: int,
    pairs: int,
    rng: np.random.Generator,
    *,
    n_resamples: int,
    into: PairRates | None = None,
) -> PairRates:
    """``pairs`` pull requests, each with distinct seeds of ``runs`` for base and head
    (``per_side`` each), compared as an evaluation does; the drop is the head's runs
    made one accuracy point worse (``dropped``)."""
    out = into or PairRates()
    for i in range(pairs):
        chosen = rng.choice(len(runs), size=2 * per_side, replace=False)
        base = [runs[j] for j in chosen[:per_side]]
        head = [runs[j] for j in chosen[per_side:]]
        noop = compare_repeated(head, base, [], n_resamples=n_resamples, seed=i)
        out.noop_failed += not noop.passed
        for row in noop.regressions:
            out.regressed[row.name] += 1
        worse = [dropped(run, rng) for run in head]
        regressions = compare_repeated(worse, base, [], n_resamples=n_resamples, seed=i).regressions
        out.caught += bool(regressions)
        out.caught_by_accuracy += any(row.name == "accuracy" for row in regressions)
        out.pairs += 1
    return out
