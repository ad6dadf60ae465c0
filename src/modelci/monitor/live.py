"""The live metric: the scoring metrics on served rows whose true labels came back.

Feedback (``serving.feedback``) names a request; its labels pair with that
request's predictions row by row. Per window, each of the version's scoring
metrics that needs only labels and predictions (accuracy, f1, rmse, …; not
AUC, which needs probabilities the log does not keep) is computed on the
labelled rows and set beside its value at registration (the ``scoring``
dataset's), so a model that still looks fine on paper but has stopped being
right in production shows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelci.errors import OutputError
from modelci.evaluate.bootstrap import SCORE_KINDS, PairedData, metric_kind, metric_value

__all__ = ["LiveMetric", "live_metrics"]

MIN_LABELLED = 10  # fewer labelled rows than this: too few to say anything


@dataclass(frozen=True)
class LiveMetric:
    name: str
    value: float
    registered: float | None  # on the scoring dataset when the version was registered
    rows: int  # labelled rows it was computed on

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "registered": self.registered,
            "labelled_rows": self.rows,
        }


def live_metrics(
    pairs: Iterable[tuple[Any, Any]],
    metrics: Iterable[str],
    registered: Mapping[str, float],
) -> list[LiveMetric]:
    """``pairs``: (a request's outputs, its labels). Requests whose label count does not
    match their rows are left out (feedback checks it when the prediction is stored)."""
    truth: list[Any] = []
    predicted: list[Any] = []
    for outputs, labels in pairs:
        outputs = outputs if isinstance(outputs, list) else [outputs]
        if isinstance(labels, list) and len(labels) == len(outputs):
            truth.extend(labels)
            predicted.extend(outputs)
    if len(truth) < MIN_LABELLED:
        return []
    y_true, y_pred = _aligned(truth, predicted)
    data = PairedData(y_true, y_pred, y_pred, None, None)
    found = []
    for name in metrics:
        kind = metric_kind(name)
        if kind is None or kind in SCORE_KINDS:
            continue
        try:
            value = metric_value(kind, data, head=True)
        except (OutputError, ValueError):
            continue  # e.g. a binary metric over one class so far
        found.append(LiveMetric(name, value, registered.get(name), len(truth)))
    return found


def _aligned(truth: list[Any], predicted: list[Any]) -> tuple[np.ndarray[Any, Any], ...]:
    """Labels sent as "1" for a model that predicts 1 still match: both sides become
    numbers when both can, else both strings."""
    try:
        return np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray([str(v) for v in truth]), np.asarray([str(v) for v in predicted])
