"""A window of data against a reference profile: Evidently's verdicts, per column and overall.

The test per column is Evidently's default (``_get_default_stattest`` in
``evidently.legacy.calculations.stattests.registry``), unless the settings name
one. ``n`` is the column's reference values (missing ones dropped), ``v`` the
distinct values of reference and current together:

    n <= 1000  numeric      v > 5: ks; 3..5: chisquare; <= 2: z
               categorical  v > 2: chisquare; else z
    n > 1000   numeric      v > 5: wasserstein; else jensenshannon
               categorical  jensenshannon

The dataset drifts when the share of drifted columns reaches ``drift_share``
(0.5). Where modelci departs from Evidently, on purpose:
- kinds come from the reference (profile.py), not from each window, so a column
  keeps its test from one window to the next;
- free-text columns are listed, not tested (Evidently trains a classifier);
- a column with no value in the window drifts (test "missing"), where Evidently
  stops with an error;
- a numeric reference with more than 3,072 distinct values is a sketch: its
  Wasserstein score carries ``error_bound`` (see sketch.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from modelci.errors import ConfigError, DatasetError
from modelci.monitor import stattests, tables
from modelci.monitor.profile import ColumnProfile, Profile
from modelci.monitor.settings import ColumnOverride, DriftSettings
from modelci.monitor.sketch import NumericSketch, wasserstein

__all__ = ["ColumnDrift", "Distribution", "DriftReport", "SkippedColumn", "drift"]

SMALL_REFERENCE = 1000
_PLOT_BINS = 20
_PLOT_VALUES = 12


class _Other:
    """Values beyond the profile's most frequent ones, on both sides."""

    def __repr__(self) -> str:
        return "other"


OTHER = _Other()


@dataclass(frozen=True)
class Distribution:
    """Both sides as shares, on the same bins (numeric) or values (categorical)."""

    labels: list[str]
    reference: list[float]
    current: list[float]
    edges: list[float] | None = None  # numeric bins: len(labels) + 1 edges


@dataclass(frozen=True)
class ColumnDrift:
    name: str
    kind: str
    test: str
    score: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    distribution: Distribution
    error_bound: float = 0.0  # |score - Evidently's score| is at most this (sketches only)


@dataclass(frozen=True)
class SkippedColumn:
    name: str
    kind: str
    reason: str


@dataclass(frozen=True)
class DriftReport:
    columns: tuple[ColumnDrift, ...]
    skipped: tuple[SkippedColumn, ...]
    drift_share: float
    reference_rows: int
    current_rows: int
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted_columns(self) -> list[str]:
        return [col.name for col in self.columns if col.drifted]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drifted(self) -> bool:
        return bool(self.columns) and self.share_drifted >= self.drift_share

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "dataset_drifted": self.dataset_drifted,
            "share_drifted": self.share_drifted,
            "drift_share": self.drift_share,
            "drifted_columns": self.drifted_columns,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "columns": [_json_safe(asdict(col)) for col in self.columns],
            "skipped": [asdict(col) for col in self.skipped],
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DriftReport:
        columns = []
        for item in data["columns"]:
            item = dict(item)
            item["distribution"] = Distribution(**item["distribution"])
            item["score"] = math.nan if item["score"] is None else item["score"]
            columns.append(ColumnDrift(**item))
        return cls(
            tuple(columns),
            tuple(SkippedColumn(**item) for item in data["skipped"]),
            float(data["drift_share"]),
            int(data["reference_rows"]),
            int(data["current_rows"]),
            str(data.get("label", "")),
            dict(data.get("extra", {})),
        )


def _json_safe(item: dict[str, Any]) -> dict[str, Any]:
    score = item["score"]
    if isinstance(score, float) and not math.isfinite(score):
        item["score"] = None if math.isnan(score) else score  # JSON holds no NaN
    return item


