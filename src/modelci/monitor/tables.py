"""Tables for drift: CSV / Parquet files read with pyarrow, and columns as numpy.

The only module of ``monitor`` that imports pyarrow. A data file is parsed as
data, never by repository code, within caps on its size and rows: a CSV is read
block by block and stopped past the row cap, a Parquet file's row count comes
from its footer before anything is read.

A column reaches the tests in one of two shapes: numbers (float64, with
missing values and infinities dropped, as Evidently drops them) or value
counts (nulls dropped). The kind of a column is inferred as Evidently infers it
from a pandas frame, so the same data file gives the same kinds:

    float                           numeric
    integer, no missing value       categorical if at most 10 distinct values, else numeric
    integer with missing values     numeric (pandas reads it as float)
    boolean, dictionary (category)  categorical
    string                          text if more than half the values are distinct, else
                                    categorical (text is not tested: see verdicts.py)
    anything else (dates, lists)    not tested
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelci.errors import DatasetError
from modelci.scoring.tables import table_format

__all__ = [
    "ArrowKind",
    "Column",
    "TableCaps",
    "as_table",
    "column",
    "column_names",
    "read_table",
    "table_rows",
]

ArrowKind = Literal["float", "int", "bool", "string", "category", "other"]
Scalar = str | int | float | bool

_CSV_BLOCK_BYTES = 4 << 20
# Evidently's INTEGER_CARDINALITY_LIMIT (evidently.core.datasets.infer_column_type).
INTEGER_CATEGORY_LIMIT = 10


@dataclass(frozen=True)
class TableCaps:
    """How big a data file may be before it is read (bytes on disk, rows)."""

    max_bytes: int = 4 << 30
    max_rows: int = 20_000_000


def _pyarrow() -> Any:
    import pyarrow  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.compute  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.csv  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet  # type: ignore[import-untyped,unused-ignore]

    return pyarrow


def read_table(path: Path, *, caps: TableCaps | None = None, name: str | None = None) -> Any:
    """The whole file as a pyarrow Table, or a DatasetError saying what is wrong."""
    pa = _pyarrow()
    caps = caps or TableCaps()
    label = name or str(path)
    if not path.is_file():
        raise DatasetError(f"{label} does not exist or is not a file", hint="check the path")
    size = path.stat().st_size
    if size > caps.max_bytes:
        raise DatasetError(
            f"{label} is {size:,} bytes, more than the {caps.max_bytes:,} drift reads",
            hint="give a smaller file (a sample of the rows keeps the verdicts), "
            "or raise the cap (--max-bytes)",
        )
    fmt = table_format(path)
    try:
        if fmt == "parquet":
            table = _read_parquet(pa, path, caps, label)
        else:
            table = _read_csv(pa, path, caps, label)
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(
            f"{label} is not a readable {fmt.upper()} file: {detail}",
            hint="give a CSV file with a header row, or a Parquet file",
        ) from None
    if not table.column_names:
        raise DatasetError(f"{label} has no columns", hint="give a file with a header row")
    return table


def _too_many_rows(label: str, rows: int, caps: TableCaps) -> DatasetError:
    return DatasetError(
        f"{label} has {rows:,} rows or more, more than the {caps.max_rows:,} drift reads",
        hint="give a sample of the rows (the tests need far fewer), or raise --max-rows",
    )


def _read_parquet(pa: Any, path: Path, caps: TableCaps, label: str) -> Any:
    parquet = pa.parquet.ParquetFile(path)
    rows = int(parquet.metadata.num_rows)
    if rows > caps.max_rows:
        raise _too_many_rows(label, rows, caps)
    return parquet.read()


def _read_csv(pa: Any, path: Path, caps: TableCaps, label: str) -> Any:
    read = pa.csv.ReadOptions(block_size=_CSV_BLOCK_BYTES)
    reader = pa.csv.open_csv(str(path), read_options=read)
    batches, rows = [], 0
    for batch in reader:
        rows += batch.num_rows
        if rows > caps.max_rows:
            raise _too_many_rows(label, rows, caps)
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def as_table(data: Any) -> Any:
    """A pyarrow Table from a Table, a pandas DataFrame or a dict of columns."""
    pa = _pyarrow()
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, dict):
        try:
            return pa.table(data)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DatasetError(
                f"the data cannot be read as a table: {str(exc).splitlines()[0]}",
                hint="each column must hold one kind of value (numbers, strings or booleans)",
            ) from None
    if hasattr(data, "columns") and hasattr(data, "dtypes"):  # a pandas DataFrame
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError(f"expected a pyarrow Table or a pandas DataFrame, got {type(data).__name__}")


def column_names(table: Any) -> list[str]:
    return [str(name) for name in table.column_names]


def table_rows(table: Any) -> int:
    return int(table.num_rows)


@dataclass(frozen=True)
class Column:
    """One column of a table: its Arrow kind and what the tests read from it."""

    name: str
    arrow: ArrowKind
    rows: int
    nulls: int
    _data: Any

    @property
    def type_name(self) -> str:
        """The Arrow type, as a person reads it (timestamp[us], list<item: int64>)."""
        return str(self._data.type)

    def numbers(self) -> np.ndarray:
        """Finite values as float64, missing values and infinities dropped."""
        pa = _pyarrow()
        data = self._data
        if self.arrow == "bool":
            data = data.cast(pa.int8())
        values = np.asarray(data.to_numpy(zero_copy_only=False), dtype=np.float64)
        return values[np.isfinite(values)]

    def value_counts(self) -> tuple[list[Scalar], np.ndarray]:
        """Distinct non-null values and how often each occurs (int64)."""
        pa = _pyarrow()
        data = self._data
        if self.arrow == "float":
            # NaN is missing, as in pandas; infinities too (Evidently drops them)
            values = np.asarray(data.to_numpy(zero_copy_only=False), dtype=np.float64)
            data = pa.array(values[np.isfinite(values)])
        counted = pa.compute.value_counts(data.drop_null())
        keys = counted.field("values").to_pylist()
        counts = np.asarray(counted.field("counts").to_numpy(), dtype=np.int64)
        return keys, counts

    def distinct(self) -> int:
        pa = _pyarrow()
        return int(pa.compute.count_distinct(self._data, mode="only_valid").as_py())


def column(table: Any, name: str) -> Column:
    pa = _pyarrow()
    data = table.column(name)
    data = data.combine_chunks() if data.num_chunks != 1 else data.chunk(0)
    kind = _arrow_kind(pa, data.type)
    if kind == "category":  # pandas' category: counted by value, as Evidently does
        data = data.cast(data.type.value_type)
    return Column(name, kind, len(data), int(data.null_count), data)


def _arrow_kind(pa: Any, arrow_type: Any) -> ArrowKind:
    types = pa.types
    if types.is_dictionary(arrow_type):
        return "category"
    if types.is_floating(arrow_type) or types.is_decimal(arrow_type):
        return "float"
    if types.is_integer(arrow_type):
        return "int"
    if types.is_boolean(arrow_type):
        return "bool"
    if types.is_string(arrow_type) or types.is_large_string(arrow_type):
        return "string"
    return "other"
