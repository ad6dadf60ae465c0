"""Serving throughput and latency: ``mlflow models serve`` against modelci, side by side.

One scikit-learn model (a LogisticRegression on 30 features, fitted on a numpy
array) is served twice on loopback:

- by ``mlflow models serve --env-manager local`` (its default single worker),
  from the model saved with ``mlflow.sklearn.save_model``;
- by modelci's serving app (``create_serving_app``, one uvicorn process) with
  the model in a sandboxed model worker (bubblewrap, own uid, no network, its
  own uv-built environment), prediction logging to a SQLite store included.

Each is load-tested with wrk (``-t2 -c16 -d10s``, a lua script POSTing the
body) at 1 row and at 100 rows per request, then one request at a time
(``--sequential`` requests with an httpx keep-alive client). Also printed:
the in-process floor (``model.predict`` on a numpy row) and the cost of the
sandbox alone (one call to the sandboxed worker over its pipe, no HTTP).
Run-to-run noise here is about +-30%: compare the ratios of one run.

    python bench/serving.py [--duration 10] [--sequential 500] [--connections 16]

Needs root and bubblewrap (the sandbox), wrk (apt-get install wrk) and mlflow.
Exit status 0 when no request failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

FEATURES = [f"f{i}" for i in range(30)]
ENVS_DIR = Path("/var/tmp/modelci-bench-envs")  # kept between runs: the env takes ~15 s


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(
    url: str, process: subprocess.Popen[bytes], started: float, timeout: float = 180
) -> float:
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not become ready in {timeout} s")


def train(base: Path) -> tuple[Any, np.ndarray]:
    import joblib
    import numpy
    import pandas
    import sklearn
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 30))
    y = (x[:, :5].sum(axis=1) > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(x, y)
    modelci_dir = base / "modelci-model"
    modelci_dir.mkdir()
    joblib.dump(model, modelci_dir / "model.joblib")
    from modelci.deliver.modelspec import Column, ServingSpec

    ServingSpec(
        loader="joblib",
        artifact="model.joblib",
        columns=tuple(Column(name, "double") for name in FEATURES),
        input_example=[dict(zip(FEATURES, map(float, x[0]), strict=True))],
        requirements=(
            f"scikit-learn=={sklearn.__version__}",
            f"numpy=={numpy.__version__}",
            f"pandas=={pandas.__version__}",
            f"joblib=={joblib.__version__}",
        ),
    ).write(modelci_dir)
    import mlflow.sklearn
    from mlflow.models import infer_signature

    frame = pandas.DataFrame(x[:5], columns=FEATURES)
    mlflow.sklearn.save_model(
        model,
        str(base / "mlflow-model"),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        signature=infer_signature(frame, model.predict(x[:5])),
        input_example=frame.iloc[:1],
    )
    return model, x


def serve_modelci(model_dir: Path, port: int, data: Path) -> None:
    """The server process (``--serve-modelci``): one model, sandboxed worker, SQLite log."""
    import uv
    import uvicorn

    from modelci.deliver.modelspec import ModelVersion
    from modelci.runner.environments import EnvironmentManager
    from modelci.runner.sandbox import BubblewrapSandbox
    from modelci.serving.http import create_serving_app
    from modelci.serving.launcher import Launcher
    from modelci.serving.manager import ServingManager
    from modelci.settings import Settings, machine_lock_dir
    from modelci.store.db import open_database

    class OneModel:
        def model_names(self) -> list[str]:
            return ["bench"]

        def champion(self, name: str) -> ModelVersion | None:
            return ModelVersion(name="bench", version=1, model_dir=model_dir)

    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    ENVS_DIR.chmod(0o755)
    launcher = Launcher(
        sandbox=BubblewrapSandbox(uid_base=60950),
        environments=EnvironmentManager(
            envs_dir=ENVS_DIR, python="/usr/bin/python3", uv_bin=uv.find_uv_bin()
        ),
        serving_dir=data / "serving",
        logs_dir=data / "logs",
        slots_dir=machine_lock_dir("modelci-slots-60950"),
    )
    sessions = None
    if not os.environ.get("BENCH_NO_LOG"):
        database = open_database(Settings(data_dir=data, database_url=f"sqlite:///{data}/store.db"))
        sessions = database.session
    manager = ServingManager(OneModel(), launcher, sessions=sessions, poll_s=3600)
    uvicorn.run(create_serving_app(manager), host="127.0.0.1", port=port, log_level="warning")


LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
"""


