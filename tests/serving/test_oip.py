"""The Open Inference Protocol (V2): request decoding against a model's columns, and
the /v2 routes on loopback with a sandboxed worker, driven by requests built as the
protocol's published examples and by NVIDIA's own client (tritonclient)."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import uv

from modelci.deliver.modelspec import Column, ServingSpec
from modelci.errors import BadRequest
from modelci.runner.environments import EnvironmentManager, Requirements
from modelci.serving.oip import InferCall, model_metadata, output_datatype
from modelci.serving.validation import Validator
from modelci.store import records as store
from tests.serving.conftest import ENVS_DIR, NUMERIC, sandboxed
from tests.serving.test_http import Served, served  # noqa: F401  (the fixture)

SPEC = ServingSpec(
    loader="joblib",
    artifact="model.joblib",
    columns=(
        Column("age", "long"),
        Column("income", "double"),
        Column("plan", "string", categories=("basic", "pro")),
        Column("active", "boolean", required=False),
    ),
    input_example=[],
)


def _decode(request: Any) -> tuple[InferCall, dict[str, list[Any]], int]:
    call = InferCall(orjson.dumps(request))
    batch = call.batch(Validator(SPEC.columns), SPEC)
    return call, batch.columns, batch.rows


def _refused(request: Any) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        _decode(request)
    return caught.value


def _tensor(name: str, datatype: str, data: list[Any], shape: list[int] | None = None) -> Any:
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


GOOD = [
    _tensor("age", "INT64", [31, 47]),
    _tensor("income", "FP64", [[1.5], [2.0]], [2, 1]),
    _tensor("plan", "BYTES", ["basic", "pro"]),
]


def test_tensors_become_the_columns_flat_or_nested() -> None:
    call, columns, rows = _decode({"id": "42", "inputs": GOOD, "outputs": [{"name": "prediction"}]})
    assert rows == 2
    assert columns == {
        "age": [31, 47],
        "income": [1.5, 2.0],
        "plan": ["basic", "pro"],
        "active": [None, None],  # optional and not sent
    }
    assert (call.id, call.outputs) == ("42", ["prediction"])
    # An integer tensor is a valid double column (a JSON body's rule too).
    _, columns, _ = _decode({"inputs": [GOOD[0], _tensor("income", "INT32", [1, 2]), GOOD[2]]})
    assert columns["income"] == [1, 2]


def test_each_problem_is_named_by_tensor_at_once() -> None:
    error = _refused(
        {
            "inputs": [
                _tensor("age", "INT64", [31, "x"]),
                _tensor("income", "FP64", [1.5, True]),
                _tensor("plan", "BYTES", ["basic", "gold"]),
                _tensor("colour", "BYTES", ["red", "red"]),
            ]
        }
    )
    locs = {tuple(e["loc"]): e["msg"] for e in error.errors}
    assert "expected an integer" in locs[("body", "inputs", "age", "data", 1)]
    assert "expected a number" in locs[("body", "inputs", "income", "data", 1)]
    assert "'gold' is not an allowed value" in locs[("body", "inputs", "plan", "data", 1)]
    assert "unknown field 'colour'" in locs[("body", "inputs", "colour")]
    assert str(error).startswith("inputs.")


def test_a_datatype_or_shape_that_does_not_fit_is_refused_with_the_fix() -> None:
    error = _refused({"inputs": [_tensor("age", "BYTES", ["31"]), *GOOD[1:]]})
    assert error.errors[0]["loc"] == ["body", "inputs", "age", "datatype"]
    assert "'BYTES' does not suit the long column 'age'" in error.errors[0]["msg"]
    assert "INT64" in error.errors[0]["msg"]
    error = _refused({"inputs": [_tensor("age", "INT64", [1, 2, 3, 4], [2, 2]), *GOOD[1:]]})
    assert "expected [rows] or [rows, 1]" in error.errors[0]["msg"]
    error = _refused({"inputs": [_tensor("age", "INT64", [1, 2, 3], [2]), *GOOD[1:]]})
    assert "the shape [2] holds 2 values, the data has 3" in error.errors[0]["msg"]
    error = _refused({"inputs": [_tensor("age", "INT64", [1]), *GOOD[1:]]})
    assert "different lengths" in error.errors[0]["msg"]


def test_a_missing_column_an_unknown_output_or_a_bad_envelope_is_refused() -> None:
    error = _refused({"inputs": GOOD[:2]})
    assert error.errors[0]["loc"] == ["body", "inputs", "plan"]
    assert error.errors[0]["msg"] == "field required"
    error = _refused({"inputs": GOOD, "outputs": [{"name": "proba"}]})
    assert "no output named 'proba'; the model has one: 'prediction'" in str(error)
    assert "expected an inference request" in str(_refused({"records": []}))
    assert "unexpected field" in str(_refused({"inputs": GOOD, "input": []}))
    assert "field required" in str(_refused({"inputs": [{"name": "age", "data": [1]}]}))
    with pytest.raises(BadRequest, match="not valid JSON"):
        InferCall(b"{").batch(Validator(SPEC.columns), SPEC)


def _binary_call(tensors: list[tuple[dict[str, Any], bytes]]) -> InferCall:
    header = orjson.dumps({"inputs": [t for t, _ in tensors]})
    return InferCall(header + b"".join(raw for _, raw in tensors), len(header))


def _binary(name: str, datatype: str, rows: int, raw: bytes) -> tuple[dict[str, Any], bytes]:
    tensor = {
        "name": name,
        "shape": [rows],
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    return tensor, raw


def test_binary_tensors_are_read_and_validated_as_json_ones() -> None:
    ages = np.array([31, 47], dtype="<i8").tobytes()
    incomes = np.array([1.5, 2.0], dtype="<f4").tobytes()
    plans = b"".join(struct.pack("<I", len(p)) + p for p in (b"basic", b"pro"))
    call = _binary_call(
        [
            _binary("age", "INT64", 2, ages),
            _binary("income", "FP32", 2, incomes),
            _binary("plan", "BYTES", 2, plans),
        ]
    )
    batch = call.batch(Validator(SPEC.columns), SPEC)
    assert batch.columns["age"] == [31, 47]
    assert batch.columns["income"] == [1.5, 2.0]
    assert batch.columns["plan"] == ["basic", "pro"]
    # The same validation: a category outside the allowed values, found in bytes.
    gold = b"".join(struct.pack("<I", len(p)) + p for p in (b"basic", b"gold"))
    with pytest.raises(BadRequest, match="'gold' is not an allowed value"):
        _binary_call(
            [_binary("age", "INT64", 2, ages), _binary("income", "FP32", 2, incomes),
             _binary("plan", "BYTES", 2, gold)]
        ).batch(Validator(SPEC.columns), SPEC)  # fmt: skip
    for tensors, words in (
        ([_binary("age", "INT64", 3, ages)], "3 INT64 values take 24 bytes"),
        ([_binary("income", "FP64", 1, np.array([np.inf]).tobytes())], "NaN or infinity"),
        ([_binary("active", "BOOL", 1, b"\x07")], "neither 0 nor 1"),
        ([_binary("plan", "BYTES", 1, b"\xff\x00\x00\x00x")], "runs past"),
    ):
        with pytest.raises(BadRequest, match=words):
            _binary_call(tensors).batch(Validator(SPEC.columns), SPEC)
    short = InferCall(orjson.dumps({"inputs": [_binary("age", "INT64", 2, ages)[0]]}) + b"x", 10**6)
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        short.batch(Validator(SPEC.columns), SPEC)


def test_output_types_and_metadata_follow_the_columns_and_the_predictions() -> None:
    assert output_datatype([1, 0]) == ("INT64", [2])
    assert output_datatype([0.5, 1]) == ("FP64", [2])
    assert output_datatype(["a"]) == ("BYTES", [1])
    assert output_datatype([True]) == ("BOOL", [1])
    assert output_datatype([[0.1, 0.9], [0.5, 0.5]]) == ("FP64", [2, 2])
    meta = model_metadata("churn", 3, SPEC, [1])
    assert meta["versions"] == ["3"]
    assert meta["inputs"][:2] == [
        {"name": "age", "datatype": "INT64", "shape": [-1]},
        {"name": "income", "datatype": "FP64", "shape": [-1]},
    ]
    assert meta["outputs"] == [{"name": "prediction", "datatype": "INT64", "shape": [-1]}]


# --- on loopback ------------------------------------------------------------


def _request(rows: list[list[float]]) -> dict[str, Any]:
    # Built as the protocol's own example: one named tensor per input.
    return {
        "id": "42",
        "inputs": [
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": "FP64",
                "data": [row[index] for row in rows],
            }
            for index, name in enumerate(NUMERIC)
        ],
        "outputs": [{"name": "prediction"}],
    }


@sandboxed
@pytest.mark.sandbox
@pytest.mark.slow
def test_v2_routes_answer_as_the_protocol_says(served: Served) -> None:  # noqa: F811
    with httpx.Client(base_url=served.url, timeout=30) as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.get("/v2").json()["name"] == "modelci"
        assert http.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}
        meta = http.get("/v2/models/churn").json()
        assert [t["name"] for t in meta["inputs"]] == NUMERIC
        assert meta["outputs"] == [{"name": "prediction", "datatype": "INT64", "shape": [-1]}]
        rows = [[0.5] * 4, [-2.0, -2.0, 1.0, 1.0]]
        answer = http.post("/v2/models/churn/infer", json=_request(rows))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        own = http.post(
            "/models/churn/predict", json={"records": [dict(zip(NUMERIC, r)) for r in rows]}
        )
        assert body["outputs"] == [
            {
                "name": "prediction",
                "shape": [2],
                "datatype": "INT64",
                "data": own.json()["predictions"],
            }
        ]
        assert (body["model_name"], body["model_version"], body["id"]) == ("churn", "1", "42")
        request_id = body["parameters"]["request_id"]
        assert answer.headers["x-request-id"] == request_id
        versioned = http.post("/v2/models/churn/versions/1/infer", json=_request(rows))
        assert versioned.status_code == 200
        other = http.post("/v2/models/churn/versions/2/infer", json=_request(rows))
        assert other.status_code == 404
        assert "version '2' is not served" in other.json()["error"]
        bad = http.post("/v2/models/churn/infer", json={"inputs": [{"name": "x0"}]})
        assert bad.status_code == 422
        assert bad.json()["error"].startswith("inputs.x0.shape: field required")
        assert bad.json()["detail"][0]["loc"] == ["body", "inputs", "x0", "shape"]
        missing = http.post("/v2/models/nope/infer", json=_request(rows))
        assert missing.status_code == 404 and "no served model" in missing.json()["error"]
        assert http.get("/v2/models/nope/ready").status_code == 404
    # The prediction log keeps it like any other request, under its request_id.
    served.manager.predictions.flush()
    with served.database.session() as session:
        logged = store.list_predictions(session, model_name="churn", limit=10)
    by_id = {row.request_id: row for row in logged}
    assert by_id[request_id].inputs == {
        name: [r[i] for r in rows] for i, name in enumerate(NUMERIC)
    }


@pytest.fixture(scope="session")
def tritonclient_python() -> Path:
    """A venv with NVIDIA's tritonclient[http] (built once, cached beside the model envs):
    kept apart from modelci's own environment, which it would pin gevent's greenlet into."""
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    environments = EnvironmentManager(
        envs_dir=ENVS_DIR, python="/usr/bin/python3", uv_bin=uv.find_uv_bin()
    )
    env = environments.ensure(
        Requirements("tritonclient[http]==2.73.0\nnumpy", "the tritonclient check")
    )
    return env.path / "bin" / "python"


@sandboxed
@pytest.mark.sandbox
@pytest.mark.slow
def test_nvidias_tritonclient_works_unchanged(
    served: Served,  # noqa: F811
    tritonclient_python: Path,
) -> None:
    script = Path(__file__).with_name("tritonclient_check.py")
    done = subprocess.run(
        [
            str(tritonclient_python),
            str(script),
            served.url.removeprefix("http://"),
            "churn",
            *NUMERIC,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert (seen["live"], seen["ready"], seen["model_ready"], seen["other_ready"]) == (
        True,
        True,
        True,
        False,
    )
    assert seen["server"]["name"] == "modelci"
    assert [t["name"] for t in seen["metadata"]["inputs"]] == NUMERIC
    with httpx.Client(base_url=served.url) as http:
        rows = [dict(zip(NUMERIC, r)) for r in ([0.5] * 4, [-2.0, -2.0, 1.0, 1.0])]
        expected = http.post("/models/churn/predict", json={"records": rows}).json()["predictions"]
    assert seen["predictions"] == expected
    assert seen["column_vector"] == expected
    assert seen["binary"] == expected
    assert "NaN or infinity" in seen["nan_refused"]
    assert seen["response"]["id"] == "client-7"
    assert seen["response"]["model_version"] == "1"
    assert seen["refused"]["status"] == "422"
    assert "'BYTES' does not suit the double column 'x0'" in seen["refused"]["message"]
