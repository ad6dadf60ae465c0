"""The statistical tests, as Evidently 0.7 computes them (the only scipy import).

Each follows Evidently's own function (``evidently.legacy.calculations.stattests``),
formula for formula, so the scores agree to rounding:

    ks            scipy.stats.ks_2samp p-value          drift when p <= threshold (0.05)
    chisquare     scipy.stats.chisquare p-value, the     drift when p < threshold (0.05)
                  reference counts scaled to the
                  current total as expected counts
    z             two-proportion Z-test, p-value        drift when p < threshold (0.05)
                  (the first sorted value against
                  the rest)
    wasserstein   W1 / max(std(reference), 0.001)       drift when score >= threshold (0.1)
    jensenshannon scipy's Jensen-Shannon distance       drift when score >= threshold (0.1)
                  (natural log) of the shares per
                  value, or per Sturges bin when the
                  reference has more than 20 values
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "P_VALUE_TESTS",
    "chisquare",
    "drifted",
    "jensenshannon",
    "ks",
    "sturges_edges",
    "ztest",
]

P_VALUE_TESTS: frozenset[str] = frozenset({"ks", "chisquare", "z"})
DEFAULT_THRESHOLDS: dict[str, float] = {
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
}


def drifted(test: str, score: float, threshold: float) -> bool:
    """Evidently's comparison per test (KS alone keeps p == threshold as drift)."""
    if test == "ks":
        return score <= threshold
    if test in P_VALUE_TESTS:
        return score < threshold
    return score >= threshold


def ks(reference: np.ndarray, current: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(reference, current)[1])


def chisquare(reference: np.ndarray, current: np.ndarray) -> float:
    """``reference`` and ``current``: counts per value, aligned (same values, same order)."""
    from scipy.stats import chisquare as scipy_chisquare

    scale = current.sum() / reference.sum()
    expected = reference * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(scipy_chisquare(current.astype(np.float64), expected)[1])


def ztest(reference: np.ndarray, current: np.ndarray) -> float:
    """Counts per value aligned and sorted by value: the first against all the others."""
    from scipy.stats import norm

    ref_present = np.flatnonzero(reference)
    cur_present = np.flatnonzero(current)
    if len(ref_present) == 1 and len(cur_present) == 1 and ref_present[0] == cur_present[0]:
        return 1.0
    n1, n2 = float(reference.sum()), float(current.sum())
    p1 = float(reference[1:].sum()) / n1
    p2 = float(current[1:].sum()) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - norm.cdf(np.abs(z))))


def jensenshannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Shares (or counts) per value or bin, aligned; scipy normalises both."""
    from scipy.spatial import distance

    return float(distance.jensenshannon(reference, current))


def sturges_edges(low: float, high: float, rows: int) -> np.ndarray:
    """numpy's ``histogram_bin_edges(data, "sturges")`` from the data's range and size."""
    if low == high:
        low, high = low - 0.5, high + 0.5
    width = (high - low) / (np.log2(rows) + 1.0)
    bins = int(np.ceil((high - low) / width)) if width else 1
    return np.linspace(low, high, bins + 1, endpoint=True)


def aligned(
    ref_keys: Sequence[object],
    ref_counts: np.ndarray,
    cur_keys: Sequence[object],
    cur_counts: np.ndarray,
) -> tuple[list[object], np.ndarray, np.ndarray]:
    """Both sides' counts over the union of their values, sorted where they sort."""
    union = dict.fromkeys(ref_keys) | dict.fromkeys(cur_keys)
    keys = list(union)
    try:
        keys.sort()  # type: ignore[type-var,unused-ignore]
    except TypeError:  # mixed types: the order does not change a score
        keys.sort(key=lambda key: (type(key).__name__, str(key)))
    where = {key: i for i, key in enumerate(keys)}
    ref = np.zeros(len(keys), dtype=np.float64)
    cur = np.zeros(len(keys), dtype=np.float64)
    np.add.at(ref, [where[key] for key in ref_keys], ref_counts)
    np.add.at(cur, [where[key] for key in cur_keys], cur_counts)
    return keys, ref, cur
