"""Request bodies against a model's columns: every accepted shape, every rejection."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from modelci.deliver.modelspec import Column
from modelci.errors import BadRequest
from modelci.serving.validation import Validator

COLUMNS = (
    Column("age", "long"),
    Column("income", "double"),
    Column("member", "boolean"),
    Column("plan", "string", categories=("basic", "pro")),
    Column("note", "string", required=False),
)
GOOD = {"age": 30, "income": 1200.5, "member": True, "plan": "pro", "note": "hi"}


def check(payload: Any, **kwargs: Any) -> Any:
    return Validator(COLUMNS, **kwargs).parse(orjson.dumps(payload))


def errors_of(payload: Any, **kwargs: Any) -> list[dict[str, Any]]:
    with pytest.raises(BadRequest) as caught:
        check(payload, **kwargs)
    assert caught.value.http_status == 422
    return caught.value.errors


@pytest.mark.parametrize(
    "payload",
    [
        {"records": [GOOD, GOOD]},
        {"dataframe_records": [GOOD, GOOD]},
        [GOOD, GOOD],
        {"columns": {name: [value, value] for name, value in GOOD.items()}},
        {"dataframe_split": {"columns": list(GOOD), "data": [list(GOOD.values())] * 2}},
    ],
)
def test_every_shape_gives_the_same_columns(payload: Any) -> None:
    batch = check(payload)
    assert batch.rows == 2
    assert list(batch.columns) == ["age", "income", "member", "plan", "note"]
    assert batch.columns["plan"] == ["pro", "pro"]
    assert batch.columns["income"] == [1200.5, 1200.5]


def test_a_single_record_and_optional_columns() -> None:
    record = {k: v for k, v in GOOD.items() if k != "note"}
    batch = check(record)
    assert batch.rows == 1
    assert batch.columns["note"] == [None]


def test_numbers_follow_mlflow_rules() -> None:
    # An integer is a valid double, a whole double a valid long.
    assert check({**GOOD, "income": 5, "age": 30.0}).rows == 1
    assert errors_of({**GOOD, "age": 30.5})[0]["type"] == "int_type"
    # A bool is not a number, and a number is not a bool.
    assert errors_of({**GOOD, "income": True})[0]["type"] == "float_type"
    assert errors_of({**GOOD, "member": 1})[0]["type"] == "bool_type"


def test_wrong_type_names_row_and_column() -> None:
    errors = errors_of({"records": [GOOD, {**GOOD, "income": "lots"}]})
    assert errors == [
        {
            "loc": ["body", "records", 1, "income"],
            "msg": "expected a number, got the string 'lots'",
            "type": "float_type",
        }
    ]
    assert errors_of({**GOOD, "plan": 3})[0]["type"] == "string_type"


def test_categorical_value_outside_the_allowed_set() -> None:
    [error] = errors_of({"records": [{**GOOD, "plan": "gold"}]})
    assert error["loc"] == ["body", "records", 0, "plan"]
    assert error["type"] == "enum"
    assert "'basic', 'pro'" in error["msg"]


def test_unknown_and_missing_fields() -> None:
    record = {k: v for k, v in GOOD.items() if k != "age"} | {"agee": 30}
    errors = errors_of({"records": [record]})
    assert {(tuple(e["loc"]), e["type"]) for e in errors} == {
        (("body", "records", 0, "agee"), "extra_forbidden"),
        (("body", "records", 0, "age"), "missing"),
    }
    assert errors_of({**GOOD, "age": None})[0]["type"] == "missing"
    errors = errors_of({"columns": {"age": [1]}})
    assert ["body", "columns", "income"] in [e["loc"] for e in errors]


def test_empty_and_too_many_rows() -> None:
    assert errors_of({"records": []})[0]["type"] == "too_short"
    assert errors_of({"records": [GOOD] * 3}, max_rows=2)[0]["type"] == "too_long"


def test_bad_json_and_bad_shapes() -> None:
    validator = Validator(COLUMNS)
    for body in (b"{not json", b""):
        with pytest.raises(BadRequest) as caught:
            validator.parse(body)
        assert caught.value.http_status == 400
    assert errors_of({"records": {"age": 1}})[0]["type"] == "list_type"
    assert errors_of({"records": [1]})[0]["type"] == "dict_type"
    assert errors_of("text")[0]["type"] == "model_attributes_type"
    assert errors_of({"records": [GOOD], "extra": 1})[0]["loc"] == ["body", "extra"]
    split = {"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}
    assert errors_of(split)[0]["loc"] == ["body", "dataframe_split", "data", 0]
    split = {"dataframe_split": {"colums": ["age"], "data": [[1]]}}
    assert errors_of(split)[0]["loc"] == ["body", "dataframe_split", "colums"]
    split = {"dataframe_split": {"index": [0], "data": [list(GOOD.values())]}}
    assert check(split).rows == 1
    split = {"dataframe_split": {"columns": ["age", "age"], "data": [[1, 2]]}}
    assert errors_of(split)[0] == {
        "loc": ["body", "dataframe_split", "columns"],
        "msg": "column names repeat: 'age'",
        "type": "unique_items",
    }


def test_errors_are_capped() -> None:
    errors = errors_of({"records": [{**GOOD, "plan": "x"}] * 500})
    assert len(errors) == 51
    assert errors[-1]["type"] == "too_many_errors"
    assert "first 50 problems" in errors[-1]["msg"]
    # Many unknown fields in one record, or in the columns shape, are capped too.
    wide = {**GOOD, **{f"extra{i}": 1 for i in range(5000)}}
    assert len(errors_of({"records": [wide]})) == 51
    assert len(errors_of({"columns": {f"c{i}": [1] for i in range(5000)}})) == 51
    assert len(errors_of({"records": [GOOD], **{f"k{i}": 1 for i in range(5000)}})) == 51


RANGED = (
    Column("count", "long"),
    Column("small", "integer"),
    Column("ratio", "float"),
    Column("amount", "double"),
)
FITS = {"count": 2**63 - 1, "small": -(2**31), "ratio": 3.4e38, "amount": 1e308}


def test_numbers_must_fit_their_column_type() -> None:
    # The extremes of each type pass, whole floats for integers too.
    assert Validator(RANGED).parse(orjson.dumps({"records": [FITS, FITS]})).rows == 2
    assert Validator(RANGED).parse(orjson.dumps({**FITS, "count": -9.0e18})).rows == 1
    cases = [
        ("count", 2**63, "too large for a 64-bit integer", "less_than_equal"),
        ("count", 1e308, "too large for a 64-bit integer", "less_than_equal"),
        ("count", -1e19, "too small for a 64-bit integer", "greater_than_equal"),
        ("small", 2**31, "too large for a 32-bit integer", "less_than_equal"),
        ("ratio", 1e308, "too large for a 32-bit float", "less_than_equal"),
        ("ratio", -1e39, "too small for a 32-bit float", "greater_than_equal"),
    ]
    for name, value, why, kind in cases:
        for payload, loc in (
            ({"records": [FITS, {**FITS, name: value}]}, ["body", "records", 1, name]),
            ({**FITS, name: value}, ["body", 0, name]),
            (
                {"columns": {k: [v, v] for k, v in {**FITS, name: value}.items()}},
                ["body", "columns", name, 0],
            ),
        ):
            with pytest.raises(BadRequest) as caught:
                Validator(RANGED).parse(orjson.dumps(payload))
            error = caught.value.errors[0]
            assert (error["loc"], error["type"]) == (loc, kind), (name, value)
            assert why in error["msg"] and repr(value) in error["msg"]


def test_echoed_values_and_names_are_cut() -> None:
    huge = "x" * 1_000_000
    errors = errors_of({"records": [{**GOOD, "plan": huge, huge: 1}] * 200})
    body = orjson.dumps(errors)
    assert len(body) < 50_000
    by_type = {e["type"]: e for e in errors}
    assert "1000000 characters" in by_type["enum"]["msg"]
    assert len(by_type["extra_forbidden"]["loc"][-1]) <= 101
    assert len(by_type["extra_forbidden"]["msg"]) < 400


def test_categorical_error_names_the_field_and_the_allowed_values() -> None:
    [error] = errors_of({**GOOD, "plan": "gold"})
    assert error["msg"] == "'gold' is not an allowed value of 'plan'; allowed: 'basic', 'pro'"
