"""The OpenAPI description of the Open Inference Protocol routes (``oiphttp``):
the inference request's shape and every status each route answers. Pure data."""

from __future__ import annotations

from typing import Any

__all__ = ["HEALTH_RESPONSES", "INFER_BODY", "INFER_RESPONSES", "MODEL_RESPONSES"]

_DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
_PARAMETERS = {"type": "object", "additionalProperties": True}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "description": "a column of the model's signature"},
        "shape": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "minItems": 1,
            "maxItems": 2,
            "description": "[rows] or [rows, 1]",
        },
        "datatype": {"type": "string", "enum": _DATATYPES},
        "parameters": _PARAMETERS,
        "data": {"type": "array", "description": "row-major values, flat or nested"},
    },
}
INFER_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string"},
                    "parameters": _PARAMETERS,
                    "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
                    "outputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
                        },
                    },
                },
            }
        }
    },
}
_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                # "detail" alone: a path no route matches (the web framework's 404).
                "anyOf": [{"required": ["error"]}, {"required": ["detail"]}],
                "properties": {"error": {"type": "string"}},
            }
        }
    }
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_ERROR}


_NOT_FOUND = _error("No served model has that name, or not that version")
_UNAVAILABLE = _error("The model is not loaded, or its worker is restarting: retry shortly")
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The inference response: one output tensor, one value per row"},
    400: _error("The body is not JSON"),
    404: _NOT_FOUND,
    413: _error("The body is over the size limit: send fewer rows per request"),
    422: _error(
        "The tensors do not match the model's columns (each problem names its tensor), "
        "or the model raised on them"
    ),
    503: _UNAVAILABLE,
}
MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Ready, or the metadata"},
    404: _NOT_FOUND,
    503: _UNAVAILABLE,
}
HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Yes"},
    503: {"description": "Not yet: a champion is loading or its worker restarts"},
}
