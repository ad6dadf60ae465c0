"""The reference profile: per column what the drift tests need, computed once.

A profile is made from the reference data at registration and kept (bytes, a
few hundred KB at most for 20 columns of a million rows); each new window of
served data is tested against it, so the reference is never read again.

    numeric       a NumericSketch (sketch.py): exact up to 3,072 distinct values,
                  else exact tails and 2,048 equal-count buckets; the population
                  standard deviation (the Wasserstein norm)
    categorical   value counts: the 1,000 most frequent values, the rest as one
                  "other" count (only a JS distance on a reference with more than
                  1,000 distinct values sees the difference)
    text, other   named, not tested (see verdicts.py)
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from modelci.errors import ConfigError, DatasetError
from modelci.monitor import tables
from modelci.monitor.settings import DriftSettings
from modelci.monitor.sketch import NumericSketch

__all__ = [
    "MAX_CATEGORIES",
    "CategoryCounts",
    "ColumnKind",
    "ColumnProfile",
    "Profile",
    "profile_table",
]

ColumnKind = Literal["numeric", "categorical", "text", "unsupported", "empty", "skipped"]
Scalar = str | int | float | bool
MAX_CATEGORIES = 1000
_MAGIC = b"MCIDRIFT1\n"


@dataclass(frozen=True)
class CategoryCounts:
    """The most frequent values and their counts; ``other`` counts all the rest."""

    keys: list[Scalar]
    counts: np.ndarray  # int64
    other: int = 0

    @classmethod
    def of(
        cls, keys: list[Scalar], counts: np.ndarray, cap: int = MAX_CATEGORIES
    ) -> CategoryCounts:
        if len(keys) <= cap:
            return cls(list(keys), counts.astype(np.int64))
        order = np.argsort(-counts, kind="stable")
        kept, rest = order[:cap], order[cap:]
        return cls([keys[i] for i in kept], counts[kept].astype(np.int64), int(counts[rest].sum()))


@dataclass(frozen=True)
class ColumnProfile:
    """One reference column: kind, how many values (missing ones apart), and its summary."""

    name: str
    kind: ColumnKind
    rows: int
    missing: int
    numeric: NumericSketch | None = None
    std: float = 0.0
    categories: CategoryCounts | None = None
    reason: str = ""  # why a column is not tested


@dataclass(frozen=True)
class Profile:
    """The reference's columns, in table order."""

    columns: tuple[ColumnProfile, ...]
    rows: int

    def column(self, name: str) -> ColumnProfile:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def to_bytes(self) -> bytes:
        return _MAGIC + zlib.compress(json.dumps(_encode(self), separators=(",", ":")).encode(), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> Profile:
        if not data.startswith(_MAGIC):
            raise DatasetError(
                "these bytes are not a modelci drift profile",
                hint="make the profile again from the reference data (profile_table)",
            )
        try:
            return _decode(json.loads(zlib.decompress(data[len(_MAGIC) :])))
        except (ValueError, KeyError, TypeError, zlib.error) as exc:
            raise DatasetError(
                f"the drift profile is damaged: {exc}",
                hint="make the profile again from the reference data",
            ) from None


def profile_table(
    table: Any,
    *,
    columns: Sequence[str] | None = None,
    overrides: DriftSettings | None = None,
) -> Profile:
    """The profile of ``table`` (pyarrow Table or pandas DataFrame); ``columns`` picks some."""
    table = tables.as_table(table)
    settings = overrides or DriftSettings()
    names = tables.column_names(table)
    if columns is not None:
        unknown = [name for name in columns if name not in names]
        if unknown:
            raise DatasetError(
                f"the reference has no column {', '.join(map(repr, unknown))}",
                hint=f"its columns are: {', '.join(names)}",
            )
        names = list(columns)
    profiles = tuple(
        ColumnProfile(name, "skipped", 0, 0, reason="skipped in the settings")
        if settings.column(name).skip
        else _profile_column(tables.column(table, name), settings)
        for name in names
    )
    return Profile(profiles, tables.table_rows(table))


def inferred_kind(col: tables.Column) -> ColumnKind:
    """Evidently's type inference (evidently.core.datasets.infer_column_type), on Arrow."""
    if col.nulls == col.rows:
        return "empty"
    if col.arrow == "float":
        return "numeric"
    if col.arrow == "int":
        if col.nulls:  # pandas reads an integer column with gaps as float
            return "numeric"
        return "categorical" if col.distinct() <= tables.INTEGER_CATEGORY_LIMIT else "numeric"
    if col.arrow in ("bool", "category"):
        return "categorical"
    if col.arrow == "string":
        return "text" if col.distinct() > (col.rows - col.nulls) * 0.5 else "categorical"
    return "unsupported"


def _profile_column(col: tables.Column, settings: DriftSettings) -> ColumnProfile:
    override = settings.column(col.name)
    kind = override.kind or inferred_kind(col)
    if override.kind == "numeric" and col.arrow not in ("float", "int", "bool"):
        raise ConfigError(
            f"monitoring.columns.{col.name}.kind is numeric, but the column holds "
            f"{col.type_name} values",
            hint="remove the override or make it categorical",
        )
    if kind == "numeric":
        values = col.numbers()
        if len(values) == 0:
            return ColumnProfile(col.name, "empty", 0, col.rows, reason="no finite value")
        return ColumnProfile(
            col.name,
            "numeric",
            len(values),
            col.rows - len(values),
            numeric=NumericSketch.of(values),
            std=float(np.std(values)),
        )
    if kind == "categorical":
        keys, counts = col.value_counts()
        rows = int(counts.sum())
        if rows == 0:
            return ColumnProfile(col.name, "empty", 0, col.rows, reason="no value")
        return ColumnProfile(
            col.name,
            "categorical",
            rows,
            col.rows - rows,
            categories=CategoryCounts.of(keys, counts),
        )
    reasons = {
        "text": "free text (more than half the values distinct)",
        "empty": "no value in the reference",
        "unsupported": f"{col.type_name} values (numbers, booleans and strings are tested)",
    }
    return ColumnProfile(col.name, kind, col.rows - col.nulls, col.nulls, reason=reasons[kind])


def _array(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode()


def _unarray(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).copy()


def _encode(profile: Profile) -> dict[str, Any]:
    columns: list[dict[str, Any]] = []
    for col in profile.columns:
        item: dict[str, Any] = {
            "name": col.name,
            "kind": col.kind,
            "rows": col.rows,
            "missing": col.missing,
        }
        if col.reason:
            item["reason"] = col.reason
        if col.numeric is not None:
            sk = col.numeric
            item["std"] = col.std
            item["exact"] = sk.exact
            item["low"] = _array(sk.low, "<f8")
            item["count"] = _array(sk.count, "<i8")
            if not sk.exact:  # exact buckets hold one value: high == low, total == low * count
                item["high"] = _array(sk.high, "<f8")
                item["total"] = _array(sk.total, "<f8")
        if col.categories is not None:
            item["keys"] = col.categories.keys
            item["counts"] = col.categories.counts.tolist()
            item["other"] = col.categories.other
        columns.append(item)
    return {"rows": profile.rows, "columns": columns}


def _decode(data: dict[str, Any]) -> Profile:
    columns = []
    for item in data["columns"]:
        numeric = categories = None
        if "low" in item:
            low = _unarray(item["low"], "<f8")
            count = _unarray(item["count"], "<i8")
            if item["exact"]:
                numeric = NumericSketch(low, low.copy(), count, low * count, exact=True)
            else:
                high, total = _unarray(item["high"], "<f8"), _unarray(item["total"], "<f8")
                numeric = NumericSketch(low, high, count, total, exact=False)
        if "keys" in item:
            categories = CategoryCounts(
                list(item["keys"]), np.asarray(item["counts"], dtype=np.int64), int(item["other"])
            )
        columns.append(
            ColumnProfile(
                str(item["name"]),
                item["kind"],
                int(item["rows"]),
                int(item["missing"]),
                numeric=numeric,
                std=float(item.get("std", 0.0)),
                categories=categories,
                reason=str(item.get("reason", "")),
            )
        )
    return Profile(tuple(columns), int(data["rows"]))
