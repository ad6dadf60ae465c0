"""A numeric column kept in bounded size: sorted buckets of (low, high, count, sum).

A reference with at most ``MAX_BUCKETS`` distinct values is kept exactly, one
bucket per value (low == high): every test then sees the reference itself. A
larger one keeps its ``TAIL`` smallest and largest values exactly and splits
the rest into ``BUCKETS`` buckets of equal count, each with its low, high and
sum. That is what the normed Wasserstein distance needs: it is the integral
of |Q_ref(u) - Q_cur(u)| over the quantile level u, and over a bucket where the
current quantile function stays on one side of the bucket's [low, high] the
integral is |sum(current over that range) - bucket sum| / n, exact. Only the
buckets the two quantile functions cross in add an error, and that error is
bounded (``wasserstein`` returns the bound); a one-value bucket they cross in
is integrated exactly. Measured on 1,000,000 reference rows against 100,000
current ones (README, "Data drift"): the score is exact to 1e-13 once the data
has shifted, and within 1e-5 of scipy's exact value when it has not (8e-5 for a
Pareto tail); a sketched column takes about 90 KiB of the profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BUCKETS", "MAX_BUCKETS", "TAIL", "NumericSketch"]

BUCKETS = 2048
TAIL = 512
MAX_BUCKETS = BUCKETS + 2 * TAIL


@dataclass(frozen=True)
class NumericSketch:
    """Buckets sorted by value. ``exact``: one bucket per distinct value."""

    low: np.ndarray  # float64
    high: np.ndarray  # float64
    count: np.ndarray  # int64
    total: np.ndarray  # float64: the sum of the bucket's values
    exact: bool

    @property
    def rows(self) -> int:
        return int(self.count.sum())

    @classmethod
    def of(cls, values: np.ndarray, *, buckets: int = BUCKETS, tail: int = TAIL) -> NumericSketch:
        """The sketch of finite float64 values (at least one)."""
        ordered = np.sort(values)
        starts = np.flatnonzero(np.diff(ordered)) + 1
        if len(starts) + 1 <= buckets + 2 * tail:
            first = np.concatenate([[0], starts])
            distinct = ordered[first]
            counts = np.diff(np.append(first, len(ordered))).astype(np.int64)
            return cls(distinct, distinct.copy(), counts, distinct * counts, exact=True)
        n = len(ordered)
        middle = np.linspace(tail, n - tail, buckets + 1).round().astype(np.int64)
        bounds = np.concatenate([np.arange(tail), middle, np.arange(n - tail + 1, n + 1)])
        sums = np.concatenate([[0.0], np.cumsum(ordered)])
        return cls(
            ordered[bounds[:-1]],
            ordered[bounds[1:] - 1],
            np.diff(bounds),
            sums[bounds[1:]] - sums[bounds[:-1]],
            exact=False,
        )

    def values(self) -> np.ndarray:
        """The reference as a sample: exact, or each bucket's count spread evenly over
        [low, high] (an approximation only the tests Evidently does not pick by default
        use on a large reference: KS and histograms of many distinct values)."""
        if self.exact:
            return np.repeat(self.low, self.count)
        parts = [
            np.linspace(lo, hi, int(k))
            for lo, hi, k in zip(self.low, self.high, self.count, strict=True)
        ]
        return np.concatenate(parts)

    def cdf_counts(self, points: np.ndarray) -> np.ndarray:
        """How many reference values lie at or below each point (buckets spread evenly)."""
        points = np.asarray(points, dtype=np.float64)
        width = self.high - self.low
        with np.errstate(divide="ignore", invalid="ignore"):
            inside = np.where(
                width[None, :] > 0,
                (points[:, None] - self.low[None, :]) / width[None, :],
                (points[:, None] >= self.low[None, :]).astype(np.float64),
            )
        counted: np.ndarray = (np.clip(inside, 0.0, 1.0) * self.count[None, :]).sum(axis=1)
        return counted

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Counts per bin of ``edges`` (values outside counted in the end bins)."""
        if self.exact:
            clipped = np.clip(self.low, edges[0], edges[-1])
            counts, _ = np.histogram(clipped, bins=edges, weights=self.count)
            return counts.astype(np.float64)
        at = self.cdf_counts(edges[1:-1])
        cumulative = np.concatenate([[0.0], at, [float(self.rows)]])
        return np.diff(cumulative)


def wasserstein(sketch: NumericSketch, current_sorted: np.ndarray) -> tuple[float, float]:
    """W1 between the reference and a sorted current sample, and a bound on its error.

    Both quantile functions are integrated bucket by bucket over the reference's
    quantile levels; see the module docstring for why that is exact where the two
    do not cross inside a bucket. A bucket of one value that they cross in is
    integrated exactly too, so an exact sketch gives the exact distance.
    """
    cur = current_sorted
    m = len(cur)
    n = sketch.rows
    levels = np.concatenate([[0], np.cumsum(sketch.count)]) / n
    cumulative = np.concatenate([[0.0], np.cumsum(cur)])
    position = levels * m
    whole = np.minimum(np.floor(position).astype(np.int64), m)
    part = position - whole
    following = cur[np.minimum(whole, m - 1)]
    integral = (cumulative[whole] + part * following) / m
    difference = np.abs(np.diff(integral) - sketch.total / n)
    first = np.minimum(whole[:-1], m - 1)
    last = np.clip(np.ceil(position[1:]).astype(np.int64) - 1, 0, m - 1)
    crossed = ~((cur[last] <= sketch.low) | (cur[first] >= sketch.high))
    single = sketch.low == sketch.high
    for index in np.flatnonzero(crossed & single):
        difference[index] = _single_value_integral(
            cur, float(sketch.low[index]), position[index], position[index + 1]
        )
    open_buckets = crossed & ~single
    bound = float(
        np.sum(2.0 * (sketch.high - sketch.low)[open_buckets] * sketch.count[open_buckets]) / n
    )
    return float(difference.sum()), bound


def _single_value_integral(cur: np.ndarray, value: float, start: float, stop: float) -> float:
    """The integral of |Q_cur(u) - value| over u in [start/m, stop/m]; Q_cur(u) is
    cur[j] on (j/m, (j+1)/m]."""
    m = len(cur)
    lo = int(np.floor(start))
    hi = min(int(np.ceil(stop)), m)
    index = np.arange(lo, hi)
    overlap = np.minimum(stop, index + 1) - np.maximum(start, index)
    return float(np.sum(np.abs(cur[lo:hi] - value) * np.clip(overlap, 0.0, None)) / m)
