"""Predict request bodies: parsed and checked against a model's columns.

Accepted shapes (MLflow's two included, for drop-in clients)::

    {"records": [{col: value, ...}, ...]}        also "dataframe_records"
    {"columns": {col: [value, ...], ...}}
    {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
    [{col: value, ...}, ...]                     a bare list of records
    {col: value, ...}                            one record

Every problem is reported at once, FastAPI-style: ``{"loc": [...], "msg":
..., "type": ...}`` with the row index and the column. Type rules follow
MLflow's: a bool is not a number, an integer is a valid double, a double is a
valid long only when it is whole, and a number must fit its column's type (a
long in 64 bits, an integer in 32, a float in single precision) so that the
model worker's arrays never overflow. Echoed values and field names are cut to
100 characters and at most 50 problems are reported, so a huge invalid body
cannot produce a huge answer. Plain loops, no per-request models: this is on
the hot path.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import orjson

from modelci.deliver.modelspec import Column
from modelci.errors import BadRequest

__all__ = ["Batch", "Validator"]

_SPLIT_KEYS = frozenset({"columns", "data", "index"})
_ENVELOPES = ("records", "dataframe_records", "columns", "dataframe_split", "instances")
_MAX_ERRORS = 50
_SHOWN_CATEGORIES = 20
_SHOWN_CHARS = 100
_SHOWN_NAMES = 20
# Inclusive ranges per column type (MLflow's: long is int64, integer int32, float float32).
FLOAT32_MAX = 3.4028234663852886e38
BOUNDS: dict[str, tuple[float, float]] = {
    "long": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "float": (-FLOAT32_MAX, FLOAT32_MAX),
}
_BOUND_NAMES = {
    "long": "a 64-bit integer",
    "integer": "a 32-bit integer",
    "float": "a 32-bit float",
}


@dataclass(frozen=True)
class Batch:
    """Validated inputs, column by column in the model's order."""

    columns: dict[str, list[Any]]
    rows: int


