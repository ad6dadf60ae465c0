"""Logistic regression by SGD with shuffling, a few epochs: its seed orders the rows."""

from __future__ import annotations

from common import scored, seed, write
from data import rows
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import PolynomialFeatures, StandardScaler


def train(seed: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    x, y, x_eval, y_eval = rows()
    expand = PolynomialFeatures(degree=2, include_bias=False).fit(x)
    scale = StandardScaler().fit(expand.transform(x))
    features = scale.transform(expand.transform(x))
    model = SGDClassifier(
        loss="log_loss", alpha=1e-3, shuffle=True, max_iter=10, tol=None, random_state=seed
    )
    model.fit(features, y)
    return scored(y_eval, model.predict_proba(scale.transform(expand.transform(x_eval)))[:, 1])


if __name__ == "__main__":
    write(*train(seed()))
