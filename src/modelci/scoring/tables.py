"""Scoring datasets on disk: CSV or Parquet, read in batches with pyarrow.

A dataset is never loaded whole: CSV is parsed block by block and Parquet row
group by row group, and only the columns the model takes (plus the target) are
read. Each feature column is converted to the type the model's signature
gives it, so a mistyped column is found here and named (which column, what the
signature expects, what the file holds), not by the model's own code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelci.deliver.modelspec import Column
from modelci.errors import DatasetError

__all__ = ["Batch", "TableInfo", "inspect_table", "read_batches", "table_format"]

Format = Literal["csv", "parquet"]
_PARQUET_MAGIC = b"PAR1"
_CSV_BLOCK_BYTES = 4 << 20
_SIGNATURE_HINT = (
    "fix the dataset's column (or the model's signature: model.training_data or "
    "model.input_example in modelci.yaml) so both agree"
)


@dataclass(frozen=True)
class TableInfo:
    """What ``inspect_table`` found: the file's format, columns (name → type) and rows."""

    format: Format
    columns: dict[str, str]
    rows: int


@dataclass(frozen=True)
class Batch:
    """Some rows: the model's columns as lists (JSON-ready) and the target's values."""

    columns: dict[str, list[Any]]
    target: list[Any]
    rows: int


def _pyarrow() -> Any:
    try:
        import pyarrow  # type: ignore[import-untyped,unused-ignore]
        import pyarrow.csv  # type: ignore[import-untyped,unused-ignore]
        import pyarrow.parquet  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise DatasetError(
            "reading scoring datasets needs pyarrow, which is not installed",
            hint="pip install pyarrow (in modelci's own environment)",
        ) from None
    return pyarrow


def table_format(path: Path) -> Format:
    """Parquet if the file starts with Parquet's magic bytes, else CSV."""
    with path.open("rb") as handle:
        return "parquet" if handle.read(4) == _PARQUET_MAGIC else "csv"


def _kind(pa: Any, arrow_type: Any) -> str:
    """An Arrow type in the words of the model's signature (MLflow's column types)."""
    types = pa.types
    if types.is_boolean(arrow_type):
        return "boolean"
    if types.is_integer(arrow_type):
        return "long"
    if types.is_floating(arrow_type):
        return "double"
    if types.is_string(arrow_type) or types.is_large_string(arrow_type):
        return "string"
    if types.is_timestamp(arrow_type) or types.is_date(arrow_type):
        return "datetime"
    if types.is_null(arrow_type):
        return "empty"
    return str(arrow_type)


def _unreadable(
    path: Path, fmt: Format, exc: Exception, name: str, names: Sequence[str] = ()
) -> DatasetError:
    detail = _first_line(exc, names)
    return DatasetError(
        f"{name} is not a readable {fmt.upper()} file: {detail}",
        hint="give a CSV file with a header row, or a Parquet file",
    )


def inspect_table(path: Path, *, name: str | None = None) -> TableInfo:
    """Format, columns and row count; reads a CSV through once, in blocks."""
    pa = _pyarrow()
    label = name or path.name
    fmt = table_format(path)
    try:
        if fmt == "parquet":
            parquet = pa.parquet.ParquetFile(path)
            schema = parquet.schema_arrow
            rows = int(parquet.metadata.num_rows)
        else:
            reader = _open_csv(pa, path, None, None)
            schema = reader.schema
            rows = sum(batch.num_rows for batch in reader)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _unreadable(path, fmt, exc, label) from None
    if not schema.names:
        raise DatasetError(f"{label} has no columns", hint="give a file with a header row")
    columns = {str(field.name): _kind(pa, field.type) for field in schema}
    return TableInfo(fmt, columns, rows)


def _open_csv(
    pa: Any, path: Path, include: Sequence[str] | None, types: dict[str, Any] | None
) -> Any:
    convert = pa.csv.ConvertOptions(
        include_columns=list(include) if include is not None else None,
        column_types=types or None,
    )
    read = pa.csv.ReadOptions(block_size=_CSV_BLOCK_BYTES)
    return pa.csv.open_csv(str(path), read_options=read, convert_options=convert)


def _arrow_type(pa: Any, column: Column) -> Any:
    return {
        "double": pa.float64(),
        "float": pa.float64(),
        "long": pa.int64(),
        "integer": pa.int64(),
        "boolean": pa.bool_(),
        "string": pa.string(),
    }.get(column.type)


