"""The serving routes' OpenAPI description, with one predict path per served model.

FastAPI describes the routes as declared: one templated ``/models/{name}/predict``
whose body it cannot know. :func:`describe` adds, for every loaded model, its
own ``/models/NAME/predict`` whose body schema carries that model's columns
(types, ranges, allowed values of categorical ones) and whose examples are
built from its input example (the one its smoke test passed), plus the error
answers every predict can give. Pure: dicts in, dicts out; ``serving/http.py``
calls it on every ``/openapi.json``, since the served models change.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from modelci.deliver.modelspec import Column
from modelci.serving.validation import BOUNDS

__all__ = ["ModelDoc", "describe", "model_body", "predict_responses"]

_ERROR = "ServingError"
_ERROR_ITEM = "ServingErrorItem"
_PREDICTION = "Prediction"
_TYPES: dict[str, dict[str, Any]] = {
    "double": {"type": "number"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "binary": {"type": "string"},
    # Not format: date-time (RFC 3339): the check is Python's ISO 8601 parser.
    "datetime": {"type": "string", "description": "an ISO 8601 date-time"},
    **{
        kind: {"type": "integer" if kind != "float" else "number", "minimum": low, "maximum": high}
        for kind, (low, high) in BOUNDS.items()
    },
}
_STATUSES = {
    "400": "The body is empty or not JSON",
    "404": "No served model has that name",
    "409": "POST /predict with more than one model served: name the model",
    "413": "The body is over the size limit: send fewer rows per request",
    "422": "Inputs do not match the model's columns (each problem names its row and field), "
    "or the model raised on them",
    "503": "No version of the model is loaded, or its worker failed: retry shortly",
}


@dataclass(frozen=True)
class ModelDoc:
    """What the description needs of one loaded model."""

    name: str
    version: int
    columns: tuple[Column, ...]
    input_example: list[dict[str, Any]]
    max_rows: int


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _components() -> dict[str, Any]:
    return {
        _ERROR_ITEM: {
            "type": "object",
            "properties": {
                "loc": {
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                },
                "msg": {"type": "string"},
                "type": {"type": "string"},
            },
            "required": ["loc", "msg", "type"],
        },
        _ERROR: {
            "type": "object",
            "properties": {
                "detail": {
                    "anyOf": [{"type": "string"}, {"type": "array", "items": _ref(_ERROR_ITEM)}],
                    "description": "what was wrong and how to fix it; for invalid inputs, "
                    "each problem with its location (row, field)",
                }
            },
            "required": ["detail"],
        },
        _PREDICTION: {
            "type": "object",
            "properties": {
                "predictions": {"type": "array", "description": "one per row, in order"},
                "model": {"type": "string"},
                "version": {"type": "integer"},
            },
            "required": ["predictions", "model", "version"],
        },
    }


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(_ERROR)}}}


def predict_responses() -> dict[str, Any]:
    """Every answer a predict route gives."""
    return {
        "200": {
            "description": "One prediction per row",
            "headers": {
                "x-model-version": {
                    "description": "the model version that answered",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            },
            "content": {"application/json": {"schema": _ref(_PREDICTION)}},
        },
        **{status: _error_response(text) for status, text in _STATUSES.items()},
    }


def _value(column: Column) -> dict[str, Any]:
    if column.categories is not None:
        schema: dict[str, Any] = {"type": "string", "enum": list(column.categories)}
    else:
        schema = dict(_TYPES.get(column.type, {}))
    return schema if column.required else {"anyOf": [schema, {"type": "null"}]}


def _envelope(key: str, schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {
        "title": title,
        "type": "object",
        "properties": {key: schema},
        "required": [key],
        "additionalProperties": False,
    }


def model_body(columns: tuple[Column, ...], max_rows: int) -> dict[str, Any]:
    """The JSON schema of a predict body for these columns: every accepted shape."""
    names = [column.name for column in columns]
    required = [column.name for column in columns if column.required]
    record = {
        "title": "one record",
        "type": "object",
        "properties": {column.name: _value(column) for column in columns},
        "required": required,
        "additionalProperties": False,
    }
    rows = {"type": "array", "items": record, "minItems": 1, "maxItems": max_rows}
    column_lists = {
        "type": "object",
        "description": "one list per column, all of the same length",
        "properties": {
            column.name: {
                "type": "array",
                "items": _value(column),
                "minItems": 1,
                "maxItems": max_rows,
            }
            for column in columns
        },
        "required": required,
        "additionalProperties": False,
    }
    split = {
        "type": "object",
        "properties": {
            "columns": {
                "type": "array",
                "items": {"type": "string", "enum": names},
                "uniqueItems": True,
                "description": "the order of the values in each row; default: the model's",
            },
            "data": {
                "type": "array",
                "items": {"type": "array", "description": "one value per column"},
                "minItems": 1,
                "maxItems": max_rows,
            },
            "index": {"type": "array", "description": "ignored (MLflow's row labels)"},
        },
        "required": ["data"],
        "additionalProperties": False,
    }
    return {
        "anyOf": [
            _envelope("records", rows, "records"),
            _envelope("dataframe_records", rows, "MLflow's dataframe_records"),
            _envelope("instances", rows, "instances"),
            _envelope("columns", column_lists, "column lists"),
            _envelope("dataframe_split", split, "MLflow's dataframe_split"),
            {**rows, "title": "a list of records"},
            record,
        ]
    }


def _examples(columns: tuple[Column, ...], records: list[dict[str, Any]]) -> dict[str, Any]:
    names = [column.name for column in columns]
    rows = [{name: record.get(name) for name in names} for record in records]
    return {
        "records": {"summary": "Rows as records", "value": {"records": rows}},
        "columns": {
            "summary": "Column lists",
            "value": {"columns": {name: [row[name] for row in rows] for name in names}},
        },
        "dataframe_split": {
            "summary": "MLflow's dataframe_split",
            "value": {
                "dataframe_split": {
                    "columns": names,
                    "data": [[row[name] for name in names] for row in rows],
                }
            },
        },
        "one_record": {"summary": "A single record", "value": rows[0]},
    }


def _generic_body() -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": ["object", "array"],
                    "description": "records, columns, dataframe_records, dataframe_split, a "
                    "list of records or one record; each served model's own path "
                    "(/models/NAME/predict) describes its columns, and GET /models/NAME "
                    "lists them",
                }
            }
        },
    }


def _model_operation(base: dict[str, Any], model: ModelDoc) -> dict[str, Any]:
    operation = copy.deepcopy(base)
    operation.pop("parameters", None)
    operation["summary"] = f"Predict with {model.name} (version {model.version})"
    operation["operationId"] = "predict_" + re.sub(r"\W", "_", model.name)
    content: dict[str, Any] = {"schema": model_body(model.columns, model.max_rows)}
    if model.input_example:
        content["examples"] = _examples(model.columns, model.input_example)
    operation["requestBody"] = {"required": True, "content": {"application/json": content}}
    return operation


def _operation(schema: dict[str, Any], path: str, method: str) -> dict[str, Any] | None:
    operation = schema.get("paths", {}).get(path, {}).get(method)
    return operation if isinstance(operation, dict) else None


def describe(
    base: dict[str, Any], models: list[ModelDoc], *, prefix: str = "", served: int
) -> dict[str, Any]:
    """A copy of FastAPI's description (base) with the serving routes' bodies and
    answers, and a predict path per loaded model. served counts the models being
    served, loaded or not (``POST /predict`` takes a body of the only one)."""
    schema = copy.deepcopy(base)
    schema.setdefault("components", {}).setdefault("schemas", {}).update(_components())
    generic = _operation(schema, f"{prefix}/models/{{name}}/predict", "post")
    only = _operation(schema, f"{prefix}/predict", "post")
    for operation in (generic, only):
        if operation is not None:
            operation["requestBody"] = _generic_body()
            operation["responses"] = predict_responses()
    for path, statuses in (
        (f"{prefix}/models/{{name}}", ("404",)),
        (f"{prefix}/models/{{name}}/form", ("404", "503")),
    ):
        operation = _operation(schema, path, "get")
        if operation is not None:
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # a path of any text is valid: never answered
            responses.update({status: _error_response(_STATUSES[status]) for status in statuses})
    if generic is None:
        return schema
    paths = schema["paths"]
    for model in sorted(models, key=lambda m: m.name):
        if "{" in model.name or "}" in model.name:
            continue  # not expressible as a concrete path; the templated one covers it
        path = f"{prefix}/models/{quote(model.name, safe='/')}/predict"
        paths[path] = {"post": _model_operation(generic, model)}
    if only is not None and served == 1 and len(models) == 1:
        operation = _model_operation(only, models[0])
        operation["summary"] = only.get("summary", operation["summary"])
        operation["operationId"] = only.get("operationId", operation["operationId"])
        paths[f"{prefix}/predict"]["post"] = operation
    return schema
