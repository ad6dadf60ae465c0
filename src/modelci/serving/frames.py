"""The host's side of the columnar frames exchanged with a model worker.

A frame's body is a 4-byte big-endian length, a JSON header of that length, then
raw bytes. A request carries each numeric column as a little-endian float64 or
int64 buffer (``kinds``: one letter per column in the model's order: ``f``,
``i``, or ``j`` for a column sent as JSON, e.g. strings or an integer column
with nulls), so the worker maps them with ``numpy.frombuffer`` instead of
parsing text. A reply's predictions come back as one numeric buffer (``dtype``
and ``shape`` in the header) or as JSON. ``serving/modelworker.py`` is the
other side (it cannot import this: it runs in the sandbox with the model's
environment).

What the worker sends is untrusted: only plain numeric dtypes are accepted,
the shape must match the buffer exactly, and non-finite floats become null (JSON
has no NaN) as they did before.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from modelci.errors import WorkerFailed

__all__ = ["decode_reply", "encode_request", "split"]

_LENGTH = struct.Struct(">I")
_FLOAT = np.dtype("<f8")
_INT = np.dtype("<i8")
_NUMERIC_TYPES = {"double": "f", "float": "f", "long": "i", "integer": "i"}
# Reply dtypes a worker may send: booleans, integers and floats of 1 to 8 bytes.
_REPLY_KINDS = frozenset("biuf")


def _array(values: Any, letter: str) -> Any:
    dtype = _FLOAT if letter == "f" else _INT
    try:
        return np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError):  # nulls in an integer column, ...
        return None


def encode_request(
    columns: dict[str, Any],
    types: Sequence[tuple[str, str]],
    rows: int,
    method: str | None,
) -> bytes:
    """A whole request frame, its length included: ``types`` is the model's (name,
    column type) in its order."""
    kinds: list[str] = []
    sizes: list[int] = []
    parts: list[bytes] = []
    if all(_NUMERIC_TYPES.get(kind) == "f" for _, kind in types):
        # Every column a float: one conversion for all (at 1 row, 30 calls to
        # asarray cost more than the JSON they replace).
        block = _array([columns[name] for name, _ in types], "f")
        if block is not None and block.shape == (len(types), rows):
            return _frame(
                {"rows": rows, "kinds": "f" * len(types), "sizes": []}, method, [block.tobytes()]
            )
    for name, kind in types:
        values = columns[name]
        letter = _NUMERIC_TYPES.get(kind, "j")
        array = None if letter == "j" else _array(values, letter)
        if array is None or array.shape != (rows,):
            encoded = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
            kinds.append("j")
            sizes.append(len(encoded))
            parts.append(encoded)
        else:
            kinds.append(letter)
            parts.append(array.tobytes())
    return _frame({"rows": rows, "kinds": "".join(kinds), "sizes": sizes}, method, parts)


def _frame(header: dict[str, Any], method: str | None, parts: list[bytes]) -> bytes:
    if method is not None:
        header["method"] = method
    encoded_header = orjson.dumps(header)
    size = _LENGTH.size + len(encoded_header) + sum(map(len, parts))
    # The frame's own length first: the pipe gets one write (one wake-up of the worker).
    return b"".join([_LENGTH.pack(size), _LENGTH.pack(len(encoded_header)), encoded_header, *parts])


def split(body: bytes) -> tuple[dict[str, Any], memoryview]:
    """The header and the raw part of a frame; WorkerFailed if it is malformed."""
    if len(body) < _LENGTH.size:
        raise WorkerFailed("the model worker sent a truncated frame")
    (size,) = _LENGTH.unpack_from(body)
    if size > len(body) - _LENGTH.size:
        raise WorkerFailed("the model worker sent a frame shorter than its header says")
    try:
        header = orjson.loads(body[_LENGTH.size : _LENGTH.size + size])
    except orjson.JSONDecodeError:
        raise WorkerFailed("the model worker sent a header that is not JSON") from None
    if type(header) is not dict:
        raise WorkerFailed("the model worker sent a malformed reply")
    return header, memoryview(body)[_LENGTH.size + size :]


def decode_reply(header: dict[str, Any], raw: memoryview) -> Any:
    """The predictions of a reply (a list), from its numeric buffer or its JSON."""
    if "dtype" not in header:
        return header.get("predictions")
    try:
        dtype = np.dtype(str(header["dtype"]))
    except TypeError:
        raise WorkerFailed("the model worker sent an unknown dtype") from None
    shape = header.get("shape")
    if (
        dtype.kind not in _REPLY_KINDS
        or dtype.itemsize > 8
        or type(shape) is not list
        or not 1 <= len(shape) <= 2
        or not all(type(n) is int and n >= 0 for n in shape)
        or int(np.prod(shape)) * dtype.itemsize != len(raw)
    ):
        raise WorkerFailed(f"the model worker sent a malformed {dtype} buffer")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if dtype.kind == "f" and not np.isfinite(array).all():
        # JSON has no NaN or infinity: null, as the JSON replies always had.
        cleaned = array.astype(object)
        cleaned[~np.isfinite(array)] = None
        return cleaned.tolist()
    return array.tolist()