def drift(
    profile: Profile, current: Any, *, overrides: DriftSettings | None = None, label: str = ""
) -> DriftReport:
    """Test each profiled column of ``current`` (pyarrow Table or pandas DataFrame)."""
    table = tables.as_table(current)
    settings = overrides or DriftSettings()
    names = set(tables.column_names(table))
    tested = [
        col
        for col in profile.columns
        if col.kind in ("numeric", "categorical") and not settings.column(col.name).skip
    ]
    missing = [col.name for col in tested if col.name not in names]
    if missing:
        raise DatasetError(
            f"the current data has no column {', '.join(map(repr, missing))}",
            hint="give data with the reference's columns, or skip those columns "
            "(monitoring.columns.NAME.skip: true)",
        )
    current = {col.name: tables.column(table, col.name) for col in tested}
    odd = [c for c in current.values() if c.arrow == "other"]
    if odd:
        raise DatasetError(
            f"the current data's column {odd[0].name!r} holds {odd[0].type_name}, not "
            "numbers, strings or booleans",
            hint="test columns of single values (skip this one: "
            f"monitoring.columns.{odd[0].name}.skip: true)",
        )
    results = tuple(
        _column_drift(col, current[col.name], settings.column(col.name)) for col in tested
    )
    skipped = tuple(
        SkippedColumn(col.name, col.kind, col.reason or "skipped in the settings")
        for col in profile.columns
        if col not in tested
    )
    return DriftReport(
        results, skipped, settings.drift_share, profile.rows, tables.table_rows(table), label
    )


def _column_drift(ref: ColumnProfile, cur: tables.Column, override: ColumnOverride) -> ColumnDrift:
    if ref.kind == "numeric":
        if cur.arrow not in ("float", "int", "bool"):
            raise DatasetError(
                f"column {ref.name!r} held numbers in the reference, {cur.arrow} values now",
                hint="give the column its reference type, or profile the reference again",
            )
        return _numeric(ref, cur, override)
    return _categorical(ref, cur, override)


def _missing(ref: ColumnProfile, cur: tables.Column) -> ColumnDrift:
    empty = Distribution([], [], [])
    return ColumnDrift(ref.name, ref.kind, "missing", 1.0, 1.0, True, ref.rows, 0, empty)


def _threshold(test: str, override: ColumnOverride) -> float:
    return (
        override.threshold if override.threshold is not None else stattests.DEFAULT_THRESHOLDS[test]
    )


def _verdict(
    ref: ColumnProfile,
    test: str,
    score: float,
    override: ColumnOverride,
    rows: int,
    distribution: Distribution,
    bound: float = 0.0,
) -> ColumnDrift:
    threshold = _threshold(test, override)
    return ColumnDrift(
        ref.name,
        ref.kind,
        test,
        score,
        threshold,
        stattests.drifted(test, score, threshold),
        ref.rows,
        rows,
        distribution,
        bound,
    )


def _numeric(ref: ColumnProfile, cur: tables.Column, override: ColumnOverride) -> ColumnDrift:
    sketch = ref.numeric
    assert sketch is not None
    values = np.sort(cur.numbers())
    if len(values) == 0:
        return _missing(ref, cur)
    starts = np.flatnonzero(np.diff(values)) + 1
    cur_keys = values[np.concatenate([[0], starts])]
    cur_counts = np.diff(np.append(np.concatenate([[0], starts]), len(values)))
    distinct = len(np.union1d(sketch.low, cur_keys)) if sketch.exact else math.inf
    test = override.test or _default_numeric(ref.rows, distinct)
    plot = _numeric_plot(sketch, values, cur_keys, cur_counts, distinct)
    if test == "wasserstein":
        w, bound = wasserstein(sketch, values)
        norm = max(ref.std, 0.001)
        return _verdict(ref, test, w / norm, override, len(values), plot, bound / norm)
    if test == "ks":
        return _verdict(
            ref, test, stattests.ks(sketch.values(), values), override, len(values), plot
        )
    if test == "jensenshannon" and not (sketch.exact and len(sketch.low) <= 20):
        # Evidently's bins: Sturges over reference and current together
        low = min(float(sketch.low[0]), float(values[0]))
        high = max(float(sketch.high[-1]), float(values[-1]))
        edges = stattests.sturges_edges(low, high, sketch.rows + len(values))
        ref_hist = sketch.histogram(edges) / sketch.rows
        cur_hist = np.histogram(values, edges)[0] / len(values)
        score = stattests.jensenshannon(ref_hist, cur_hist)
        return _verdict(ref, test, score, override, len(values), plot)
    if not sketch.exact:
        raise ConfigError(
            f"test {test} on column {ref.name!r} counts each distinct value, and its reference "
            f"has more than {len(sketch.low):,} of them",
            hint=f"use wasserstein, ks or jensenshannon for {ref.name!r}",
        )
    _, ref_counts, cur_counted = stattests.aligned(
        sketch.low.tolist(), sketch.count, cur_keys.tolist(), cur_counts
    )
    return _verdict(
        ref, test, _count_test(test, ref_counts, cur_counted), override, len(values), plot
    )


