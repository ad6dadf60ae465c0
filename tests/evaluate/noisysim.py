"""Synthetic seed-noisy trainings: per-seed predictions of a classifier on fixed rows.

Each row has a fixed difficulty (the part every training shares); each seed adds
a shift common to all rows (a different forest is better or worse overall) and
noise per row (borderline rows flip), as a random forest's seeds do.
"""

from __future__ import annotations

import numpy as np

from modelci.evaluate.compare import Predictions
from modelci.evaluate.noise import SeedRun

ROWS = 2000


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
        name: metric_value(kind, data, head=True)
        for name, kind in (
            ("accuracy", "accuracy"),
            ("f1", "f1"),
            ("roc_auc", "auc"),
            ("log_loss", "log_loss"),
        )
        if auc or kind != "auc"
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
