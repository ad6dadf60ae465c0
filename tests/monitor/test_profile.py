"""Profiles: kinds as Evidently infers them, bounded size, bytes that round-trip."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from modelci.errors import ConfigError, DatasetError
from modelci.monitor import ColumnOverride, DriftSettings, Profile, drift, profile_table
from modelci.monitor.profile import MAX_CATEGORIES


def test_kinds_follow_evidentlys_inference() -> None:
    rows = 100
    table = pa.table(
        {
            "f": pa.array(np.arange(rows, dtype=float)),
            "wide_int": pa.array(np.arange(rows)),
            "narrow_int": pa.array(np.arange(rows) % 10),
            "int_with_gap": pa.array([None, *range(1, rows)], pa.int64()),
            "flag": pa.array([i % 2 == 0 for i in range(rows)]),
            "city": pa.array(["a", "b", "c", "d"] * (rows // 4)),
            "free_text": pa.array([f"note {i}" for i in range(rows)]),
            "when": pa.array(np.arange(rows).astype("datetime64[s]")),
            "nothing": pa.nulls(rows, pa.float64()),
            "dict": pa.array(["x", "y"] * (rows // 2)).dictionary_encode(),
        }
    )
    kinds = {col.name: col.kind for col in profile_table(table).columns}
    assert kinds == {
        "f": "numeric",
        "wide_int": "numeric",
        "narrow_int": "categorical",
        "int_with_gap": "numeric",
        "flag": "categorical",
        "city": "categorical",
        "free_text": "text",
        "when": "unsupported",
        "nothing": "empty",
        "dict": "categorical",
    }


def test_a_million_rows_make_a_bounded_profile_that_round_trips() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    table = pa.table(
        {
            "x": rng.normal(0, 1, n),
            "y": rng.lognormal(0, 1, n),
            "k": rng.integers(0, 50, n),
            "c": pa.array(rng.choice(["a", "b", "c"], n)),
        }
    )
    profile = profile_table(table)
    blob = profile.to_bytes()
    assert len(blob) < 250_000, len(blob)  # about 60 KB per continuous column
    again = Profile.from_bytes(blob)
    current = table.slice(0, 20_000)
    assert drift(again, current).as_json() == drift(profile, current).as_json()


def test_categories_beyond_the_cap_are_one_other_count() -> None:
    values = [f"v{i}" for i in range(MAX_CATEGORIES + 500)] * 3 + ["v0"] * 10
    profile = profile_table(
        pa.table({"c": values}),
        overrides=DriftSettings(columns={"c": ColumnOverride(kind="categorical")}),
    )
    counts = profile.column("c").categories
    assert counts is not None
    assert len(counts.keys) == MAX_CATEGORIES and counts.keys[0] == "v0"
    assert counts.other == 500 * 3
    assert int(counts.counts.sum()) + counts.other == len(values)


def test_columns_and_overrides() -> None:
    table = pa.table({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "x"], "c": [1, 2, 3]})
    profile = profile_table(
        table, columns=["a", "c"], overrides=DriftSettings(columns={"c": ColumnOverride(skip=True)})
    )
    assert [(col.name, col.kind) for col in profile.columns] == [("a", "numeric"), ("c", "skipped")]
    with pytest.raises(DatasetError, match="no column 'zz'"):
        profile_table(table, columns=["zz"])
    with pytest.raises(ConfigError, match="kind is numeric"):
        profile_table(table, overrides=DriftSettings(columns={"b": ColumnOverride(kind="numeric")}))


def test_bytes_that_are_not_a_profile_are_refused() -> None:
    with pytest.raises(DatasetError, match="not a modelci drift profile"):
        Profile.from_bytes(b"hello")
    blob = profile_table(pa.table({"a": [1.0, 2.0]})).to_bytes()
    with pytest.raises(DatasetError, match="damaged"):
        Profile.from_bytes(blob[:-5])