def _check_columns(info: TableInfo, columns: Sequence[Column], target: str, name: str) -> None:
    """Every column the model takes and the target, present and of a usable type."""
    have = info.columns
    listing = ", ".join(f"{k} ({v})" for k, v in list(have.items())[:30])
    missing = [c for c in columns if c.name not in have and c.required]
    if missing:
        names = ", ".join(f"'{c.name}' ({c.type})" for c in missing)
        raise DatasetError(
            f"{name} lacks the model's input column{'s' if len(missing) > 1 else ''} {names}; "
            f"it has: {listing}",
            hint="add the column to the dataset, or score with a dataset that has every "
            "column the model was trained on",
        )
    if target not in have:
        raise DatasetError(
            f"{name} has no target column '{target}'; it has: {listing}",
            hint="set scoring.target in modelci.yaml to the dataset's label column",
        )
    numeric = {"double", "float", "long", "integer"}
    for column in columns:
        found = have.get(column.name)
        if found is None or found == "empty":
            continue
        expected = column.type
        fits = (
            (expected in numeric and found in ("double", "long", "boolean"))
            or (expected == "boolean" and found in ("boolean", "long"))
            or (expected == "string" and found == "string")
            or expected == found
            or expected not in {*numeric, "boolean", "string"}
        )
        if not fits:
            raise DatasetError(
                f"{name}: column '{column.name}' holds {found} values, and the model expects "
                f"{expected}",
                hint=_SIGNATURE_HINT,
            )


def read_batches(
    path: Path,
    columns: Sequence[Column],
    target: str,
    *,
    batch_rows: int,
    max_rows: int,
    name: str | None = None,
) -> Iterator[Batch]:
    """The model's columns (converted to its signature's types) and the target, in batches.

    Only those columns are read. A value that does not convert is a DatasetError
    naming its column.
    """
    pa = _pyarrow()
    label = name or path.name
    info = inspect_table(path, name=label)
    if info.rows > max_rows:
        raise DatasetError(
            f"{label} has {info.rows:,} rows, more than the {max_rows:,} scoring takes",
            hint="score on a sample, or raise MODELCI_SCORING_MAX_ROWS",
        )
    if info.rows == 0:
        raise DatasetError(f"{label} has no rows", hint="give a dataset with rows to score")
    _check_columns(info, columns, target, label)
    wanted = [c for c in columns if c.name in info.columns]
    include = [*(c.name for c in wanted), target]
    types = {c.name: t for c in wanted if (t := _arrow_type(pa, c)) is not None}
    try:
        if info.format == "parquet":
            source = pa.parquet.ParquetFile(path).iter_batches(
                batch_size=batch_rows, columns=include
            )
        else:
            source = _open_csv(pa, path, include, types)
            include = [str(n) for n in source.schema.names]
        for record in source:
            for start in range(0, record.num_rows, batch_rows):
                part = record.slice(start, batch_rows)
                yield _batch(pa, part, wanted, types, target, label)
    except pa.ArrowInvalid as exc:
        raise DatasetError(
            f"{label}: a value does not fit the model's signature ({_first_line(exc, include)})",
            hint=_SIGNATURE_HINT,
        ) from None
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, info.format, exc, label, include) from None


def _first_line(exc: Exception, names: Sequence[str] = ()) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    # pyarrow's CSV errors number the column (among those read); name it.
    match = re.search(r"CSV column #(\d+)", line)
    if match and int(match.group(1)) < len(names):
        line = line.replace(match.group(0), f"CSV column '{names[int(match.group(1))]}'")
    return line


def _batch(
    pa: Any,
    record: Any,
    columns: Sequence[Column],
    types: dict[str, Any],
    target: str,
    name: str,
) -> Batch:
    out: dict[str, list[Any]] = {}
    for column in columns:
        values = record.column(column.name)
        wanted = types.get(column.name)
        if wanted is not None and values.type != wanted:
            try:
                values = values.cast(wanted, safe=True)
            except pa.ArrowInvalid as exc:
                raise DatasetError(
                    f"{name}: column '{column.name}' has a value that is not {column.type} "
                    f"({_first_line(exc)})",
                    hint=_SIGNATURE_HINT,
                ) from None
        out[column.name] = values.to_pylist()
    labels = record.column(target).to_pylist()
    if any(value is None for value in labels):
        raise DatasetError(
            f"{name}: the target column '{target}' has empty values",
            hint="drop the rows without a label from the scoring dataset",
        )
    return Batch(out, labels, record.num_rows)