def _error(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {
        "loc": ["body", *(_cut(part) if type(part) is str else part for part in loc)],
        "msg": msg,
        "type": kind,
    }


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _shown(value: Any) -> str:
    """repr of a value from the request, cut to at most ~100 characters."""
    if type(value) is str and len(value) > _SHOWN_CHARS:
        return repr(value[:_SHOWN_CHARS]) + f"… ({len(value)} characters)"
    return _cut(repr(value))


def _range(column: Column, value: float) -> tuple[str, str] | None:
    low, high = BOUNDS[column.type]
    if low <= value <= high:
        return None
    what = _BOUND_NAMES[column.type]
    if value > high:
        return f"{_describe(value)} is too large for {what}: at most {high}", "less_than_equal"
    return f"{_describe(value)} is too small for {what}: at least {low}", "greater_than_equal"


def _check(column: Column, value: Any, allowed: frozenset[str] | None) -> tuple[str, str] | None:
    """(message, type) when value does not fit column, else None."""
    kind = column.type
    if value is None:
        if column.required:
            return "a value is required (null given)", "missing"
        return None
    if kind in ("double", "float"):
        # A double needs no range check: orjson refuses NaN, Infinity and 1e309.
        if type(value) is int or type(value) is float:
            return _range(column, value) if kind == "float" else None
        return f"expected a number, got {_describe(value)}", "float_type"
    if kind in ("long", "integer"):
        if type(value) is int or (type(value) is float and value.is_integer()):
            return _range(column, value)
        return f"expected an integer, got {_describe(value)}", "int_type"
    if kind == "boolean":
        return (
            None
            if type(value) is bool
            else (f"expected true or false, got {_describe(value)}", "bool_type")
        )
    if type(value) is not str:
        return f"expected a string, got {_describe(value)}", "string_type"
    if allowed is not None and value not in allowed:
        shown = sorted(allowed)[:_SHOWN_CATEGORIES]
        more = ", ..." if len(allowed) > _SHOWN_CATEGORIES else ""
        return (
            f"{_shown(value)} is not an allowed value of {_shown(column.name)}; "
            f"allowed: {', '.join(map(repr, shown))}{more}",
            "enum",
        )
    if kind == "datetime":
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            return f"expected an ISO 8601 date-time, got {_shown(value)}", "datetime_parsing"
    return None


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {_shown(value)}"
    if isinstance(value, str):
        return f"the string {_shown(value)}"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


class Validator:
    """Checks request bodies against one model version's columns."""

    def __init__(self, columns: tuple[Column, ...], *, max_rows: int = 10_000) -> None:
        self.columns = columns
        self.names = [column.name for column in columns]
        self._known = frozenset(self.names)
        self._allowed = {
            c.name: None if c.categories is None else frozenset(c.categories) for c in columns
        }
        self.max_rows = max_rows

    def parse(self, body: bytes) -> Batch:
        """The validated batch of a raw request body; BadRequest otherwise."""
        if not body.strip():
            fields = ", ".join(f'"{name}": ...' for name in self.names[:3])
            raise BadRequest(
                f'the request body is empty; send JSON such as {{"records": [{{{fields}}}]}}',
                status=400,
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(
                f"the request body is not valid JSON: {exc}",
                errors=[_error([], f"the request body is not valid JSON: {exc}", "json_invalid")],
                status=400,
            ) from None
        return self.validate(payload)

    def validate(self, payload: Any) -> Batch:
        if isinstance(payload, list):
            return self._records(payload, ["records"])
        if not isinstance(payload, dict):
            raise self._fail(
                [
                    _error(
                        [],
                        "expected a JSON object with records or columns",
                        "model_attributes_type",
                    )
                ]
            )
        keys = [key for key in payload if key in _ENVELOPES and key not in self._known]
        if not keys:
            return self._records([payload], [])
        if len(payload) != 1:
            extra = [key for key in payload if key != keys[0]]
            raise self._fail(
                [
                    _error([key], f"unexpected field next to {keys[0]!r}", "extra_forbidden")
                    for key in islice(extra, _MAX_ERRORS)
                ]
            )
        key = keys[0]
        value = payload[key]
        if key in ("records", "dataframe_records", "instances"):
            return self._records(value, [key])
        if key == "columns":
            return self._columns(value)
        return self._split(value)

    def validate_columns(self, given: dict[str, list[Any]]) -> Batch:
        """A batch from ``{column: [values]}`` (the Open Inference Protocol's tensors)."""
        return self._columns(given)

    def _fail(self, errors: list[dict[str, Any]]) -> BadRequest:
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        shown = errors[:_MAX_ERRORS]
        if len(errors) >= _MAX_ERRORS:
            # Collection stops at the cap, so more problems may be left unreported.
            shown.append(
                _error(
                    [],
                    f"only the first {_MAX_ERRORS} problems are listed; fix them and send "
                    "again to see any others",
                    "too_many_errors",
                )
            )
        return BadRequest(f"{where}: {first['msg']}{more}", errors=shown)

    def _size(self, rows: int, loc: list[Any]) -> None:
        if rows == 0:
            raise self._fail([_error(loc, "no rows given: send at least one", "too_short")])
        if rows > self.max_rows:
            raise self._fail(
                [_error(loc, f"{rows} rows given; at most {self.max_rows} per request", "too_long")]
            )

    def _records(self, records: Any, loc: list[Any]) -> Batch:
        if not isinstance(records, list):
            raise self._fail([_error(loc, "expected a list of records", "list_type")])
        self._size(len(records), loc)
        known = self._known
        if all(type(record) is dict and record.keys() <= known for record in records):
            # The usual case, column by column: one pass per column over values
            # of the right type; only a column that fails is checked value by value.
            columns = {}
            for column in self.columns:
                values = [record.get(column.name, _MISSING) for record in records]
                if not self._column_ok(column, values):
                    break
                columns[column.name] = values
            else:
                return Batch(columns, len(records))
        return self._records_slowly(records, loc)

    def _column_ok(self, column: Column, values: list[Any]) -> bool:
        accepted = _FAST_TYPES.get(column.type)
        # map(type, ...) runs in C: four times a generator's speed (bench/serving.py).
        if accepted is None or not accepted.issuperset(map(type, values)):
            return False
        bounds = BOUNDS.get(column.type)
        if bounds is not None and values:
            try:
                array = np.asarray(values, dtype=np.float64 if column.type == "float" else np.int64)
            except OverflowError:  # an integer beyond 64 bits
                return False
            if not (bounds[0] <= array.min() and array.max() <= bounds[1]):
                return False
        allowed = self._allowed[column.name]
        return allowed is None or allowed.issuperset(values)

    def _records_slowly(self, records: list[Any], loc: list[Any]) -> Batch:
        columns: dict[str, list[Any]] = {name: [] for name in self.names}
        errors: list[dict[str, Any]] = []
        known, allowed = self._known, self._allowed
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                errors.append(_error([*loc, index], "expected an object", "dict_type"))
                continue
            for name in islice((name for name in record if name not in known), _MAX_ERRORS):
                errors.append(_error([*loc, index, name], self._unknown(name), "extra_forbidden"))
            for column in self.columns:
                value = record.get(column.name, _MISSING)
                if value is _MISSING:
                    if column.required:
                        errors.append(
                            _error([*loc, index, column.name], "field required", "missing")
                        )
                    value = None
                else:
                    problem = _check(column, value, allowed[column.name])
                    if problem is not None:
                        errors.append(_error([*loc, index, column.name], *problem))
                columns[column.name].append(value)
            if len(errors) >= _MAX_ERRORS:
                break
        if errors:
            raise self._fail(errors)
        return Batch(columns, len(records))

    def _columns(self, given: Any) -> Batch:
        if not isinstance(given, dict):
            raise self._fail(
                [_error(["columns"], "expected an object of column lists", "dict_type")]
            )
        unknown = islice((name for name in given if name not in self._known), _MAX_ERRORS)
        errors = [
            _error(["columns", name], self._unknown(name), "extra_forbidden") for name in unknown
        ]
        lengths = {len(v) for v in given.values() if isinstance(v, list)}
        rows = max(lengths) if lengths else 0
        if len(lengths) > 1:
            errors.append(
                _error(
                    ["columns"],
                    f"the columns have different lengths ({sorted(lengths)})",
                    "value_error",
                )
            )
        columns: dict[str, list[Any]] = {}
        for column in self.columns:
            values = given.get(column.name, _MISSING)
            if values is _MISSING:
                if column.required:
                    errors.append(_error(["columns", column.name], "field required", "missing"))
                values = [None] * rows
            elif not isinstance(values, list):
                errors.append(_error(["columns", column.name], "expected a list", "list_type"))
                continue
            columns[column.name] = values
            if self._column_ok(column, values):
                continue  # the usual case: no value by value check
            allowed = self._allowed[column.name]
            for index, value in enumerate(values):
                if len(errors) >= _MAX_ERRORS:
                    break
                problem = _check(column, value, allowed)
                if problem is not None:
                    errors.append(_error(["columns", column.name, index], *problem))
        if errors:
            raise self._fail(errors)
        self._size(rows, ["columns"])
        return Batch(columns, rows)

    def _split(self, split: Any) -> Batch:
        loc = ["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise self._fail(
                [_error(loc, 'expected {"columns": [...], "data": [[...], ...]}', "dict_type")]
            )
        # A misspelt "columns" must not silently mean the model's own order.
        extra = [key for key in split if key not in _SPLIT_KEYS]
        if extra:
            raise self._fail(
                [
                    _error(
                        [*loc, key],
                        'unexpected field; expected "columns", "data", "index"',
                        "extra_forbidden",
                    )
                    for key in extra[:_MAX_ERRORS]
                ]
            )
        names = split.get("columns", self.names)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self._fail(
                [_error([*loc, "columns"], "expected a list of column names", "list_type")]
            )
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:
            shown = ", ".join(map(_shown, repeated[:_SHOWN_NAMES]))
            raise self._fail(
                [_error([*loc, "columns"], f"column names repeat: {shown}", "unique_items")]
            )
        records: list[Any] = []
        for index, row in enumerate(split["data"]):
            if not isinstance(row, list) or len(row) != len(names):
                raise self._fail(
                    [
                        _error(
                            [*loc, "data", index],
                            f"expected a list of {len(names)} values",
                            "list_type",
                        )
                    ]
                )
            records.append(dict(zip(names, row, strict=True)))
        return self._records(records, [*loc, "data"])

    def _unknown(self, name: str) -> str:
        more = ", ..." if len(self.names) > _SHOWN_NAMES else ""
        takes = ", ".join(map(_cut, self.names[:_SHOWN_NAMES])) + more
        return f"unknown field {_shown(name)}; the model takes: {takes}"


_MISSING: Any = object()
# Value types that need no further check, per column type (a whole float given
# for a long, a date-time string, null: the slow path).
_FAST_TYPES: dict[str, frozenset[type]] = {
    "double": frozenset({float, int}),
    "float": frozenset({float, int}),
    "long": frozenset({int}),
    "integer": frozenset({int}),
    "boolean": frozenset({bool}),
    "string": frozenset({str}),
    "binary": frozenset({str}),
}
