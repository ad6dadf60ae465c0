"""Paired bootstrap confidence intervals for the change of a metric.

Head and base predicted the same evaluation rows. Resampling rows with
replacement, *the same rows for both* (that is what makes it paired), and
recomputing each metric on every resample gives the distribution of the
delta; its 2.5 and 97.5 percentiles are the 95% interval. Pairing removes the
variation both models share (hard rows stay hard in every resample), so the
interval is much narrower than comparing two independent intervals.

The resamples are row weights, and each metric a weighted sum over them,
computed for all resamples at once (``evaluate.resampling``: Poisson weights,
groups of like rows, the AUC from one sort of the scores, exact to the bit
against re-ranking the resampled rows). Same inputs and seed give the same
interval; within one comparison every metric sees the same resamples
(``Resamples`` draws them once).

For other resampling schemes (a two-level bootstrap that first picks a
training seed, then rows) the fast path is public: ``bootstrap_weights(n_rows,
n_resamples, seed=...)`` draws a ``(resamples x rows)`` weight matrix (any
non-negative whole-number weights will do), and ``paired_deltas(kind, data,
weights)`` (``kind`` from ``metric_kind(name)``, ``data`` the two sides'
predictions on the same rows) returns metric(head) - metric(base) for each
row of ``weights`` (NaN where the metric is undefined, e.g. a resample
without positives). For 2,000 rows and 2,000 resamples that is a few
milliseconds per metric.

Binary metrics (precision, recall, f1, AUC, log loss, Brier) take as the
positive class ``1`` (or ``True``) when present, else the larger label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelci.errors import OutputError
from modelci.evaluate.metrics import name_tokens
from modelci.evaluate.resampling import (
    Resamples,
    Weights,
    auc_plan,
    bootstrap_weights,
    means_plan,
)

__all__ = [
    "KNOWN_METRICS",
    "SCORE_KINDS",
    "Interval",
    "PairedData",
    "Resamples",
    "bootstrap_weights",
    "metric_kind",
    "metric_value",
    "paired_bootstrap_delta",
    "paired_deltas",
    "resampled_values",
]

FloatArray = npt.NDArray[np.float64]
Plan = Callable[[Weights], FloatArray]
_MIN_ROWS = 10
_EPS = 1e-15


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    estimate: float  # the delta on the full sample
    confidence: float = 0.95

    def contains_zero(self) -> bool:
        return self.low <= 0.0 <= self.high


@dataclass(frozen=True)
class PairedData:
    """Per-row arrays for head and base on the same rows."""

    y_true: npt.NDArray[np.generic]
    head_pred: npt.NDArray[np.generic]
    base_pred: npt.NDArray[np.generic]
    head_scores: FloatArray | None = None
    base_scores: FloatArray | None = None


_KINDS: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy", "acc", "balancedaccuracy"),
    "error_rate": ("errorrate", "error", "err"),
    "precision": ("precision",),
    "recall": ("recall", "sensitivity", "tpr"),
    "f1": ("f1", "f1score"),
    "auc": ("auc", "rocauc", "auroc"),
    "log_loss": ("logloss", "crossentropy", "nll"),
    "brier": ("brier", "brierscore"),
    "mae": ("mae", "meanabsoluteerror"),
    "mse": ("mse", "meansquarederror"),
    "rmse": ("rmse", "rootmeansquarederror"),
    "r2": ("r2", "r2score"),
}

# The kinds above, by their usual names (for messages), and those computed from
# scores (the positive class's probability) rather than predicted labels.
KNOWN_METRICS = tuple(_KINDS)
SCORE_KINDS = frozenset({"auc", "log_loss", "brier"})


def metric_kind(name: str) -> str | None:
    """Which per-example computation a metric name calls for, if any."""
    tokens = name_tokens(name)
    joined = "".join(tokens)
    if joined == "balancedaccuracy":
        return None  # not a mean over rows: no per-row form here
    candidates = [joined, *("".join(tokens[i:]) for i in range(1, len(tokens))), *tokens]
    for candidate in candidates:
        for kind, names in _KINDS.items():
            if candidate in names:
                return kind
    return None


def _positive(y_true: npt.NDArray[np.generic]) -> object:
    labels = np.unique(y_true)
    if len(labels) > 2:
        raise OutputError(
            "binary metrics need two classes, and y_true has more",
            hint="report micro/macro metrics yourself; modelci gives intervals "
            "for binary metrics and accuracy",
        )
    for candidate in (1, True):
        if any(label == candidate for label in labels.tolist()):
            return candidate
    return labels.max()


def _binary_scores(scores: FloatArray | None, what: str) -> FloatArray:
    if scores is None:
        raise OutputError(f"{what} needs scores", hint="write 'scores' in the predictions file")
    if scores.ndim == 2:
        if scores.shape[1] != 2:
            raise OutputError(f"{what} needs binary scores", hint="write one column per class")
        scores = scores[:, 1]
    if not np.isfinite(scores).all():
        raise OutputError(
            f"{what}: some scores are NaN or infinite",
            hint="write a finite probability for every row",
        )
    return scores


# How a metric follows from the weighted means of its row statistics (one row
# per resample); None for the plain mean of a single statistic.
Finish = Callable[[FloatArray], FloatArray] | None


def _row_stats(kind: str, data: PairedData, head: bool) -> tuple[FloatArray, Finish]:
    """Per-row statistics (one column each) for one side, and how the metric follows
    from their weighted means."""
    y = data.y_true
    pred = data.head_pred if head else data.base_pred
    scores = data.head_scores if head else data.base_scores
    if kind in ("accuracy", "error_rate"):
        correct = (pred == y).astype(np.float64)
        return (1.0 - correct if kind == "error_rate" else correct)[:, None], None
    if kind in ("precision", "recall", "f1"):
        pos = _positive(y)
        t, p = (y == pos), (pred == pos)
        counts = np.stack([t & p, ~t & p, t & ~p], axis=1).astype(np.float64)

        def finish(m: FloatArray) -> FloatArray:
            tp, fp, fn = m[:, 0], m[:, 1], m[:, 2]
            with np.errstate(invalid="ignore", divide="ignore"):
                if kind == "precision":
                    out = tp / (tp + fp)
                elif kind == "recall":
                    out = tp / (tp + fn)
                else:
                    out = 2 * tp / (2 * tp + fp + fn)
            return np.nan_to_num(out, nan=0.0)

        return counts, finish
    if kind in ("log_loss", "brier"):
        s = _binary_scores(scores, kind)
        t = (y == _positive(y)).astype(np.float64)
        if kind == "brier":
            return ((s - t) ** 2)[:, None], None
        p = np.clip(np.where(t == 1.0, s, 1.0 - s), _EPS, 1.0)
        return (-np.log(p))[:, None], None
    if kind in ("mae", "mse", "rmse", "r2"):
        yt, yp = y.astype(np.float64), pred.astype(np.float64)
        err = yp - yt
        if kind == "mae":
            return np.abs(err)[:, None], None
        if kind == "mse":
            return (err**2)[:, None], None
        if kind == "rmse":
            return (err**2)[:, None], lambda m: np.sqrt(m[:, 0])
        # Centred: the variance as mean of squares minus squared mean would
        # cancel catastrophically for targets far from zero.
        yc = yt - yt.mean()

        def r2(m: FloatArray) -> FloatArray:
            sst = m[:, 2] - m[:, 1] ** 2
            with np.errstate(invalid="ignore", divide="ignore"):
                out: FloatArray = 1.0 - m[:, 0] / sst
            return out

        return np.stack([err**2, yc, yc**2], axis=1), r2
    raise ValueError(kind)


def _validate(data: PairedData) -> int:
    n = len(data.y_true)
    if len(data.head_pred) != n or len(data.base_pred) != n:
        raise OutputError(
            "head and base predictions have different lengths",
            hint="predict every evaluation row, in the same order, on both commits",
        )
    if n < _MIN_ROWS:
        raise OutputError(
            f"predictions cover only {n} rows; intervals need at least {_MIN_ROWS}",
            hint="write predictions for the whole evaluation set",
        )
    return n


def _finished(finish: Finish, means: FloatArray) -> FloatArray:
    return means[:, 0] if finish is None else finish(means)


def _auc_inputs(data: PairedData) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
    pos = np.asarray(data.y_true == _positive(data.y_true), dtype=bool)
    return pos, np.flatnonzero(pos)


def _delta_plan(kind: str, data: PairedData) -> Plan:
    """How to get metric(head) - metric(base) per resample; the sorting and
    grouping done once."""
    if kind == "auc":
        pos, pos_idx = _auc_inputs(data)
        head_auc, head_needs = auc_plan(pos, _binary_scores(data.head_scores, kind))
        base_auc, base_needs = auc_plan(pos, _binary_scores(data.base_scores, kind))

        def auc_delta(w: Weights) -> FloatArray:
            # The positives' weights are the same on both sides: taken once.
            w_pos = w.rows(pos_idx) if head_needs or base_needs else None
            return head_auc(w, w_pos) - base_auc(w, w_pos)

        return auc_delta
    head, head_finish = _row_stats(kind, data, True)
    base, base_finish = _row_stats(kind, data, False)
    if head_finish is None and base_finish is None:
        # A difference of means is the mean of the differences: one pass.
        mean_delta = means_plan(head - base)
        return lambda w: mean_delta(w)[:, 0]
    both = means_plan(np.hstack([head, base]))
    k = head.shape[1]

    def delta(w: Weights) -> FloatArray:
        means = both(w)
        return _finished(head_finish, means[:, :k]) - _finished(base_finish, means[:, k:])

    return delta


def _side_plan(kind: str, data: PairedData, head: bool) -> Plan:
    if kind == "auc":
        pos, pos_idx = _auc_inputs(data)
        side, _ = auc_plan(
            pos, _binary_scores(data.head_scores if head else data.base_scores, kind)
        )
        return lambda w: side(w, w.rows(pos_idx))
    stats, finish = _row_stats(kind, data, head)
    means = means_plan(stats)
    return lambda w: _finished(finish, means(w))


def _full_sample(n: int) -> Weights:
    """Every row once."""
    return Weights(np.ones((n, 1), dtype=np.uint8))


def _counts(weights: npt.ArrayLike, n: int) -> Weights:
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights must have shape (resamples, {n}), not {w.shape}")
    counts = w.astype(np.int64) if not np.issubdtype(w.dtype, np.integer) else w
    if (counts < 0).any() or not np.array_equal(counts, w):
        raise ValueError("weights must be non-negative whole numbers (counts of each row)")
    # Transposed: a view, row-major again for weights from bootstrap_weights().
    return Weights(counts.T)


def paired_deltas(kind: str, data: PairedData, weights: npt.ArrayLike) -> FloatArray:
    """metric(head) - metric(base) under each row of ``weights`` (resamples x rows).

    Weights are per-row counts: non-negative whole numbers, of any numeric
    dtype. NaN where the metric is undefined on a resample.
    """
    n = _validate(data)
    return _delta_plan(kind, data)(_counts(weights, n))


def resampled_values(
    kind: str, data: PairedData, weights: npt.ArrayLike, *, head: bool = True
) -> FloatArray:
    """metric(head) (or metric(base)) alone under each row of ``weights``: for
    schemes that pair more than two models on the same rows (several seeds a side)."""
    n = _validate(data)
    return _side_plan(kind, data, head)(_counts(weights, n))


def paired_bootstrap_delta(
    kind: str,
    data: PairedData,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: Resamples | None = None,
) -> Interval:
    """The percentile interval of metric(head) - metric(base) over paired resamples.

    ``resamples`` shares one draw between metrics; by default it is drawn from ``seed``.
    """
    n = _validate(data)
    if resamples is None:
        resamples = Resamples(n, n_resamples, seed=seed)
    elif resamples.n_rows != n:
        raise ValueError(f"resamples of {resamples.n_rows} rows for data of {n}")
    plan = _delta_plan(kind, data)
    estimate = float(plan(_full_sample(n))[0])
    values = np.concatenate([plan(w) for w in resamples.chunks()])
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise OutputError(
            f"the {kind} delta is undefined on every resample",
            hint="check that the predictions contain both classes",
        )
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high), estimate, confidence)


def metric_value(kind: str, data: PairedData, *, head: bool) -> float:
    """The metric on the full sample for one side (to check it matches the reported one)."""
    return float(_side_plan(kind, data, head)(_full_sample(len(data.y_true)))[0])
