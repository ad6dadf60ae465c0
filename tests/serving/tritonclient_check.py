"""Run by test_oip.py with a venv's Python that has NVIDIA's tritonclient[http]:
a client written for Triton and KServe, not by us, talks to modelci's /v2 routes.

Usage: python tritonclient_check.py HOST:PORT MODEL COLUMN... ; prints one JSON
object of what it saw (the test asserts on it).
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> None:
    url, model, *columns = sys.argv[1:]
    client = httpclient.InferenceServerClient(url)
    seen: dict = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "other_ready": client.is_model_ready("no-such-model"),
        "server": client.get_server_metadata(),
        "metadata": client.get_model_metadata(model),
    }
    rows = np.array([[0.5, 0.5, 0.5, 0.5], [-2.0, -2.0, 1.0, 1.0]])
    inputs = []
    for index, name in enumerate(columns):
        tensor = httpclient.InferInput(name, [2], "FP64")
        tensor.set_data_from_numpy(rows[:, index].copy(), binary_data=False)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput("prediction", binary_data=False)]
    result = client.infer(model, inputs, outputs=outputs, request_id="client-7")
    seen["predictions"] = result.as_numpy("prediction").tolist()
    seen["response"] = result.get_response()
    # A column vector ([rows, 1]) is the same column.
    column = []
    for index, name in enumerate(columns):
        tensor = httpclient.InferInput(name, [2, 1], "FP64")
        tensor.set_data_from_numpy(rows[:, index : index + 1].copy(), binary_data=False)
        column.append(tensor)
    seen["column_vector"] = client.infer(model, column).as_numpy("prediction").tolist()
    # Triton's binary tensor data extension (the client's default): raw float64 bytes.
    binary = []
    for index, name in enumerate(columns):
        tensor = httpclient.InferInput(name, [2], "FP64")
        tensor.set_data_from_numpy(rows[:, index].copy())
        binary.append(tensor)
    seen["binary"] = client.infer(model, binary).as_numpy("prediction").tolist()
    bad = httpclient.InferInput(columns[0], [2], "FP64")
    bad.set_data_from_numpy(np.array([np.nan, 1.0]))
    try:
        client.infer(model, [bad, *binary[1:]])
        seen["nan_refused"] = None
    except InferenceServerException as exc:
        seen["nan_refused"] = exc.message()
    wrong = httpclient.InferInput(columns[0], [2], "BYTES")
    wrong.set_data_from_numpy(np.array([b"a", b"b"], dtype=object), binary_data=False)
    try:
        client.infer(model, [wrong, *inputs[1:]])
        seen["refused"] = None
    except InferenceServerException as exc:
        seen["refused"] = {"status": exc.status(), "message": exc.message()}
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
