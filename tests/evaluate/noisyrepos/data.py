"""The rows every noisy repository trains and evaluates on: fixed, generated from seed 0.

A binary task with some features that interact and labels that are partly noise,
so that models reach about 85-90% accuracy and the hard rows are many: what
makes a model's score move with its training seed.
"""

from __future__ import annotations

import numpy as np

TRAIN_ROWS, EVAL_ROWS, FEATURES = 4000, 2000, 12


def rows() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(TRAIN_ROWS + EVAL_ROWS, FEATURES))
    logit = 1.5 * x[:, 0] - x[:, 1] + 0.8 * x[:, 2] * x[:, 3] + np.sin(2 * x[:, 4]) + 0.5 * x[:, 5]
    y = (logit + rng.logistic(scale=0.3, size=len(x)) > 0).astype(np.int64)
    return x[:TRAIN_ROWS], y[:TRAIN_ROWS], x[TRAIN_ROWS:], y[TRAIN_ROWS:]
