"""A random forest of 30 trees: its seed picks the bootstrap rows and split features."""

from __future__ import annotations

import numpy as np
from common import scored, seed, write
from data import rows
from sklearn.ensemble import RandomForestClassifier


def train(seed: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    x, y, x_eval, y_eval = rows()
    model = RandomForestClassifier(n_estimators=30, min_samples_leaf=2, random_state=seed, n_jobs=1)
    model.fit(x, y)
    return scored(y_eval, model.predict_proba(x_eval)[:, 1].astype(np.float64))


if __name__ == "__main__":
    write(*train(seed()))
