"""The model worker: loads one model version and answers predictions over a pipe.

This file is copied into the worker's sandbox and run there by the model
environment's Python, so it imports only the standard library, numpy and (when
installed) pandas, and nothing from modelci. Usage: ``python modelworker.py
CONFIG.json``.

Frames in both directions are a 4-byte big-endian length and a JSON object.
The first frame out says whether the model loaded (``{"ok": true, "ready":
true}``); then each request ``{"columns": {name: [values]}, "rows": n}`` (with
``"method"`` to call another method than the configured one) gets
``{"ok": true, "predictions": [...]}`` or ``{"ok": false, "error": "..."}``.
Only JSON leaves this process: the host never unpickles what a model returns.
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


def _send(out: IO[bytes], message: dict[str, Any]) -> None:
    try:
        body = json.dumps(message, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:  # NaN or infinity in the predictions: JSON has no such numbers
        body = json.dumps(_finite(message), separators=(",", ":")).encode()
    except TypeError as exc:
        error = {"ok": False, "error": f"the output is not JSON-serialisable: {exc}"}
        body = json.dumps(error).encode()
    out.write(_HEADER.pack(len(body)) + body)
    out.flush()


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

    def predict(self, columns: dict[str, list[Any]], rows: int, method: str | None = None) -> Any:
        numpy = self.numpy
        if self.use_frame:
            data = {}
            for column in self.columns:
                values = columns[column["name"]]
                dtype = _NUMERIC.get(column["type"])
                if dtype == "int64" and any(value is None for value in values):
                    dtype = "float64"
                data[column["name"]] = numpy.asarray(values, dtype=dtype or object)
            inputs: Any = self.pandas.DataFrame(data, columns=[c["name"] for c in self.columns])
        else:
            inputs = numpy.array(
                [columns[column["name"]] for column in self.columns], dtype=self.array_dtype
            ).T.reshape(rows, len(self.columns))
        # Scoring asks for another method by name (predict_proba for AUC): the host's
        # request, never the model's choice.
        call = self.method if method is None else getattr(self.model, method)
        output = call(inputs)
        if hasattr(output, "tolist"):
            output = output.tolist()
        elif self.pandas is not None and isinstance(output, self.pandas.DataFrame):
            output = output.to_numpy().tolist()
        return list(output)


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
        try:
            request = json.loads(body)
            predictions = model.predict(
                request["columns"], int(request["rows"]), request.get("method")
            )
            reply: dict[str, Any] = {"ok": True, "predictions": predictions}
        except Exception as exc:
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        _send(out, reply)


if __name__ == "__main__":
    sys.exit(main())
