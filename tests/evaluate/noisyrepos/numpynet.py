"""A small neural net in numpy (one hidden layer of 16, minibatch gradient descent): its seed
draws the initial weights and the order of the minibatches."""

from __future__ import annotations

import numpy as np
from common import scored, seed, write
from data import rows


def train(seed: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    x, y, x_eval, y_eval = rows()
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / np.sqrt(x.shape[1]), size=(x.shape[1], 16))
    b1 = np.zeros(16)
    w2 = rng.normal(0, 0.25, size=16)
    b2 = 0.0
    for _ in range(20):
        for batch in np.array_split(rng.permutation(len(x)), len(x) // 64):
            h = np.tanh(x[batch] @ w1 + b1)
            p = 1 / (1 + np.exp(-(h @ w2 + b2)))
            g = (p - y[batch]) / len(batch)  # d(log loss)/d(logit)
            gh = np.outer(g, w2) * (1 - h**2)
            w2 -= 0.3 * h.T @ g
            b2 -= 0.3 * g.sum()
            w1 -= 0.3 * x[batch].T @ gh
            b1 -= 0.3 * gh.sum(axis=0)
    p_eval = 1 / (1 + np.exp(-(np.tanh(x_eval @ w1 + b1) @ w2 + b2)))
    return scored(y_eval, p_eval)


if __name__ == "__main__":
    write(*train(seed()))
