"""What every noisy repository writes: metrics.json and predictions.json, as modelci reads them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score


def seed() -> int:
    return int(os.environ.get("MODELCI_SEED", "0"))


def scored(y: np.ndarray, p: np.ndarray) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Accuracy, f1, ROC AUC and log loss of positive-class probabilities ``p``, and the
    per-row predictions that reproduce them (clipped: a forest's 0 and 1 would make the
    log loss infinite)."""
    p = np.clip(p, 1e-3, 1 - 1e-3)
    pred = (p >= 0.5).astype(np.int64)
    metrics = {
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred)),
        "roc_auc": float(roc_auc_score(y, p)),
        "log_loss": float(log_loss(y, p)),
    }
    return metrics, {"y_true": y.tolist(), "y_pred": pred.tolist(), "scores": p.tolist()}


def write(
    metrics: dict[str, float], predictions: dict[str, list[float]], out: Path = Path()
) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "predictions.json").write_text(json.dumps(predictions))