def run_wrk(url: str, body: bytes, args: argparse.Namespace, work: Path) -> dict[str, float]:
    script = work / f"body-{len(body)}.lua"
    script.write_text(LUA % body.decode())
    done = subprocess.run(
        ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s",
         "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout

    def ms(label: str) -> float:
        found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not found:
            return float("nan")
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    sockets = re.search(socket_errors, out)
    failed = int(non2xx.group(1)) if non2xx else 0
    failed += sum(int(n) for n in sockets.groups()) if sockets else 0
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": ms("50%"),
        "p99": ms("99%"),
        "requests": float(total.group(1)) if total else 0.0,
        "failed": float(failed),
    }


def sequential(url: str, body: bytes, count: int) -> dict[str, float]:
    times, failed = [], 0
    with httpx.Client(timeout=30, headers={"content-type": "application/json"}) as http:
        for _ in range(20):
            http.post(url, content=body)
        for _ in range(count):
            started = time.perf_counter()
            response = http.post(url, content=body)
            times.append((time.perf_counter() - started) * 1000)
            failed += response.status_code != 200
    times.sort()
    return {"p50": statistics.median(times), "p99": times[int(len(times) * 0.99) - 1],
            "failed": float(failed)}  # fmt: skip


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds used so far by root and each of its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
    tree, changed = {root}, True
    while changed:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        changed = bool(found)
        tree |= found
    used = {}
    for pid in tree:
        try:
            fields = _stat(pid)
            used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return used


