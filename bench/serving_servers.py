"""The servers bench/serving.py compares: how each is installed, started and fed.

Every server serves the same fitted LogisticRegression (30 float features):

- ``modelci``: ``create_serving_app`` under uvicorn, the model in a sandboxed
  worker, validation and the prediction log (SQLite) on, fed records
  (``{"records": [{...}, ...]}``); ``modelci-columns`` the same fed columns
  (``{"columns": {...}}``), ``modelci-oip`` fed Open Inference Protocol requests
  with one binary FP64 tensor per column; ``modelci-base`` is ``modelci`` from
  another source tree (``--baseline-src``), for before/after in one run.
- ``mlserver`` (inference in the server process, ``parallel_workers: 0``, its
  fastest) and ``mlserver-default`` (a separate inference process), MLServer
  1.7.1 with mlserver-sklearn, fed Open Inference Protocol requests (one
  ``[rows, 30]`` FP64 tensor, its NumPy codec).
- ``bentoml`` (2 workers) and ``bentoml-1`` (1 worker), BentoML 1.4.40, an API
  taking a NumPy array (``{"input": [[...], ...]}``).
- ``mlflow``: ``mlflow models serve --env-manager local`` (its one worker).

MLServer and BentoML run from their own virtual environments under
``/var/tmp/modelci-bench-envs`` (built once with uv from PyPI, pinned), never
from modelci's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENVS_DIR = Path("/var/tmp/modelci-bench-envs")  # kept between runs
# uvloop as of MLServer 1.7.1's release: 0.22 made asyncio.get_event_loop() raise
# outside a running loop, and MLServer's inference processes then die at start.
MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0")
BENTOML = ("bentoml==1.4.40",)


@dataclass
class Server:
    name: str
    command: list[str]
    ready_path: str
    predict_path: str
    env: dict[str, str]
    cwd: Path | None = None
    port: int = 0


def body_for(name: str, rows: np.ndarray, features: list[str]) -> tuple[bytes, dict[str, str]]:
    """The request body each server takes for these rows, and any header it needs."""
    values = rows.tolist()
    if name.startswith("mlserver"):
        tensor = {
            "name": "input-0",
            "shape": list(rows.shape),
            "datatype": "FP64",
            "data": [v for row in values for v in row],
        }
        return json.dumps({"inputs": [tensor]}).encode(), {}
    if name.startswith("bentoml"):
        return json.dumps({"input": values}).encode(), {}
    if name == "modelci-oip":
        # One binary FP64 tensor per column (Triton's binary tensor data extension).
        columns = [np.ascontiguousarray(rows[:, i], dtype="<f8") for i in range(rows.shape[1])]
        tensors = [
            {
                "name": feature,
                "shape": [len(rows)],
                "datatype": "FP64",
                "parameters": {"binary_data_size": column.nbytes},
            }
            for feature, column in zip(features, columns, strict=True)
        ]
        header = json.dumps({"inputs": tensors}).encode()
        body = header + b"".join(column.tobytes() for column in columns)
        return body, {"Inference-Header-Content-Length": str(len(header))}
    if name == "modelci-columns":
        return json.dumps(
            {"columns": dict(zip(features, rows.T.tolist(), strict=True))}
        ).encode(), {}
    records = [dict(zip(features, row, strict=True)) for row in values]
    key = "dataframe_records" if name == "mlflow" else "records"
    return json.dumps({key: records}).encode(), {}


def ensure_venv(name: str, packages: tuple[str, ...]) -> Path:
    """A venv with packages (and this Python's scikit-learn, numpy, joblib), built once."""
    import joblib
    import sklearn
    import uv

    path = ENVS_DIR / name
    python = path / "bin" / "python"
    pins = (
        f"scikit-learn=={sklearn.__version__}",
        f"numpy=={np.__version__}",
        f"joblib=={joblib.__version__}",
    )
    wanted = "\n".join((*packages, *pins))
    done = path / ".complete"
    if python.exists() and done.exists() and done.read_text() == wanted:
        return path
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    uv_bin = uv.find_uv_bin()
    subprocess.run(
        [uv_bin, "venv", "-q", "--clear", "--python", sys.executable, str(path)], check=True
    )
    subprocess.run(
        [uv_bin, "pip", "install", "-q", "--python", str(python), *packages, *pins], check=True
    )
    done.write_text(wanted)
    return path


def modelci(
    name: str, base: Path, port: int, env: dict[str, str], src: Path | None = None
) -> Server:
    data = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    data.chmod(0o711)
    # This tree's modelci unless told otherwise (it may be installed from another).
    server_env = {**env, "PYTHONPATH": str(src or Path(__file__).parents[1] / "src")}
    return Server(
        name,
        [
            sys.executable,
            str(Path(__file__).with_name("serving.py")),
            "--serve-modelci",
            str(base / "modelci-model"),
            str(port),
            str(data),
        ],
        "/readyz",
        "/v2/models/bench/infer" if name == "modelci-oip" else "/models/bench/predict",
        server_env,
    )


def mlserver(name: str, base: Path, port: int, env: dict[str, str], ports: list[int]) -> Server:
    venv = ensure_venv("mlserver-1.7.1", MLSERVER)
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    (root / "bench").mkdir()
    (root / "bench" / "model.joblib").symlink_to(base / "modelci-model" / "model.joblib")
    (root / "bench" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "bench",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
        )
    )
    settings: dict[str, Any] = {
        "http_port": port,
        "grpc_port": ports[0],
        "metrics_port": ports[1],
        "host": "127.0.0.1",
    }
    if name == "mlserver":
        settings["parallel_workers"] = 0
    (root / "settings.json").write_text(json.dumps(settings))
    return Server(
        name,
        [str(venv / "bin" / "mlserver"), "start", str(root)],
        "/v2/health/ready",
        "/v2/models/bench/infer",
        env,
        cwd=root,
    )


BENTO_SERVICE = """
import os

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=int(os.environ["BENCH_WORKERS"]))
class Bench:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api
    def predict(self, input: np.ndarray) -> np.ndarray:
        return self.model.predict(input)
"""


def bentoml(name: str, base: Path, port: int, env: dict[str, str]) -> Server:
    venv = ensure_venv("bentoml-1.4.40", BENTOML)
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    (root / "service.py").write_text(textwrap.dedent(BENTO_SERVICE))
    server_env = {
        **env,
        "BENCH_WORKERS": "2" if name == "bentoml" else "1",
        "BENCH_MODEL": str(base / "modelci-model" / "model.joblib"),
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(root / "home"),
    }
    return Server(
        name,
        [
            str(venv / "bin" / "bentoml"),
            "serve",
            "service:Bench",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        "/readyz",
        "/predict",
        server_env,
        cwd=root,
    )


def mlflow(base: Path, port: int, env: dict[str, str]) -> Server:
    return Server(
        "mlflow",
        [
            "mlflow",
            "models",
            "serve",
            "-m",
            str(base / "mlflow-model"),
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        "/ping",
        "/invocations",
        env,
    )


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MODELCI_", "PYTHONPATH"))}
