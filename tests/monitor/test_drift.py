"""Verdicts beyond parity: overrides, bad windows, JSON, the cost of a window."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from modelci.errors import ConfigError, DatasetError
from modelci.monitor import ColumnOverride, DriftReport, DriftSettings, drift, profile_table


def table(rows: int, shift: float = 0.0, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({f"x{i}": rng.normal(shift if i < 2 else 0.0, 1, rows) for i in range(10)})


def test_shifting_two_of_ten_columns_drifts_exactly_those() -> None:
    profile = profile_table(table(20_000))
    report = drift(profile, table(5000, shift=0.5, seed=1))
    assert report.drifted_columns == ["x0", "x1"]
    assert report.share_drifted == pytest.approx(0.2)
    assert not report.dataset_drifted
    clean = drift(profile, table(5000, seed=2))
    assert clean.drifted_columns == []


def test_half_the_columns_drifting_drifts_the_dataset() -> None:
    profile = profile_table(table(2000))
    rng = np.random.default_rng(9)
    current = table(2000, seed=3)
    for i in range(5):
        current = current.set_column(i, f"x{i}", pa.array(rng.normal(1, 1, 2000)))
    report = drift(profile, current)
    assert report.share_drifted == 0.5 and report.dataset_drifted
    stricter = drift(profile, current, overrides=DriftSettings(drift_share=0.6))
    assert not stricter.dataset_drifted


def test_overrides_pick_the_test_and_threshold() -> None:
    profile = profile_table(table(2000))
    settings = DriftSettings(
        columns={
            "x0": ColumnOverride(test="ks", threshold=0.01),
            "x1": ColumnOverride(test="jensenshannon"),
            "x2": ColumnOverride(threshold=0.5),
            "x3": ColumnOverride(skip=True),
        }
    )
    report = drift(profile, table(1000, shift=0.3, seed=4), overrides=settings)
    by_name = {col.name: col for col in report.columns}
    assert (by_name["x0"].test, by_name["x0"].threshold) == ("ks", 0.01)
    assert by_name["x0"].drifted
    assert by_name["x1"].test == "jensenshannon" and 0 < by_name["x1"].score < 1
    assert (by_name["x2"].test, by_name["x2"].threshold) == ("wasserstein", 0.5)
    assert "x3" not in by_name and report.skipped[0].name == "x3"


def test_a_count_test_on_a_sketched_column_is_refused() -> None:
    profile = profile_table(table(10_000))
    with pytest.raises(ConfigError, match="counts each distinct value"):
        drift(
            profile,
            table(100),
            overrides=DriftSettings(columns={"x0": ColumnOverride(test="chisquare")}),
        )
    cats = profile_table(pa.table({"c": ["a", "b"] * 10}))
    with pytest.raises(ConfigError, match="compares numbers"):
        drift(
            cats,
            pa.table({"c": ["a"] * 5}),
            overrides=DriftSettings(columns={"c": ColumnOverride(test="ks")}),
        )
    with pytest.raises(ValueError, match="categorical column takes"):
        ColumnOverride(kind="categorical", test="wasserstein")


def test_windows_that_do_not_fit_the_reference_are_errors() -> None:
    profile = profile_table(pa.table({"a": [1.0, 2.0, 3.0], "b": [1.5, 2.5, 3.5]}))
    with pytest.raises(DatasetError, match="no column 'b'"):
        drift(profile, pa.table({"a": [1.0]}))
    with pytest.raises(DatasetError, match="held numbers in the reference"):
        drift(profile, pa.table({"a": [1.0], "b": ["x"]}))


def test_a_column_without_values_in_the_window_drifts() -> None:
    profile = profile_table(pa.table({"a": [1.0, 2.0, 3.0] * 3, "c": ["x", "y", "x"] * 3}))
    report = drift(
        profile, pa.table({"a": pa.nulls(4, pa.float64()), "c": pa.nulls(4, pa.string())})
    )
    assert [(col.test, col.drifted) for col in report.columns] == [("missing", True)] * 2


def test_the_json_reads_back() -> None:
    profile = profile_table(pa.table({"a": np.arange(50.0), "c": ["x", "y"] * 25}))
    report = drift(profile, pa.table({"a": np.arange(10.0) + 3, "c": ["x"] * 10}), label="w1")
    data = json.loads(json.dumps(report.as_json()))
    again = DriftReport.from_json(data)
    assert again.as_json() == report.as_json()
    assert data["columns"][0]["distribution"]["labels"]


def test_an_empty_report_does_not_drift() -> None:
    report = DriftReport.from_json(
        {
            "columns": [],
            "skipped": [],
            "drift_share": 0.5,
            "reference_rows": 1,
            "current_rows": 1,
        }
    )
    assert report.share_drifted == 0.0 and not report.dataset_drifted


def test_served_values_that_are_not_single_values_are_a_clear_error() -> None:
    rng = np.random.default_rng(0)
    profile = profile_table({"x": rng.normal(size=2000), "prediction": rng.integers(0, 2, 2000)})
    lists = {"x": list(rng.normal(size=100)), "prediction": [[0.1, 0.9]] * 100}
    with pytest.raises(DatasetError, match="'prediction' holds list<item: double>") as caught:
        drift(profile, lists)
    assert "monitoring.columns.prediction.skip: true" in (caught.value.hint or "")
    with pytest.raises(DatasetError, match="cannot be read as a table"):
        drift(profile, {"x": [1.0, "a"] * 50, "prediction": [1] * 100})
