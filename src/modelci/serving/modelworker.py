"""The model worker: loads one model version and answers predictions over a pipe.

This file is copied into the worker's sandbox and run there by the model
environment's Python, so it imports only the standard library, numpy and (when
installed) pandas, and nothing from modelci. Usage: ``python modelworker.py
CONFIG.json``.

Frames in both directions are a 4-byte big-endian length and a body; a body
is a 4-byte length, a JSON header of that length, then raw bytes (the host's
side: ``serving/frames.py``). The first frame out says whether the model loaded
(``{"ok": true, "ready": true}``). A request's header is ``{"rows": n, "kinds":
"ffij", "sizes": [...]}`` (``"method"`` to call another method than the
configured one): one letter per configured column, in order, ``f`` a float64
buffer of n values, ``i`` an int64 one, ``j`` JSON of ``sizes``' next length.
The answer is ``{"ok": true, "dtype": "<f8", "shape": [n]}`` and the numeric
buffer, or ``{"ok": true, "predictions": [...]}`` when the output is not a plain
numeric array, or ``{"ok": false, "error": "..."}``. Only numbers and JSON leave
this process: the host never unpickles what a model returns.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import traceback
from typing import IO, Any

_HEADER = struct.Struct(">I")
_MAX_REQUEST = 256 << 20
_NUMERIC = {"double": "float64", "float": "float64", "long": "int64", "integer": "int64"}


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _send(out: IO[bytes], message: dict[str, Any], raw: bytes = b"") -> None:
    try:
        body = json.dumps(message, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:  # NaN or infinity in the predictions: JSON has no such numbers
        body = json.dumps(_finite(message), separators=(",", ":")).encode()
    except TypeError as exc:
        error = {"ok": False, "error": f"the output is not JSON-serialisable: {exc}"}
        body, raw = json.dumps(error).encode(), b""
    size = _HEADER.size + len(body) + len(raw)
    out.write(b"".join((_HEADER.pack(size), _HEADER.pack(len(body)), body, raw)))
    out.flush()


def _columns(body: bytes, names: list[str], numpy: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the columns of a request frame."""
    (size,) = _HEADER.unpack_from(body)
    start = _HEADER.size + size
    header = json.loads(body[_HEADER.size : start])
    rows = int(header["rows"])
    sizes = iter(header["sizes"])
    columns: dict[str, Any] = {}
    view = memoryview(body)
    if header["kinds"] == "f" * len(names):
        # One block, a column after another: the matrix is its transposed view.
        block = numpy.frombuffer(view[start:], dtype="<f8").reshape(len(names), rows)
        header["block"] = block
        return header, dict(zip(names, block, strict=True))
    for name, kind in zip(names, header["kinds"], strict=True):
        if kind == "j":
            end = start + int(next(sizes))
            columns[name] = json.loads(bytes(view[start:end]))
        else:
            end = start + 8 * rows
            columns[name] = numpy.frombuffer(view[start:end], dtype="<f8" if kind == "f" else "<i8")
        start = end
    return header, columns


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


def _load(config: dict[str, Any]) -> Any:
    for path in config["code_paths"]:
        sys.path.insert(0, path)
    loader = config["loader"]
    with open(config["artifact"], "rb") as handle:
        if loader == "joblib":
            import joblib  # type: ignore[import-untyped,import-not-found,unused-ignore]

            return joblib.load(handle)
        if loader == "cloudpickle":
            import cloudpickle  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
        import pickle

        return pickle.load(handle)  # noqa: S301  (untrusted, which is why this runs sandboxed)


class _Model:
    def __init__(self, model: Any, config: dict[str, Any]) -> None:
        import numpy

        self.numpy = numpy
        self.model = model
        self.method = getattr(model, config["method"])
        self.columns: list[dict[str, Any]] = config["columns"]
        try:
            import pandas  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            pandas = None
        all_numeric = all(column["type"] in _NUMERIC for column in self.columns)
        # A plain array is several times faster than a DataFrame; use it when the
        # model was fitted without column names and every column is a number.
        self.pandas = pandas
        # Without pandas, mixed columns go in an object array (rows of Python values).
        self.array_dtype = "float64" if all_numeric else object
        self.use_frame = pandas is not None and (
            hasattr(model, "feature_names_in_") or not all_numeric
        )

    def predict(
        self, columns: dict[str, Any], rows: int, method: str | None = None, block: Any = None
    ) -> Any:
        """The model's output for one request: a numpy array when it gave one."""
        numpy = self.numpy
        if self.use_frame:
            data = {}
            for column in self.columns:
                values = columns[column["name"]]
                dtype = _NUMERIC.get(column["type"])
                if (
                    dtype == "int64"
                    and not isinstance(values, numpy.ndarray)  # a buffer has no nulls
                    and any(value is None for value in values)
                ):
                    dtype = "float64"
                data[column["name"]] = numpy.asarray(values, dtype=dtype or object)
            inputs: Any = self.pandas.DataFrame(data, columns=[c["name"] for c in self.columns])
        elif block is not None and self.array_dtype == "float64":
            inputs = block.T
        else:
            inputs = numpy.empty((rows, len(self.columns)), dtype=self.array_dtype)
            for index, column in enumerate(self.columns):
                inputs[:, index] = columns[column["name"]]
        # Scoring asks for another method by name (predict_proba for AUC): the host's
        # request, never the model's choice.
        call = self.method if method is None else getattr(self.model, method)
        output = call(inputs)
        if self.pandas is not None and isinstance(
            output, self.pandas.DataFrame | self.pandas.Series
        ):
            output = output.to_numpy()
        return output


def _reply(model: _Model, output: Any) -> tuple[dict[str, Any], bytes]:
    """The reply to a prediction: a numeric array as its buffer, anything else as JSON."""
    numpy = model.numpy
    if (
        isinstance(output, numpy.ndarray)
        and output.dtype.kind in "biuf"
        and output.dtype.itemsize <= 8
        and 1 <= output.ndim <= 2
    ):
        array = numpy.ascontiguousarray(output)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        array = array.astype(dtype, copy=False)
        return {"ok": True, "dtype": dtype.str, "shape": list(array.shape)}, array.tobytes()
    if hasattr(output, "tolist"):
        output = output.tolist()
    return {"ok": True, "predictions": list(output)}, b""


def main() -> int:
    # The protocol's pipes, kept apart: whatever the model prints goes to stderr
    # (the log) instead of corrupting the frames.
    out = os.fdopen(os.dup(1), "wb")
    inp = os.fdopen(os.dup(0), "rb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    with open(sys.argv[1]) as handle:
        config = json.load(handle)
    try:
        model = _Model(_load(config), config)
    except BaseException as exc:
        traceback.print_exc()
        _send(out, {"ok": False, "error": f"loading the model failed: {exc!r}"[:2000]})
        return 1
    _send(out, {"ok": True, "ready": True, "frame": model.use_frame})
    names = [column["name"] for column in model.columns]
    while True:
        header = _read_exact(inp, _HEADER.size)
        if header is None:
            return 0
        (size,) = _HEADER.unpack(header)
        if size > _MAX_REQUEST:
            return 2
        body = _read_exact(inp, size)
        if body is None:
            return 0
        raw = b""
        try:
            request, columns = _columns(body, names, model.numpy)
            output = model.predict(
                columns, int(request["rows"]), request.get("method"), request.get("block")
            )
            reply, raw = _reply(model, output)
        except Exception as exc:
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        _send(out, reply, raw)


if __name__ == "__main__":
    sys.exit(main())
