"""Paired bootstrap confidence intervals for the change of a metric.

Head and base predicted the same evaluation rows. Resampling rows with
replacement, *the same rows for both* (that is what makes it paired), and
recomputing each metric on every resample gives the distribution of the
delta; its 2.5 and 97.5 percentiles are the 95% interval. Pairing removes the
variation both models share (hard rows stay hard in every resample), so the
interval is much narrower than comparing two independent intervals.

Everything is vectorised: one ``(resamples x rows)`` index matrix, drawn once
from a seeded generator, is applied to per-row arrays, in chunks that bound
memory. Same inputs and seed give the same interval.

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

__all__ = ["Interval", "PairedData", "metric_kind", "metric_value", "paired_bootstrap_delta"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_CHUNK_ELEMENTS = 20_000_000
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


# A metric kind maps (paired data) to per-row statistics whose resampled sums
# give the metric; each kind is (row statistics, finish(sums over rows)).
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
    return scores


def _row_stats(
    kind: str, data: PairedData, head: bool
) -> tuple[list[FloatArray], Callable[[list[FloatArray], FloatArray | None], FloatArray]]:
    """Per-row arrays for one side, and how to turn resampled means into the metric."""
    y = data.y_true
    pred = data.head_pred if head else data.base_pred
    scores = data.head_scores if head else data.base_scores

    def mean0(m: list[FloatArray], _: FloatArray | None) -> FloatArray:
        return m[0]

    if kind in ("accuracy", "error_rate"):
        correct = (pred == y).astype(np.float64)
        if kind == "error_rate":
            return [1.0 - correct], mean0
        return [correct], mean0
    if kind in ("precision", "recall", "f1"):
        pos = _positive(y)
        t, p = (y == pos), (pred == pos)
        tp, fp, fn = (
            (t & p).astype(np.float64),
            (~t & p).astype(np.float64),
            (t & ~p).astype(np.float64),
        )

        def finish(m: list[FloatArray], _: FloatArray | None) -> FloatArray:
            tp_, fp_, fn_ = m
            with np.errstate(invalid="ignore", divide="ignore"):
                if kind == "precision":
                    out = tp_ / (tp_ + fp_)
                elif kind == "recall":
                    out = tp_ / (tp_ + fn_)
                else:
                    out = 2 * tp_ / (2 * tp_ + fp_ + fn_)
            return np.nan_to_num(out, nan=0.0)

        return [tp, fp, fn], finish
    if kind in ("log_loss", "brier"):
        s = _binary_scores(scores, kind)
        t = (y == _positive(y)).astype(np.float64)
        if kind == "brier":
            return [(s - t) ** 2], mean0
        p = np.clip(np.where(t == 1.0, s, 1.0 - s), _EPS, 1.0)
        return [-np.log(p)], mean0
    if kind in ("mae", "mse", "rmse", "r2"):
        yt, yp = y.astype(np.float64), pred.astype(np.float64)
        err = yp - yt
        if kind == "mae":
            return [np.abs(err)], mean0
        if kind == "mse":
            return [err**2], mean0
        if kind == "rmse":
            return [err**2], lambda m, _: np.sqrt(m[0])

        def r2(m: list[FloatArray], _: FloatArray | None) -> FloatArray:
            sse, y1, y2 = m
            sst = y2 - y1**2  # mean of squares minus square of mean, per resample
            with np.errstate(invalid="ignore", divide="ignore"):
                return 1.0 - sse / sst

        return [err**2, yt, yt**2], r2
    raise ValueError(kind)


def _auc_rows(y_pos: npt.NDArray[np.bool_], scores: FloatArray, idx: IntArray) -> FloatArray:
    """AUC of every resample (row of ``idx``) by the Mann-Whitney statistic with tied ranks."""
    s = scores[idx]
    t = y_pos[idx]
    order = np.argsort(s, axis=1, kind="stable")
    v = np.take_along_axis(s, order, axis=1)
    n = s.shape[1]
    pos = np.broadcast_to(np.arange(n), s.shape)
    new = np.ones_like(v, dtype=bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    end = np.ones_like(v, dtype=bool)
    end[:, :-1] = new[:, 1:]
    first = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(end, pos, n), axis=1), axis=1), axis=1)
    ranks = np.empty_like(v)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    n_pos = t.sum(axis=1).astype(np.float64)
    n_neg = n - n_pos
    rank_sum = np.where(t, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc: FloatArray = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return auc


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


def paired_bootstrap_delta(
    kind: str, data: PairedData, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """The percentile interval of metric(head) - metric(base) over paired resamples."""
    n = _validate(data)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    deltas: list[FloatArray] = []
    full = np.arange(n)[None, :]
    if kind == "auc":
        pos = data.y_true == _positive(data.y_true)
        head_s = _binary_scores(data.head_scores, kind)
        base_s = _binary_scores(data.base_scores, kind)

        def delta(idx: IntArray) -> FloatArray:
            return _auc_rows(pos, head_s, idx) - _auc_rows(pos, base_s, idx)
    else:
        head_rows, head_finish = _row_stats(kind, data, head=True)
        base_rows, base_finish = _row_stats(kind, data, head=False)

        def delta(idx: IntArray) -> FloatArray:
            head = head_finish([r[idx].mean(axis=1) for r in head_rows], None)
            base = base_finish([r[idx].mean(axis=1) for r in base_rows], None)
            return head - base

    estimate = float(delta(full)[0])
    remaining = n_resamples
    while remaining > 0:
        size = min(chunk, remaining)
        deltas.append(delta(rng.integers(0, n, size=(size, n))))
        remaining -= size
    values = np.concatenate(deltas)
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
    full = np.arange(len(data.y_true))[None, :]
    if kind == "auc":
        pos = data.y_true == _positive(data.y_true)
        scores = _binary_scores(data.head_scores if head else data.base_scores, kind)
        return float(_auc_rows(pos, scores, full)[0])
    rows, finish = _row_stats(kind, data, head=head)
    return float(finish([r[full].mean(axis=1) for r in rows], None)[0])
