"""The Open Inference Protocol (KServe's "V2", spoken by Triton and MLServer), REST.

Each input tensor is one of the model's columns, named as in its signature
(MLServer's pandas codec does the same), with shape ``[rows]`` or ``[rows, 1]``
and its data flat or nested (``[[1.5], [2.0]]``), as the protocol allows::

    {"id": "42", "inputs": [{"name": "age", "shape": [2], "datatype": "INT64",
                             "data": [31, 47]}, ...],
     "outputs": [{"name": "prediction"}]}                          # optional

A tensor's datatype must suit its column (a number column takes any
integer or floating type; a boolean BOOL; a string BYTES); its values then go
through the same :class:`Validator` as ``/models/{name}/predict`` bodies, so
every problem is reported at once, located by tensor name. The answer has one
output tensor, named after the spec's ``output_name``. Errors are the
protocol's ``{"error": message}`` with the FastAPI-style list beside it
(``detail``). No web framework here: ``http.py`` routes to these.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from modelci.deliver.modelspec import Column, ServingSpec
from modelci.errors import BadRequest
from modelci.serving.validation import Batch, Validator

__all__ = ["InferCall", "infer_response", "model_metadata", "output_datatype"]

_INTEGERS = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_FLOATS = frozenset({"FP16", "FP32", "FP64"})
# Which tensor datatypes a column of each type takes (values are checked after).
_ACCEPTS: dict[str, frozenset[str]] = {
    "double": _FLOATS | _INTEGERS,
    "float": _FLOATS | _INTEGERS,
    "long": _INTEGERS | _FLOATS,  # a whole float is a valid long, as in JSON bodies
    "integer": _INTEGERS | _FLOATS,
    "boolean": frozenset({"BOOL"}),
    "string": frozenset({"BYTES"}),
    "binary": frozenset({"BYTES"}),
    "datetime": frozenset({"BYTES"}),
}
# What the model metadata announces per column type.
DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
# Little-endian element types of binary tensors (Triton's binary tensor data extension).
_BINARY = {
    "BOOL": "|b1", "UINT8": "|u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "|i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip
_BYTES_LENGTH = struct.Struct("<I")
_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})


def _problem(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def _refuse(errors: list[dict[str, Any]]) -> BadRequest:
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"][1:]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return BadRequest(f"{where}: {first['msg']}{more}", errors=errors)


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major values of a tensor given in its natural nested form."""
    while data and type(data[0]) is list:
        flat: list[Any] = []
        for item in data:
            if type(item) is list:
                flat.extend(item)
            else:
                flat.append(item)
        data = flat
    return data