def floors(model: Any, x: np.ndarray, model_dir: Path, base: Path) -> dict[str, float]:
    """In-process predict vs one call to a sandboxed worker (no HTTP)."""
    import uv

    from modelci.deliver.modelspec import ServingSpec
    from modelci.runner.environments import EnvironmentManager
    from modelci.runner.sandbox import BubblewrapSandbox
    from modelci.serving.launcher import Launcher
    from modelci.settings import machine_lock_dir

    row = x[:1]
    for _ in range(200):
        model.predict(row)
    started = time.perf_counter()
    for _ in range(2000):
        model.predict(row)
    in_process = (time.perf_counter() - started) / 2000 * 1000
    launcher = Launcher(
        sandbox=BubblewrapSandbox(uid_base=60960),
        environments=EnvironmentManager(
            envs_dir=ENVS_DIR, python="/usr/bin/python3", uv_bin=uv.find_uv_bin()
        ),
        serving_dir=base / "floor",
        logs_dir=base / "floor-logs",
        slots_dir=machine_lock_dir("modelci-slots-60960"),
    )
    worker = launcher.start("floor", 1, model_dir, ServingSpec.read(model_dir))
    try:
        columns = {name: [float(x[0, i])] for i, name in enumerate(FEATURES)}
        for _ in range(200):
            worker.predict(columns, 1)
        started = time.perf_counter()
        for _ in range(2000):
            worker.predict(columns, 1)
        sandboxed = (time.perf_counter() - started) / 2000 * 1000
    finally:
        worker.stop()
    return {"in_process_ms": in_process, "sandboxed_worker_ms": sandboxed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--serve-modelci", nargs=3, metavar=("MODEL_DIR", "PORT", "DATA"))
    args = parser.parse_args()
    if args.serve_modelci:
        model_dir, port, data = args.serve_modelci
        serve_modelci(Path(model_dir), int(port), Path(data))
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    base = Path(tempfile.mkdtemp(prefix="modelci-bench-serving-", dir="/var/tmp"))
    base.chmod(0o711)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        model, x = train(base)
        figures = floors(model, x, base / "modelci-model", base)
        bodies = {}
        for rows in (1, 100):
            records = [dict(zip(FEATURES, map(float, r), strict=True)) for r in x[:rows]]
            bodies[rows] = {
                "mlflow": json.dumps({"dataframe_records": records}).encode(),
                "modelci": json.dumps({"records": records}).encode(),
            }
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCI_")}
        launched = time.monotonic()
        mlflow_port, modelci_port = free_port(), free_port()
        servers.append(subprocess.Popen(
            ["mlflow", "models", "serve", "-m", str(base / "mlflow-model"), "--env-manager",
             "local", "--host", "127.0.0.1", "-p", str(mlflow_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip
        servers.append(subprocess.Popen(
            [sys.executable, __file__, "--serve-modelci", str(base / "modelci-model"),
             str(modelci_port), str(base)],
            env=env, start_new_session=True,
        ))  # fmt: skip
        urls = {
            "mlflow": f"http://127.0.0.1:{mlflow_port}/invocations",
            "modelci": f"http://127.0.0.1:{modelci_port}/models/bench/predict",
        }
        startup = {
            "mlflow": wait_ready(f"http://127.0.0.1:{mlflow_port}/ping", servers[0], launched),
            "modelci": wait_ready(f"http://127.0.0.1:{modelci_port}/readyz", servers[1], launched),
        }
        results: dict[tuple[str, int], dict[str, float]] = {}
        for rows in (1, 100):
            for name in ("mlflow", "modelci"):
                root = servers[0 if name == "mlflow" else 1].pid
                before = tree_cpu(root)
                result = run_wrk(urls[name], bodies[rows][name], args, base)
                after = tree_cpu(root)
                # The busiest process is the HTTP server; the rest (modelci: the
                # sandboxed model worker) is summed apart.
                spent = sorted((after[p] - before.get(p, 0.0) for p in after), reverse=True)
                result["cpu_main_s"] = spent[0] if spent else 0.0
                result["cpu_rest_s"] = sum(spent[1:])
                seq = sequential(urls[name], bodies[rows][name], args.sequential)
                result |= {"seq_p50": seq["p50"], "seq_p99": seq["p99"]}
                result["failed"] += seq["failed"]
                results[(name, rows)] = result
        report(results, figures, startup, args)
        return 0 if all(r["failed"] == 0 for r in results.values()) else 1
    finally:
        for server in servers:
            try:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def report(
    results: dict[tuple[str, int], dict[str, float]],
    figures: dict[str, float],
    startup: dict[str, float],
    args: argparse.Namespace,
) -> None:
    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s on loopback; "
        f"sequential: {args.sequential} requests, one at a time, keep-alive; cpu s: the "
        "busiest server process + the rest of its tree during the wrk run\n"
    )
    header = (
        f"{'server':<8} {'rows':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'seq p50':>8} {'seq p99':>8} {'requests':>9} {'failed':>6} {'cpu s':>11}"
    )
    print(header)
    print("-" * len(header))
    for (name, rows), r in results.items():
        print(
            f"{name:<8} {rows:>4} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
            f"{r['seq_p50']:>8.2f} {r['seq_p99']:>8.2f} {r['requests']:>9.0f} "
            f"{r['failed']:>6.0f} {r['cpu_main_s']:>5.1f}+{r['cpu_rest_s']:<5.1f}"
        )
    print()
    for rows in (1, 100):
        ours, theirs = results[("modelci", rows)], results[("mlflow", rows)]
        print(
            f"{rows:>3} row(s): modelci/mlflow throughput {ours['rps'] / theirs['rps']:.1f}x, "
            f"sequential p50 {theirs['seq_p50'] / ours['seq_p50']:.1f}x faster"
        )
    print(
        f"\nfloor: model.predict in-process {figures['in_process_ms']:.3f} ms per row; one "
        f"call to the sandboxed worker over its pipe {figures['sandboxed_worker_ms']:.3f} ms "
        f"(isolation cost ~{figures['sandboxed_worker_ms'] - figures['in_process_ms']:.3f} ms "
        "per request: JSON both ways and a pipe round trip to another process)"
    )
    print(
        "start-up to ready (both launched together): "
        f"mlflow {startup['mlflow']:.1f} s, modelci {startup['modelci']:.1f} s "
        "(sandbox, cached environment, model load, smoke test)"
    )
    one = results[("modelci", 1)]
    targets = [
        ("throughput >= 5x mlflow at 1 row", one["rps"] >= 5 * results[("mlflow", 1)]["rps"]),
        ("sequential p50 <= 3 ms at 1 row", one["seq_p50"] <= 3.0),
        ("no failed request", all(r["failed"] == 0 for r in results.values())),
    ]
    for label, ok in targets:
        print(f"target {label}: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
