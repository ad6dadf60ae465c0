"""Paired bootstrap confidence intervals for the change of a metric.

Head and base predicted the same evaluation rows. Resampling rows with
replacement, *the same rows for both* (that is what makes it paired), and
recomputing each metric on every resample gives the distribution of the
delta; its 2.5 and 97.5 percentiles are the 95% interval. Pairing removes the
variation both models share (hard rows stay hard in every resample), so the
interval is much narrower than comparing two independent intervals.

A resample is a vector of row weights: how many times each row is drawn. The
weights are Poisson(1) counts (the Poisson bootstrap: asymptotically the same
as drawing n rows with replacement, and each weight is drawn independently,
which makes drawing them a table lookup). Every metric is then a function of
weighted sums, computed for all resamples at once as matrix operations:

- means over rows (accuracy, log loss, Brier, MAE, ...) and the confusion
  counts behind precision, recall and F1 are one product ``weights @ rows``;
- the AUC sorts the scores once: for every positive row, the weight of the
  negatives below its score (plus half of those tied with it) is read from a
  cumulative sum of the negatives' weights in score order, so no resample is
  ever ranked again. Weights are whole numbers, so the sums are exact and the
  weighted AUC equals the tied-rank AUC of the resampled rows to the last bit.

Same inputs and seed give the same interval; within one comparison every
metric sees the same resamples (``Resamples`` draws them once).

For other resampling schemes (a two-level bootstrap that first picks a
training seed, then rows) the fast path is public: ``bootstrap_weights(n_rows,
n_resamples, seed=...)`` draws a ``(resamples x rows)`` weight matrix, any
non-negative whole-number weights will do, and ``paired_deltas(kind, data,
weights)`` returns metric(head) - metric(base) for each row of ``weights``
(NaN where the metric is undefined, e.g. a resample without positives).

Binary metrics (precision, recall, f1, AUC, log loss, Brier) take as the
positive class ``1`` (or ``True``) when present, else the larger label.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelci.errors import OutputError
from modelci.evaluate.metrics import name_tokens

__all__ = [
    "Interval",
    "PairedData",
    "Resamples",
    "bootstrap_weights",
    "metric_kind",
    "metric_value",
    "paired_bootstrap_delta",
    "paired_deltas",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.integer[Any]]
# Rows x resamples weights held at once: one byte each, and a few int32 work arrays.
_CHUNK_ELEMENTS = 8_000_000
_MIN_ROWS = 10
_MAX_GROUPS = 64
_EPS = 1e-15


def _poisson_table(bits: int = 16) -> npt.NDArray[np.uint8]:
    """Poisson(1) quantiles at the midpoints of ``2**bits`` equal slices of [0, 1).

    Looking a uniform 16-bit draw up in it gives a Poisson(1) count; each
    probability is off by less than 2**-16 and counts above 8 (p < 1e-6) never occur.
    """
    size = 1 << bits
    cdf = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])
    u = (np.arange(size) + 0.5) / size
    return np.searchsorted(cdf, u, side="right").astype(np.uint8)


_POISSON = _poisson_table()


def bootstrap_weights(
    n_rows: int, n_resamples: int, *, seed: int | np.random.Generator = 0
) -> npt.NDArray[np.uint8]:
    """A ``(n_resamples x n_rows)`` matrix of Poisson(1) row weights."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    draws = rng.integers(0, 1 << 16, size=(n_resamples, n_rows), dtype=np.uint16)
    weights: npt.NDArray[np.uint8] = np.take(_POISSON, draws)
    return weights


class _Weights:
    """One chunk of weights (whole-number counts, resamples x rows) and, computed
    once, each resample's total weight."""

    def __init__(self, counts: IntArray) -> None:
        self.counts = counts
        self._totals: FloatArray | None = None

    @property
    def sum_dtype(self) -> type[np.integer[Any]]:
        """The narrowest integer type that holds any sum of one resample's weights
        (narrow sums are the fast ones)."""
        top = float(self.totals.max(initial=0.0))
        return np.uint16 if top < 2**16 else np.int32 if top < 2**31 else np.int64

    @property
    def totals(self) -> FloatArray:
        if self._totals is None:
            self._totals = self.counts.sum(axis=1, dtype=np.int64).astype(np.float64)
        return self._totals


