"""The predict route's edge on loopback: body size cap while streaming, big bodies
parsed off the event loop, the wrong method, numbers that overflow their column,
and error answers that stay small."""

from __future__ import annotations

import resource
import select
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from modelci.deliver.modelspec import Column, ServingSpec
from modelci.serving.service import PARSE_IN_THREAD_BYTES
from tests.serving import test_http
from tests.serving.conftest import NUMERIC, sandboxed
from tests.serving.test_http import ROW, Served

served = test_http.served  # the fixture: a real server with a served model

pytestmark = [sandboxed, pytest.mark.sandbox, pytest.mark.slow]
CAP = 64 << 20


def _raw_predict(url: str, *, headers: bytes, send_up_to: int) -> tuple[int, bytes]:
    """Send a predict request's headers, then body bytes (blanks, in chunked
    encoding unless headers set a length) until the server answers or send_up_to
    bytes are out, never ending the body; (bytes sent, the answer's head)."""
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    try:
        sock.sendall(
            b"POST /models/churn/predict HTTP/1.1\r\nhost: test\r\n"
            b"content-type: application/json\r\n" + headers + b"\r\n"
        )
        piece = 1 << 20
        chunked = b"transfer-encoding: chunked" in headers
        chunk = (b"%x\r\n" % piece + b" " * piece + b"\r\n") if chunked else b" " * piece
        sent, pending = 0, memoryview(chunk)
        sock.setblocking(False)
        while sent < send_up_to:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable or not writable:
                break
            try:
                count = sock.send(pending[: send_up_to - sent])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += count
            pending = pending[count:] or memoryview(chunk)
        sock.setblocking(True)
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        return sent, answer
    finally:
        sock.close()


def test_a_chunked_body_over_the_cap_stops_being_read_at_the_cap(served: Served) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    sent, answer = _raw_predict(
        served.url, headers=b"transfer-encoding: chunked\r\n", send_up_to=2 * CAP
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()
    # The server read about the cap and then hung up: what is in flight beyond it
    # is only the sockets' buffers (a few MB on loopback), not the other 64 MB.
    assert CAP <= sent <= CAP + (32 << 20)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10) - peak_before
    assert grown < 2 * CAP
    # The server still answers on new connections.
    assert httpx.post(f"{served.url}/predict", json=ROW).status_code == 200


def test_a_declared_length_over_the_cap_is_refused_before_reading(served: Served) -> None:
    head = b"content-length: %d\r\n" % (CAP + 1)
    sent, answer = _raw_predict(served.url, headers=head, send_up_to=1024)
    # Only 1 KB of the declared 64 MB was sent: an answer shows nothing waited for the rest.
    assert sent == 1024
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_big_body_does_not_hold_up_other_requests(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = served.manager.get("churn").current
    assert loaded is not None
    parsing, release = threading.Event(), threading.Event()
    parse = loaded.validator.parse

    def held_parse(body: bytes) -> Any:
        parsing.set()
        release.wait(60)
        return parse(body)

    monkeypatch.setattr(loaded.validator, "parse", held_parse)
    body = orjson.dumps({"records": [ROW, ROW]}) + b" " * PARSE_IN_THREAD_BYTES
    try:
        with ThreadPoolExecutor(1) as pool:
            predicted = pool.submit(
                httpx.post, f"{served.url}/models/churn/predict", content=body, timeout=60
            )
            assert parsing.wait(30)
            # Parsing is held: /readyz can answer only if it is not on the event loop.
            ready = httpx.get(f"{served.url}/readyz", timeout=20)
            assert ready.status_code == 200
            assert not predicted.done()
            release.set()
            response = predicted.result()
    finally:
        release.set()
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 2


def test_get_on_predict_is_405_with_allow(served: Served) -> None:
    with httpx.Client(base_url=served.url) as http:
        for path in ("/models/churn/predict", "/models/nope/predict"):
            response = http.get(path)
            assert response.status_code == 405
            assert response.headers["allow"] == "POST"
            assert "use POST" in response.json()["detail"]
        assert http.put("/models/churn/predict").headers["allow"] == "POST"
        assert http.get("/models/churn").json()["name"] == "churn"


def test_numbers_that_overflow_a_long_column_name_row_and_field(served: Served) -> None:
    spec = ServingSpec.read(served.base / "v1")
    longs = replace(
        spec,
        columns=tuple(Column(name, "long") for name in NUMERIC),
        input_example=[{name: 1 for name in NUMERIC}],
    )
    (served.base / "v5").mkdir()
    (served.base / "v5" / "model.joblib").write_bytes(
        (served.base / "v1" / "model.joblib").read_bytes()
    )
    longs.write(served.base / "v5")
    served.registry.add("churn", 5, served.base / "v5")
    served.registry.promote("churn", 5)
    served.manager.refresh("churn")
    with httpx.Client(base_url=served.url) as http:
        assert http.get("/models/churn").json()["version"] == 5
        for value in (b"9223372036854775808", b"1e308", b"-1e19"):
            row = b'{"x0": 1, "x1": 1, "x2": 1, "x3": %s}' % value
            body = b'{"records": [{"x0": 1, "x1": 1, "x2": 1, "x3": 1}, ' + row + b"]}"
            response = http.post("/models/churn/predict", content=body)
            assert response.status_code == 422, response.text
            [error] = response.json()["detail"]
            assert error["loc"] == ["body", "records", 1, "x3"]
            assert "64-bit integer" in error["msg"]
        ok = b'{"x0": 9223372036854775807, "x1": -9223372036854775808, "x2": 1e18, "x3": 0}'
        assert http.post("/models/churn/predict", content=ok).status_code == 200


def test_a_huge_invalid_body_gets_a_small_answer(served: Served) -> None:
    huge = "x" * (8 << 20)
    body = orjson.dumps({"records": [{**ROW, huge: 1, "x0": huge}] * 2})
    response = httpx.post(f"{served.url}/models/churn/predict", content=body, timeout=60)
    assert response.status_code == 422
    assert len(response.content) < 20_000
    kinds = {error["type"] for error in response.json()["detail"]}
    assert kinds == {"extra_forbidden", "float_type"}
