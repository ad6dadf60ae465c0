"""Metrics as the repository writes them: flattening and default directions.

Nested keys are joined with dots, as ``dvc metrics show`` does, so
``{"test": {"acc": 0.9}}`` is the metric ``test.acc``. Direction defaults come
from the metric's name (its last dotted part, split on ``_`` and ``-``).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from modelci.errors import OutputError

__all__ = ["Direction", "default_direction", "flatten_metrics", "name_tokens"]

Direction = Literal["higher", "lower"]

_HIGHER = {
    "accuracy",
    "acc",
    "f1",
    "f1score",
    "auc",
    "rocauc",
    "prauc",
    "auroc",
    "auprc",
    "precision",
    "recall",
    "r2",
    "map",
    "ndcg",
    "bleu",
    "rouge",
    "rouge1",
    "rouge2",
    "rougel",
    "iou",
    "miou",
    "dice",
    "balancedaccuracy",
    "mcc",
    "kappa",
    "specificity",
    "sensitivity",
    "top1",
    "top5",
    "topk",
    "hitrate",
    "mrr",
    "ap",
    "averageprecision",
    "explainedvariance",
}
_LOWER = {
    "loss",
    "error",
    "err",
    "rmse",
    "mse",
    "mae",
    "mape",
    "smape",
    "logloss",
    "perplexity",
    "cer",
    "wer",
    "brier",
    "latency",
    "nll",
    "crossentropy",
    "hamming",
    "errorrate",
}
_MAX_METRICS = 100_000


def name_tokens(name: str) -> list[str]:
    """The lower-cased words of a metric's last dotted part (``val_f1_score`` → val, f1, score)."""
    last = name.rsplit(".", 1)[-1].lower()
    return [t for t in re.split(r"[_\-\s/]+", last) if t]


def default_direction(name: str) -> Direction | None:
    """Higher- or lower-is-better for common metric names, else None (informational)."""
    tokens = name_tokens(name)
    joined = "".join(tokens)
    # Whole name first (roc_auc, log_loss, f1_score), then the words from the end,
    # so "val_loss" is lower and "loss_improvement"-like names stay unknown.
    for candidate in (joined, *("".join(tokens[i:]) for i in range(1, len(tokens)))):
        if candidate in _LOWER:
            return "lower"
        if candidate in _HIGHER:
            return "higher"
    for token in reversed(tokens):
        if token in _LOWER:
            return "lower"
        if token in _HIGHER:
            return "higher"
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None  # True is an int to Python, but "ok": true is no measurement
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
        except ValueError:
            return None
    return None


def _shown(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def flatten_metrics(data: Any, *, source: str) -> dict[str, float]:
    """``{name: number}`` from a metrics document.

    A leaf that is not a number (a word, null, a boolean) is an error naming its
    key: skipping it would report the metric as missing, a regression, when the
    file itself is what needs fixing. NaN and infinities are kept: the comparison
    gives them their own verdict.
    """
    if not isinstance(data, dict):
        raise OutputError(
            f"{source} holds a {type(data).__name__}, not an object of metrics",
            hint='write a JSON object of metric names to numbers, e.g. {"accuracy": 0.93}',
        )
    out: dict[str, float] = {}
    bad: list[str] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        prefix, value = stack.pop()
        if isinstance(value, dict):
            items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
            stack.extend(reversed(items))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{prefix}.{i}", v) for i, v in enumerate(value)]))
        else:
            number = _number(value)
            if number is None:
                bad.append(f"{prefix} is {_shown(value)}")
            else:
                out[prefix] = number
        if len(out) + len(bad) > _MAX_METRICS:
            raise OutputError(
                f"{source} holds more than {_MAX_METRICS} metrics",
                hint="write summary metrics, not per-example values",
            )
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise OutputError(
            f"{source}: metric values must be numbers, but {'; '.join(bad[:5])}{more}",
            hint='write each metric as a JSON number, e.g. {"accuracy": 0.93}; keep labels, '
            "flags and missing values out of the metrics file",
        )
    return out
