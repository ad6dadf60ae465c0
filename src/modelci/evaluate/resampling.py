"""Bootstrap resamples as row weights, and metrics as weighted sums over them.

A resample is a vector of row weights: how many times each row is drawn.
The weights are Poisson(1) counts (the Poisson bootstrap: asymptotically the
same as drawing n rows with replacement; each weight is drawn on its own,
which makes drawing them a table lookup). A metric is then a function of
weighted sums, computed for all resamples at once without ever re-ranking or
copying a resample's rows:

- a mean of per-row statistics: rows with the same statistics (labels make a
  handful of kinds of rows) are summed as one group; otherwise one pass over
  the weights per statistic;
- the AUC sorts the scores once: each positive's wins are the weight of the
  negatives below its score plus half of those tied with it, read from a
  cumulative sum of the negatives' weights in score order. Weights are whole
  numbers, so every sum is exact and the AUC equals the tied-rank AUC of the
  resampled rows to the last bit.

Work is planned once per (metric, data) (sorting, grouping), then run on the
weights of all resamples at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Resamples", "Weights", "auc_plan", "bootstrap_weights", "means_plan"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.integer[Any]]
# Weights drawn and held at once (one byte each): bounds memory for large sets.
_CHUNK_ELEMENTS = 8_000_000
# Below this many resamples, numpy's cumulative sum down the rows beats a loop over rows.
_LOOP_CUMSUM_MIN_RESAMPLES = 256
_MAX_GROUPS = 64


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


def _draw(n_rows: int, n_resamples: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Poisson(1) weights laid out rows x resamples (see ``Weights``)."""
    # The generator's raw 64-bit output cut in four: three times faster than integers().
    size = n_resamples * n_rows
    raw = rng.bit_generator.random_raw(-(-size // 4))
    draws = np.asarray(raw, dtype=np.uint64).view(np.uint16)[:size]
    weights: npt.NDArray[np.uint8] = np.take(_POISSON, draws).reshape(n_rows, n_resamples)
    return weights


def bootstrap_weights(
    n_rows: int, n_resamples: int, *, seed: int | np.random.Generator = 0
) -> npt.NDArray[np.uint8]:
    """A ``(n_resamples x n_rows)`` matrix of Poisson(1) row weights.

    It is the transpose of a row-major ``(n_rows x n_resamples)`` array, the
    layout the computations use, so handing it back costs no copy.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return _draw(n_rows, n_resamples, rng).T


def _holding(top: int, *, unsigned: bool = False) -> type[np.integer[Any]]:
    """The narrowest integer type (of those fast to sum into) that holds ``top``."""
    if unsigned and top < 2**16:
        return np.uint16
    return np.int32 if top < 2**31 else np.int64


class Weights:
    """Resamples' weights, whole-number counts laid out rows x resamples, and,
    computed once, each resample's total.

    Rows x resamples: picking rows (in score order, by group) copies contiguous
    runs, and sums over rows add whole runs at a time.
    """

    def __init__(self, by_row: IntArray) -> None:
        self.by_row = by_row
        self._totals: IntArray | None = None
        self._largest: int | None = None

    @property
    def n_resamples(self) -> int:
        return int(self.by_row.shape[1])

    @property
    def totals(self) -> IntArray:
        if self._totals is None:
            self._totals = self.by_row.sum(axis=0, dtype=np.int64)
        return self._totals

    @property
    def sum_dtype(self) -> type[np.integer[Any]]:
        """The narrowest integer type that holds any sum of one resample's weights
        (narrow sums are the fast ones)."""
        return _holding(int(self.totals.max(initial=0)), unsigned=True)

    @property
    def largest(self) -> int:
        if self._largest is None:
            self._largest = int(self.by_row.max(initial=0))
        return self._largest

    def rows(self, index: npt.NDArray[np.intp]) -> IntArray:
        taken: IntArray = np.take(self.by_row, index, axis=0)
        return taken


class Resamples:
    """The weights of ``n_resamples`` resamples of ``n_rows`` rows, drawn from ``seed``.

    Produced in chunks that bound memory; kept (and shared by every metric of a
    comparison) when they fit in one chunk, drawn again from the seed otherwise.
    """

    def __init__(self, n_rows: int, n_resamples: int = 2000, *, seed: int = 0) -> None:
        self.n_rows, self.n_resamples, self.seed = n_rows, n_resamples, seed
        self._kept: Weights | None = None

    def chunks(self) -> Iterator[Weights]:
        if self._kept is not None:
            yield self._kept
            return
        rng = np.random.default_rng(self.seed)
        size = max(1, _CHUNK_ELEMENTS // max(1, self.n_rows))
        if size >= self.n_resamples:
            self._kept = Weights(_draw(self.n_rows, self.n_resamples, rng))
            yield self._kept
            return
        for start in range(0, self.n_resamples, size):
            count = min(size, self.n_resamples - start)
            yield Weights(_draw(self.n_rows, count, rng))


def _few_groups(keys: FloatArray) -> tuple[FloatArray, IntArray] | None:
    """The distinct rows of ``keys`` (lexicographic order) and each row's group,
    if there are at most _MAX_GROUPS of them."""
    code = np.zeros(len(keys), dtype=np.int64)
    for column in keys.T:
        values, inverse = np.unique(column, return_inverse=True)
        if len(values) > _MAX_GROUPS:
            return None
        code = code * len(values) + inverse.reshape(-1)
        # Renumbered so codes stay below _MAX_GROUPS ** 2 however many columns.
        code = np.unique(code, return_inverse=True)[1].reshape(-1)
        if code.max(initial=0) >= _MAX_GROUPS:
            return None
    first = np.unique(code, return_index=True)[1]
    return keys[first], code


GroupSums = Callable[[Weights], IntArray]


def _group_sums_plan(
    keys: FloatArray, *, skip_zero: bool = False
) -> tuple[FloatArray, GroupSums] | None:
    """The distinct rows of ``keys`` (lexicographic order) and how to get, per
    resample, the weight of each one's rows; None when there are too many.

    ``skip_zero``: leave out rows of ``keys`` that are all zero (they add nothing
    to a weighted sum), which spares reading their weights.
    """
    rows = np.flatnonzero(keys.any(axis=1)) if skip_zero else np.arange(len(keys))
    grouped = _few_groups(keys[rows])
    if grouped is None:
        return None
    distinct, group = grouped
    order = rows[np.argsort(group, kind="stable")]
    starts = np.searchsorted(np.sort(group), np.arange(len(distinct))).tolist()
    bounds = list(zip(starts, [*starts[1:], len(order)][: len(starts)], strict=True))

    def run(w: Weights) -> IntArray:
        """Group x resamples sums."""
        taken = w.rows(order)
        dtype = w.sum_dtype
        sums = np.zeros((len(distinct), w.n_resamples), dtype=np.int64)
        for g, (start, end) in enumerate(bounds):
            sums[g] = taken[start:end].sum(axis=0, dtype=dtype)
        return sums

    return distinct, run


def means_plan(stats: FloatArray) -> Callable[[Weights], FloatArray]:
    """How to get the weighted mean of each column of ``stats`` (rows x k) per
    resample (resamples x k)."""
    grouped = _group_sums_plan(stats, skip_zero=True)
    if grouped is not None:
        distinct, group_sums = grouped

        def sums(w: Weights) -> FloatArray:
            # Few distinct rows (labels, or scores of few values): the weight of
            # each group's rows, then a tiny product.
            out: FloatArray = group_sums(w).T.astype(np.float64) @ distinct
            return out
    else:

        def sums(w: Weights) -> FloatArray:
            # einsum: one pass per column, on one core (a threaded BLAS product
            # spins on a busy machine, and first converts the weights to float).
            return np.stack([np.einsum("jr,j->r", w.by_row, c) for c in stats.T], axis=1)

    def run(w: Weights) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore"):
            means: FloatArray = sums(w) / w.totals.astype(np.float64)[:, None]
        return means

    return run


def _auc(twice_wins: IntArray, n_pos: IntArray, n_neg: IntArray) -> FloatArray:
    # Whole numbers below 2**53: products and halving are exact, so the one
    # rounding is the division's, as in the rank-sum formula.
    with np.errstate(invalid="ignore", divide="ignore"):
        auc: FloatArray = (twice_wins.astype(np.float64) * 0.5) / (
            n_pos.astype(np.float64) * n_neg.astype(np.float64)
        )
    return auc


AucRun = Callable[[Weights, IntArray | None], FloatArray]


def _cumsum_rows(rows: IntArray, dtype: type[np.integer[Any]]) -> IntArray:
    """``below[k]``: the sum of the first k rows, for k = 0 .. len(rows)."""
    below = np.empty((rows.shape[0] + 1, rows.shape[1]), dtype=dtype)
    below[0] = 0
    if rows.shape[1] < _LOOP_CUMSUM_MIN_RESAMPLES:
        np.cumsum(rows, axis=0, dtype=dtype, out=below[1:])
        return below
    # numpy's cumulative sum down a row-major array strides across it; adding
    # row after row reads it in order, three times faster for long rows.
    for k in range(rows.shape[0]):
        np.add(below[k], rows[k], out=below[k + 1])
    return below


def auc_plan(y_pos: npt.NDArray[np.bool_], scores: FloatArray) -> tuple[AucRun, bool]:
    """How to get each resample's AUC: a positive scored above a negative wins, a
    tie counts one half (tied ranks in the Mann-Whitney statistic).

    The plan runs on weights and on their rows of the positives
    (``w.rows(np.flatnonzero(y_pos))``, the same for head and base), which it
    needs when the returned flag is true and ignores otherwise.
    """
    grouped = _group_sums_plan(np.stack([scores, y_pos.astype(np.float64)], axis=1))
    if grouped is not None:
        # Few distinct scores (a forest's votes): per score, the weight of its
        # positives P and negatives N; a positive wins over the negatives below
        # and ties with N, so twice its wins are 2 * (negatives up to it) - N.
        distinct, group_sums = grouped
        value = np.unique(distinct[:, 0], return_inverse=True)[1].reshape(-1)
        is_pos = distinct[:, 1] == 1.0
        n_values = int(value.max(initial=-1)) + 1

        def few(w: Weights, _: IntArray | None) -> FloatArray:
            per_group = group_sums(w)
            pos = np.zeros((n_values, w.n_resamples), dtype=np.int64)
            neg = np.zeros_like(pos)
            pos[value[is_pos]] = per_group[is_pos]
            neg[value[~is_pos]] = per_group[~is_pos]
            twice = (pos * (2 * np.cumsum(neg, axis=0) - neg)).sum(axis=0)
            return _auc(twice, pos.sum(axis=0), neg.sum(axis=0))

        return few, False
    neg_idx = np.flatnonzero(~y_pos)
    neg_order = neg_idx[np.argsort(scores[neg_idx], kind="stable")]
    pos_scores = scores[np.flatnonzero(y_pos)]
    lo = np.searchsorted(scores[neg_order], pos_scores, side="left")
    hi = np.searchsorted(scores[neg_order], pos_scores, side="right")
    tied = np.flatnonzero(hi > lo)

    def many(w: Weights, w_pos: IntArray | None) -> FloatArray:
        assert w_pos is not None
        total = int(w.totals.max(initial=0))
        # below[k]: the weight of the k lowest-scored negatives.
        below = _cumsum_rows(w.rows(neg_order), _holding(total, unsigned=True))
        # Twice the wins: twice the negatives strictly below each positive, plus
        # the tied ones (only tied positives need that second lookup). Sums in
        # the narrowest type that holds them exactly: a weight times a total, and
        # positives times negatives (at most total**2 / 4).
        product = _holding(2 * w.largest * total)
        wins = np.multiply(np.take(below, lo, axis=0), w_pos, dtype=product)
        twice = 2 * wins.sum(axis=0, dtype=_holding(total * total // 4)).astype(np.int64)
        if len(tied):
            gap = np.take(below, hi[tied], axis=0).astype(product) - np.take(
                below, lo[tied], axis=0
            )
            twice += (gap * np.take(w_pos, tied, axis=0)).sum(axis=0, dtype=np.int64)
        return _auc(twice, w_pos.sum(axis=0, dtype=np.int64), below[-1].astype(np.int64))

    return many, True
