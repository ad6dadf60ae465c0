"""Reading scoring datasets: batches, only the model's columns, named type errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from modelci.deliver.modelspec import Column
from modelci.errors import DatasetError
from modelci.scoring.tables import inspect_table, read_batches

COLUMNS = (Column("x", "double"), Column("n", "long"), Column("city", "string"))


def frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [i / 7 for i in range(rows)],
            "n": list(range(rows)),
            "city": [["Lima", "Oslo", "Pune"][i % 3] for i in range(rows)],
            "secret": ["do not send"] * rows,
            "label": [i % 2 for i in range(rows)],
        }
    )


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_large_dataset_comes_in_batches_of_the_models_columns(
    tmp_path: Path, suffix: str
) -> None:
    data = frame(2_500)
    path = tmp_path / f"data.{suffix}"
    data.to_csv(path, index=False) if suffix == "csv" else data.to_parquet(path)
    batches = list(read_batches(path, COLUMNS, "label", batch_rows=1_000, max_rows=10_000))
    assert [b.rows for b in batches] == [1_000, 1_000, 500]
    assert all(set(b.columns) == {"x", "n", "city"} for b in batches)  # no target, no extra
    assert [v for b in batches for v in b.columns["n"]] == list(range(2_500))
    assert [v for b in batches for v in b.target] == data["label"].tolist()
    assert inspect_table(path).rows == 2_500


def test_missing_and_mistyped_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    frame(10).drop(columns=["city"]).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"lacks the model's input column 'city' \(string\)"):
        list(read_batches(path, COLUMNS, "label", batch_rows=4, max_rows=100))
    with pytest.raises(DatasetError, match="no target column 'y'"):
        list(read_batches(path, COLUMNS[:2], "y", batch_rows=4, max_rows=100))
    typed = tmp_path / "typed.csv"
    frame(10).assign(n=["a"] * 10).to_csv(typed, index=False)
    with pytest.raises(
        DatasetError, match="column 'n' holds string values, and the model expects long"
    ):
        list(read_batches(typed, COLUMNS, "label", batch_rows=4, max_rows=100))
    fractional = tmp_path / "fractional.parquet"
    frame(10).assign(n=[0.5] * 10).to_parquet(fractional)
    with pytest.raises(DatasetError, match="column 'n' has a value that is not long"):
        list(read_batches(fractional, COLUMNS, "label", batch_rows=4, max_rows=100))
    with pytest.raises(DatasetError, match="more than the 5 scoring takes"):
        list(read_batches(path, COLUMNS[:2], "label", batch_rows=4, max_rows=5))