class Resamples:
    """The weights of ``n_resamples`` resamples of ``n_rows`` rows, drawn from ``seed``.

    Produced in chunks that bound memory; kept (and shared by every metric of a
    comparison) when they fit in one chunk, drawn again from the seed otherwise.
    """

    def __init__(self, n_rows: int, n_resamples: int = 2000, *, seed: int = 0) -> None:
        self.n_rows, self.n_resamples, self.seed = n_rows, n_resamples, seed
        self._kept: _Weights | None = None

    def _chunks(self) -> Iterator[_Weights]:
        if self._kept is not None:
            yield self._kept
            return
        rng = np.random.default_rng(self.seed)
        size = max(1, _CHUNK_ELEMENTS // max(1, self.n_rows))
        if size >= self.n_resamples:
            self._kept = _Weights(bootstrap_weights(self.n_rows, self.n_resamples, seed=rng))
            yield self._kept
            return
        for start in range(0, self.n_resamples, size):
            count = min(size, self.n_resamples - start)
            yield _Weights(bootstrap_weights(self.n_rows, count, seed=rng))


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


def _few_groups(stats: FloatArray) -> tuple[FloatArray, IntArray] | None:
    """The distinct rows of ``stats`` and each row's group, if there are few of them."""
    code = np.zeros(len(stats), dtype=np.int64)
    for column in stats.T:
        values, inverse = np.unique(column, return_inverse=True)
        if len(values) > _MAX_GROUPS:
            return None
        code = code * len(values) + inverse.reshape(-1)
        # Renumber so codes stay below _MAX_GROUPS ** 2 however many columns.
        _, code = np.unique(code, return_inverse=True)
        code = code.reshape(-1)
        if code.max(initial=0) >= _MAX_GROUPS:
            return None
    first = np.unique(code, return_index=True)[1]
    return stats[first], code


def _group_sums(
    keys: FloatArray, w: _Weights, *, skip_zero: bool = False
) -> tuple[FloatArray, IntArray] | None:
    """The distinct rows of ``keys`` (in lexicographic order) and, per resample, the
    weight of each one's rows; None when there are too many distinct rows.

    ``skip_zero``: leave out rows of ``keys`` that are all zero (they add nothing
    to a weighted sum), which spares reading their weights.
    """
    rows = np.flatnonzero(keys.any(axis=1)) if skip_zero else np.arange(len(keys))
    grouped = _few_groups(keys[rows])
    if grouped is None:
        return None
    distinct, group = grouped
    if len(distinct) == 0:
        return np.zeros((0, keys.shape[1])), np.zeros((w.counts.shape[0], 0), dtype=np.int64)
    order = rows[np.argsort(group, kind="stable")]
    starts = np.searchsorted(np.sort(group), np.arange(len(distinct)))
    taken = np.take(w.counts, order, axis=1)
    sums = np.add.reduceat(taken, starts, axis=1, dtype=w.sum_dtype).astype(np.int64)
    return distinct, sums


def _weighted_means(stats: FloatArray, w: _Weights) -> FloatArray:
    """The weighted mean of each column of ``stats`` (rows x k), per resample."""
    grouped = _group_sums(stats, w, skip_zero=True)
    if grouped is not None:
        # Labels (and scores of few values) make few distinct rows: the weights
        # of each group's rows in one pass, then a tiny product.
        distinct, per_group = grouped
        sums = per_group.astype(np.float64) @ distinct
    else:
        # einsum: one pass over the weights per column, on one core (a threaded
        # BLAS product spins on a busy machine and first copies the weights).
        sums = np.stack([np.einsum("ij,j->i", w.counts, col) for col in stats.T], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means: FloatArray = sums / w.totals[:, None]
    return means


def _auc(twice_wins: IntArray, n_pos: IntArray, n_neg: IntArray) -> FloatArray:
    # Whole numbers below 2**53: both products and the halving are exact, so the
    # one rounding is the division's, as in the rank-sum formula.
    with np.errstate(invalid="ignore", divide="ignore"):
        auc: FloatArray = (twice_wins.astype(np.float64) * 0.5) / (
            n_pos.astype(np.float64) * n_neg.astype(np.float64)
        )
    return auc


def _weighted_auc(
    y_pos: npt.NDArray[np.bool_], scores: FloatArray, w: _Weights, w_pos: IntArray | None = None
) -> FloatArray:
    """The AUC of each resample (row of ``w``): a positive scored above a negative
    wins, a tie counts one half, as with tied ranks in the Mann-Whitney statistic.

    ``w_pos``: the weights' columns of the positive rows, when already taken.
    """
    grouped = _group_sums(np.stack([scores, y_pos.astype(np.float64)], axis=1), w)
    if grouped is not None:
        # Few distinct scores (a forest's votes): per score, the weight of its
        # positives P and negatives N; a positive wins over the negatives below
        # and ties with N, so twice its wins are 2 * (negatives up to it) - N.
        distinct, per_group = grouped
        value = np.unique(distinct[:, 0], return_inverse=True)[1].reshape(-1)
        is_pos = distinct[:, 1] == 1.0
        pos = np.zeros((per_group.shape[0], value.max() + 1), dtype=np.int64)
        neg = np.zeros_like(pos)
        pos[:, value[is_pos]] = per_group[:, is_pos]
        neg[:, value[~is_pos]] = per_group[:, ~is_pos]
        twice = (pos * (2 * np.cumsum(neg, axis=1) - neg)).sum(axis=1)
        return _auc(twice, pos.sum(axis=1), neg.sum(axis=1))
    counts = w.counts
    pos_idx = np.flatnonzero(y_pos)
    neg_idx = np.flatnonzero(~y_pos)
    neg_order = neg_idx[np.argsort(scores[neg_idx], kind="stable")]
    neg_sorted = scores[neg_order]
    lo = np.searchsorted(neg_sorted, scores[pos_idx], side="left")
    hi = np.searchsorted(neg_sorted, scores[pos_idx], side="right")
    if w_pos is None:
        w_pos = np.take(counts, pos_idx, axis=1)
    # Integer sums are exact; int32 unless twice a total times a weight could overflow it.
    big = 2 * float(w.totals.max(initial=0.0)) * float(counts.max(initial=0))
    wide = np.int64 if big >= 2**31 else np.int32
    # below[:, k]: weight of the k lowest-scored negatives.
    below = np.zeros((counts.shape[0], len(neg_order) + 1), dtype=wide)
    np.cumsum(np.take(counts, neg_order, axis=1), axis=1, dtype=wide, out=below[:, 1:])
    # Twice the wins: twice the negatives strictly below each positive, plus
    # the tied ones (only the tied positives need the second lookup).
    at_lo = np.take(below, lo, axis=1)
    at_lo *= w_pos
    twice = 2 * at_lo.sum(axis=1, dtype=np.int64)
    tied = np.flatnonzero(hi > lo)
    if len(tied):
        gap = np.take(below, hi[tied], axis=1) - np.take(below, lo[tied], axis=1)
        twice += (gap * np.take(w_pos, tied, axis=1)).sum(axis=1, dtype=np.int64)
    return _auc(twice, w_pos.sum(axis=1, dtype=np.int64), below[:, -1].astype(np.int64))


def _side_metric(kind: str, data: PairedData, head: bool, w: _Weights) -> FloatArray:
    if kind == "auc":
        pos = data.y_true == _positive(data.y_true)
        scores = _binary_scores(data.head_scores if head else data.base_scores, kind)
        return _weighted_auc(np.asarray(pos, dtype=bool), scores, w)
    stats, finish = _row_stats(kind, data, head)
    means = _weighted_means(stats, w)
    return means[:, 0] if finish is None else finish(means)


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


def _deltas(kind: str, data: PairedData, w: _Weights) -> FloatArray:
    if kind == "auc":
        pos = np.asarray(data.y_true == _positive(data.y_true), dtype=bool)
        head_s = _binary_scores(data.head_scores, kind)
        base_s = _binary_scores(data.base_scores, kind)
        # The positives' weights are the same on both sides: taken once.
        w_pos = np.take(w.counts, np.flatnonzero(pos), axis=1)
        return _weighted_auc(pos, head_s, w, w_pos) - _weighted_auc(pos, base_s, w, w_pos)
    head, head_finish = _row_stats(kind, data, True)
    base, base_finish = _row_stats(kind, data, False)
    if head_finish is None and base_finish is None:
        # A difference of means is the mean of the differences: one pass.
        return _weighted_means(head - base, w)[:, 0]
    means = _weighted_means(np.hstack([head, base]), w)
    k = head.shape[1]
    h, b = means[:, :k], means[:, k:]
    return (h[:, 0] if head_finish is None else head_finish(h)) - (
        b[:, 0] if base_finish is None else base_finish(b)
    )


def paired_deltas(kind: str, data: PairedData, weights: npt.ArrayLike) -> FloatArray:
    """metric(head) - metric(base) under each row of ``weights`` (resamples x rows).

    Weights are per-row counts: non-negative whole numbers, of any numeric
    dtype. NaN where the metric is undefined on a resample.
    """
    n = _validate(data)
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights must have shape (resamples, {n}), not {w.shape}")
    counts = w.astype(np.int64) if not np.issubdtype(w.dtype, np.integer) else w
    if (counts < 0).any() or not np.array_equal(counts, w):
        raise ValueError("weights must be non-negative whole numbers (counts of each row)")
    return _deltas(kind, data, _Weights(counts))


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
    estimate = float(_deltas(kind, data, _full_sample(n))[0])
    values = np.concatenate([_deltas(kind, data, w) for w in resamples._chunks()])
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
    return float(_side_metric(kind, data, head, _full_sample(len(data.y_true)))[0])


def _full_sample(n: int) -> _Weights:
    """The full sample: every row once."""
    return _Weights(np.ones((1, n), dtype=np.int64))
