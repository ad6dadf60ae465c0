"""The columnar frames to and from a model worker: what the host sends, and how it
reads (and refuses) what an untrusted worker answers."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from modelci.errors import WorkerFailed
from modelci.serving.frames import decode_reply, encode_request, split


def _request(frame: bytes) -> tuple[dict[str, Any], bytes]:
    (total,) = struct.unpack_from(">I", frame)
    assert total == len(frame) - 4
    (size,) = struct.unpack_from(">I", frame, 4)
    return json.loads(frame[8 : 8 + size]), frame[8 + size :]


def _reply(header: dict[str, Any], raw: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack(">I", len(encoded)) + encoded + raw


def test_numeric_columns_travel_as_buffers_the_rest_as_json() -> None:
    columns = {"a": [1.5, 2.0], "n": [3, 4], "s": ["x", "y"], "m": [1, None]}
    types = [("a", "double"), ("n", "long"), ("s", "string"), ("m", "integer")]
    header, raw = _request(encode_request(columns, types, 2, "predict_proba"))
    assert header["kinds"] == "fijj"  # an integer column with a null: JSON
    assert header["method"] == "predict_proba"
    assert np.frombuffer(raw[:16], "<f8").tolist() == [1.5, 2.0]
    assert np.frombuffer(raw[16:32], "<i8").tolist() == [3, 4]
    rest = raw[32:]
    assert json.loads(rest[: header["sizes"][0]]) == ["x", "y"]
    assert json.loads(rest[header["sizes"][0] :]) == [1, None]


def test_all_float_columns_are_one_block_column_after_column() -> None:
    columns = {"a": [1.0, 2.0], "b": [3.0, 4.0]}
    header, raw = _request(encode_request(columns, [("a", "double"), ("b", "float")], 2, None))
    assert header == {"rows": 2, "kinds": "ff", "sizes": []}
    assert np.frombuffer(raw, "<f8").reshape(2, 2).T.tolist() == [[1.0, 3.0], [2.0, 4.0]]


def test_a_reply_buffer_is_read_and_non_finite_floats_become_null() -> None:
    ints = np.array([1, 0, 1], dtype="<i8")
    assert decode_reply(
        *split(_reply({"ok": True, "dtype": "<i8", "shape": [3]}, ints.tobytes()))
    ) == [1, 0, 1]
    probs = np.array([[0.25, np.nan], [np.inf, 0.5]])
    header = {"ok": True, "dtype": "<f8", "shape": [2, 2]}
    assert decode_reply(*split(_reply(header, probs.tobytes()))) == [[0.25, None], [None, 0.5]]
    assert decode_reply(*split(_reply({"ok": True, "predictions": ["a"]}))) == ["a"]


@pytest.mark.parametrize(
    ("header", "raw"),
    [
        ({"dtype": "|O", "shape": [1]}, b"12345678"),  # objects: never
        ({"dtype": "<U4", "shape": [1]}, b"a\0\0\0" * 4),
        ({"dtype": "<f8", "shape": [3]}, b"\0" * 16),  # shorter than its shape
        ({"dtype": "<f8", "shape": [1, 1, 1]}, b"\0" * 8),
        ({"dtype": "<f8", "shape": "3"}, b"\0" * 24),
        ({"dtype": "<c16", "shape": [1]}, b"\0" * 16),
        ({"dtype": "nonsense", "shape": [1]}, b"\0" * 8),
    ],
)
def test_a_malformed_reply_buffer_is_refused(header: dict[str, Any], raw: bytes) -> None:
    with pytest.raises(WorkerFailed):
        decode_reply(*split(_reply({"ok": True, **header}, raw)))


def test_a_malformed_frame_is_refused() -> None:
    for body in (
        b"\0\0",
        struct.pack(">I", 99) + b"{}",
        struct.pack(">I", 2) + b"[]",
        struct.pack(">I", 1) + b"{",
    ):
        with pytest.raises(WorkerFailed):
            split(body)