def _default_numeric(rows: int, distinct: float) -> str:
    if rows <= SMALL_REFERENCE:
        if distinct <= 5:
            return "chisquare" if distinct > 2 else "z"
        return "ks"
    return "jensenshannon" if distinct <= 5 else "wasserstein"


def _count_test(test: str, ref: np.ndarray, cur: np.ndarray) -> float:
    if test == "chisquare":
        return stattests.chisquare(ref, cur)
    if test == "z":
        return stattests.ztest(ref, cur)
    if test == "jensenshannon":
        return stattests.jensenshannon(ref, cur)
    raise ConfigError(
        f"test {test} compares numbers, not counts of values",
        hint="a categorical column takes chisquare, z or jensenshannon",
    )


def _categorical(ref: ColumnProfile, cur: tables.Column, override: ColumnOverride) -> ColumnDrift:
    counts = ref.categories
    assert counts is not None
    cur_keys, cur_counts = cur.value_counts()
    if cur_counts.sum() == 0:
        return _missing(ref, cur)
    ref_keys: list[object] = list(counts.keys)
    ref_counts = counts.counts
    cur_list: list[object] = list(cur_keys)
    if counts.other:
        known = set(ref_keys)
        cur_list = [key if key in known else OTHER for key in cur_list]
        ref_keys.append(OTHER)
        ref_counts = np.append(ref_counts, counts.other)
    keys, ref_aligned, cur_aligned = stattests.aligned(ref_keys, ref_counts, cur_list, cur_counts)
    if override.test in ("ks", "wasserstein"):
        raise ConfigError(
            f"test {override.test} compares numbers; column {ref.name!r} is categorical",
            hint=f"use chisquare, z or jensenshannon for {ref.name!r}, or set its kind: numeric",
        )
    test = override.test or _default_categorical(ref.rows, len(keys))
    score = _count_test(test, ref_aligned, cur_aligned)
    plot = _count_plot(keys, ref_aligned, cur_aligned)
    return _verdict(ref, test, score, override, int(cur_counts.sum()), plot)


def _default_categorical(rows: int, distinct: int) -> str:
    if rows <= SMALL_REFERENCE:
        return "chisquare" if distinct > 2 else "z"
    return "jensenshannon"


def _count_plot(keys: Sequence[object], ref: np.ndarray, cur: np.ndarray) -> Distribution:
    ref_share = ref / max(ref.sum(), 1.0)
    cur_share = cur / max(cur.sum(), 1.0)
    order = np.argsort(-(ref_share + cur_share), kind="stable")
    top, rest = order[:_PLOT_VALUES], order[_PLOT_VALUES:]
    labels = [str(keys[i]) for i in top]
    ref_out = ref_share[top].tolist()
    cur_out = cur_share[top].tolist()
    if len(rest):
        labels.append(f"{len(rest)} more")
        ref_out.append(float(ref_share[rest].sum()))
        cur_out.append(float(cur_share[rest].sum()))
    return Distribution(labels, ref_out, cur_out)


def _numeric_plot(
    sketch: NumericSketch,
    values: np.ndarray,
    cur_keys: np.ndarray,
    cur_counts: np.ndarray,
    distinct: float,
) -> Distribution:
    if distinct <= _PLOT_VALUES:
        keys, ref, cur = stattests.aligned(
            sketch.low.tolist(), sketch.count, cur_keys.tolist(), cur_counts
        )
        return Distribution(
            [_number(float(k)) for k in keys],  # type: ignore[arg-type]
            (ref / ref.sum()).tolist(),
            (cur / cur.sum()).tolist(),
        )
    # the middle 99% of both sides: one outlier must not squeeze every bar into one
    levels = np.cumsum(sketch.count) / sketch.rows
    ref_low = float(sketch.low[int(np.searchsorted(levels, 0.005))])
    ref_high = float(sketch.high[min(int(np.searchsorted(levels, 0.995)), len(levels) - 1)])
    low = min(ref_low, float(np.quantile(values, 0.005)))
    high = max(ref_high, float(np.quantile(values, 0.995)))
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, _PLOT_BINS + 1)
    ref_hist = sketch.histogram(edges) / sketch.rows
    cur_hist = np.histogram(np.clip(values, low, high), edges)[0] / len(values)
    labels = [_number(float(edge)) for edge in edges[:-1]]
    return Distribution(labels, ref_hist.tolist(), cur_hist.tolist(), edges.tolist())


def _number(value: float) -> str:
    return f"{value:.4g}"