class InferCall:
    """One infer request's body; ``batch(validator)`` decodes and validates it (in the
    event loop or a thread), then ``id`` and ``outputs`` say what to answer."""

    def __init__(self, body: bytes, header_length: int | None = None) -> None:
        """``header_length``: the Inference-Header-Content-Length of a request with
        binary tensors (Triton's binary tensor data extension): the JSON comes first,
        the tensors' bytes after it, in the order of the inputs that say their size."""
        self.body = body
        self.header_length = header_length
        self.id: str | None = None
        self.outputs: list[str] | None = None  # requested output names; None: all
        self.output_name = "prediction"

    def batch(self, validator: Validator, spec: ServingSpec) -> Batch:
        payload = self._payload()
        self.output_name = spec.output_name
        if self.outputs is not None:
            unknown = [o for o in self.outputs if o != spec.output_name]
            if unknown:
                raise _refuse(
                    [
                        _problem(
                            ["outputs"],
                            f"no output named {unknown[0]!r}; the model has one: "
                            f"{spec.output_name!r}",
                            "enum",
                        )
                    ]
                )
        inputs = payload["inputs"]
        columns: dict[str, list[Any]] = {}
        errors: list[dict[str, Any]] = []
        kinds = {column.name: column for column in validator.columns}
        binaries = self._binaries(inputs)
        for index, tensor in enumerate(inputs):
            values = self._tensor(index, tensor, kinds, errors, binaries[index])
            if values is not None:
                columns[tensor["name"]] = values
        if errors:
            raise _refuse(errors)
        if not columns and not inputs:
            raise _refuse([_problem(["inputs"], "no input tensors given", "too_short")])
        try:
            return validator.validate_columns(columns)
        except BadRequest as exc:
            raise _refuse([_relocate(error) for error in exc.errors]) from None

    def _binaries(self, inputs: list[Any]) -> list[memoryview | None]:
        """Each input's binary data (None: given in JSON), by the sizes they declare."""
        raw = memoryview(self.body)[self.header_length or len(self.body) :]
        slices: list[memoryview | None] = []
        offset = 0
        for index, tensor in enumerate(inputs):
            parameters = tensor.get("parameters") if type(tensor) is dict else None
            size = parameters.get("binary_data_size") if type(parameters) is dict else None
            if size is None:
                slices.append(None)
                continue
            if type(size) is not int or size < 0 or offset + size > len(raw):
                raise _refuse(
                    [
                        _problem(
                            ["inputs", index, "parameters", "binary_data_size"],
                            f"{size!r} bytes are not there: {len(raw) - offset} are left after "
                            "the JSON (Inference-Header-Content-Length) and the tensors before",
                            "value_error",
                        )
                    ]
                )
            slices.append(raw[offset : offset + size])
            offset += size
        if offset != len(raw):
            raise _refuse(
                [
                    _problem(
                        [], f"{len(raw) - offset} bytes follow the binary tensors", "value_error"
                    )
                ]
            )
        return slices

    def _payload(self) -> dict[str, Any]:
        if self.header_length is not None and not 0 < self.header_length <= len(self.body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {self.header_length}, the body "
                f"{len(self.body)} bytes; it must give the length of the JSON part",
                errors=[_problem([], "bad Inference-Header-Content-Length", "value_error")],
                status=400,
            )
        try:
            payload = orjson.loads(memoryview(self.body)[: self.header_length or len(self.body)])
        except orjson.JSONDecodeError as exc:
            raise BadRequest(
                f"the request body is not valid JSON: {exc}",
                errors=[_problem([], f"the request body is not valid JSON: {exc}", "json_invalid")],
                status=400,
            ) from None
        if type(payload) is not dict or type(payload.get("inputs")) is not list:
            raise _refuse(
                [
                    _problem(
                        [],
                        'expected an inference request: {"inputs": [{"name": ..., "shape": '
                        '[...], "datatype": ..., "data": [...]}, ...]}',
                        "model_attributes_type",
                    )
                ]
            )
        extra = [key for key in payload if key not in _REQUEST_KEYS]
        if extra:
            raise _refuse(
                [
                    _problem([key], 'unexpected field; expected "id", "parameters", '
                             '"inputs", "outputs"', "extra_forbidden")
                    for key in extra[:50]
                ]
            )  # fmt: skip
        given_id = payload.get("id")
        if given_id is not None:
            if type(given_id) is not str:
                raise _refuse([_problem(["id"], "expected a string", "string_type")])
            self.id = given_id
        outputs = payload.get("outputs")
        if outputs is not None:
            if type(outputs) is not list or not all(
                type(o) is dict and type(o.get("name")) is str for o in outputs
            ):
                raise _refuse([_problem(["outputs"], 'expected [{"name": ...}, ...]', "list_type")])
            self.outputs = [o["name"] for o in outputs]
        return payload

    def _tensor(
        self,
        index: int,
        tensor: Any,
        kinds: dict[str, Column],
        errors: list[dict[str, Any]],
        binary: memoryview | None,
    ) -> list[Any] | None:
        """The flat values of one input tensor, or None after adding its problems."""
        loc: list[Any] = ["inputs", index]
        if type(tensor) is not dict or type(tensor.get("name")) is not str:
            errors.append(_problem(loc, 'expected {"name": ..., "shape": [...], '
                                   '"datatype": ..., "data": [...]}', "dict_type"))  # fmt: skip
            return None
        name = tensor["name"]
        loc = ["inputs", name]
        needed = ("shape", "datatype") if binary is not None else ("shape", "datatype", "data")
        missing = [key for key in needed if key not in tensor]
        extra = [key for key in tensor if key not in _TENSOR_KEYS]
        if missing or extra:
            errors.extend(_problem([*loc, key], "field required", "missing") for key in missing)
            errors.extend(
                _problem([*loc, key], "unexpected field", "extra_forbidden") for key in extra
            )
            return None
        column = kinds.get(name)
        if column is None:
            return []  # the validator reports the unknown column by name
        datatype, shape, data = tensor["datatype"], tensor["shape"], tensor.get("data")
        if type(datatype) is not str or datatype not in _ACCEPTS[column.type]:
            accepted = ", ".join(sorted(_ACCEPTS[column.type]))
            errors.append(
                _problem(
                    [*loc, "datatype"],
                    f"{datatype!r} does not suit the {column.type} column {name!r}; "
                    f"send one of {accepted} (the model metadata names "
                    f"{DATATYPES[column.type]})",
                    "enum",
                )
            )
            return None
        if (
            type(shape) is not list
            or not 1 <= len(shape) <= 2
            or not all(type(n) is int and n >= 0 for n in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            errors.append(
                _problem(
                    [*loc, "shape"],
                    f"expected [rows] or [rows, 1] (one column per tensor), got {shape!r}",
                    "value_error",
                )
            )
            return None
        if binary is not None:
            decoded = _from_binary(binary, datatype, shape[0])
            if isinstance(decoded, str):
                errors.append(
                    _problem([*loc, "parameters", "binary_data_size"], decoded, "value_error")
                )
                return None
            return decoded
        if type(data) is not list:
            errors.append(_problem([*loc, "data"], "expected a list of values", "list_type"))
            return None
        values = _flatten(data)
        if len(values) != shape[0]:
            errors.append(
                _problem(
                    [*loc, "data"],
                    f"the shape {shape} holds {shape[0]} values, the data has {len(values)}",
                    "value_error",
                )
            )
            return None
        return values


def _from_binary(raw: memoryview, datatype: str, rows: int) -> list[Any] | str:
    """A binary tensor's values (little-endian, row-major), or what is wrong with it."""
    if datatype == "BYTES":
        values: list[Any] = []
        offset = 0
        while offset < len(raw) and len(values) < rows:
            (size,) = _BYTES_LENGTH.unpack_from(raw, offset) if offset + 4 <= len(raw) else (-1,)
            if size < 0 or offset + 4 + size > len(raw):
                return "a BYTES element's length runs past the tensor's data"
            try:
                values.append(str(raw[offset + 4 : offset + 4 + size], "utf-8"))
            except UnicodeDecodeError:
                return "a BYTES element is not UTF-8 text"
            offset += 4 + size
        if len(values) != rows or offset != len(raw):
            return f"expected {rows} BYTES elements filling binary_data_size"
        return values
    dtype = np.dtype(_BINARY[datatype])
    if len(raw) != rows * dtype.itemsize:
        return (
            f"{rows} {datatype} values take {rows * dtype.itemsize} bytes; "
            f"binary_data_size says {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
        return "a BOOL element is neither 0 nor 1"
    if dtype.kind == "f" and not np.isfinite(array).all():
        return "NaN or infinity in the tensor: send finite numbers (JSON bodies cannot hold them)"
    return array.tolist()  # type: ignore[no-any-return]


def _relocate(error: dict[str, Any]) -> dict[str, Any]:
    """A Validator problem at ["columns", name, row] as ["inputs", name, "data", row]."""
    loc = error["loc"]
    if len(loc) >= 3 and loc[1] == "columns":
        rest = loc[3:]
        return {**error, "loc": ["body", "inputs", loc[2], *(["data", *rest] if rest else [])]}
    if len(loc) == 2 and loc[1] == "columns":
        return {**error, "loc": ["body", "inputs"]}
    return error


def output_datatype(predictions: list[Any]) -> tuple[str, list[int]]:
    """The tensor datatype and shape of a model's predictions (one per row)."""
    rows = len(predictions)
    if rows and type(predictions[0]) is list:
        width = len(predictions[0])
        flat = [value for row in predictions for value in row]
        return _scalar_type(flat), [rows, width]
    return _scalar_type(predictions), [rows]


def _scalar_type(values: list[Any]) -> str:
    kinds = {type(value) for value in values}
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int}:
        return "INT64"
    if kinds and kinds <= {int, float, type(None)}:
        return "FP64"
    return "BYTES"


def infer_response(
    call: InferCall, name: str, version: int, predictions: list[Any], request_id: str
) -> bytes:
    """The inference response JSON of a call that ``batch`` decoded."""
    datatype, shape = output_datatype(predictions)
    output = {"name": call.output_name, "shape": shape, "datatype": datatype, "data": predictions}
    return orjson.dumps(
        {
            "model_name": name,
            "model_version": str(version),
            "id": call.id if call.id is not None else request_id,
            # Ours, for POST /models/{name}/feedback (the client's "id" is theirs).
            "parameters": {"request_id": request_id},
            "outputs": [output],
        }
    )


def model_metadata(
    name: str, version: int, spec: ServingSpec, example: list[Any] | None
) -> dict[str, Any]:
    """The model metadata response: one input tensor per column, one output."""
    datatype = output_datatype(example)[0] if example else "BYTES"
    width = [len(example[0])] if example and type(example[0]) is list else []
    return {
        "name": name,
        "versions": [str(version)],
        "platform": f"modelci-{spec.loader}",
        "inputs": [
            {"name": c.name, "datatype": DATATYPES[c.type], "shape": [-1]} for c in spec.columns
        ],
        "outputs": [{"name": spec.output_name, "datatype": datatype, "shape": [-1, *width]}],
    }
