"""Serving throughput and tail latency: modelci against MLServer, BentoML and MLflow.

One scikit-learn model (a LogisticRegression on 30 features, fitted on a numpy
array) is served by each server in turn, alone on the machine (see
``bench/serving_servers.py`` for how each is set up: MLServer and BentoML from
their own pinned virtual environments, built on first use). For each server:
start-up to ready (measured from its own launch), then wrk (``-t2 -c16
-d10s``, a lua script POSTing the body) at 1, 100 and 1,000 rows per request,
then one request at a time (``--sequential`` with an httpx keep-alive client,
1 row), the p50 of 20 requests of 10,000 rows, and the RSS summed over its
process tree. Also printed: the in-process floor (``model.predict`` on a numpy
row) and the cost of the sandbox alone (one call to the sandboxed worker over
its pipe, no HTTP). Run-to-run noise on a shared machine is large: compare the
ratios of one run, and say how loaded the machine was (printed).

    python bench/serving.py [--servers modelci,mlserver,...] [--rounds 1]
        [--duration 10] [--sequential 500] [--connections 16]
        [--baseline-src /path/to/other/src]   # adds modelci-base: before/after

Needs root and bubblewrap (the sandbox), wrk (apt-get install wrk), mlflow, and
PyPI for the first build of the MLServer and BentoML environments. Exit status
0 when no request failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serving_load import one_big, run_wrk, sequential, tree_cpu, tree_rss_mb

FEATURES = [f"f{i}" for i in range(30)]
ENVS_DIR = Path("/var/tmp/modelci-bench-envs")  # kept between runs: the env takes ~15 s
ROWS = (1, 100, 1000)
BIG_ROWS = 10_000
ALL = (
    "modelci",
    "modelci-columns",
    "modelci-oip",
    "mlserver",
    "mlserver-default",
    "bentoml",
    "bentoml-1",
    "mlflow",
)


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
    x = rng.normal(size=(BIG_ROWS, 30))  # fitted on the first 2,000, all sent
    y = (x[:2000, :5].sum(axis=1) > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(x[:2000], y)
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


def bench_server(
    server: Any, x: np.ndarray, args: argparse.Namespace, base: Path
) -> dict[str, Any]:
    import serving_servers

    launched = time.monotonic()
    with (base / f"{server.name}.log").open("wb") as log:
        process = subprocess.Popen(
            server.command, env=server.env, cwd=server.cwd, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        origin = f"http://127.0.0.1:{server.port}"
        startup = wait_ready(origin + server.ready_path, process, launched)
        url = origin + server.predict_path
        result: dict[str, Any] = {"startup_s": startup, "loads": {}}
        for rows in ROWS:
            body, headers = serving_servers.body_for(server.name, x[:rows], FEATURES)
            for _ in range(30):  # warm up (first requests compile, allocate, connect)
                httpx.post(
                    url, content=body, headers={"content-type": "application/json", **headers}
                )
            before = tree_cpu(process.pid)
            load = run_wrk(url, body, headers, args, base)
            after = tree_cpu(process.pid)
            load["cpu_s"] = sum(after[p] - before.get(p, 0.0) for p in after)
            result["loads"][rows] = load
        result["rss_mb"] = tree_rss_mb(process.pid)
        seq = sequential(
            url, *serving_servers.body_for(server.name, x[:1], FEATURES), args.sequential
        )
        result["seq_p50"], result["seq_p99"] = seq["p50"], seq["p99"]
        result["failed"] = seq["failed"] + sum(r["failed"] for r in result["loads"].values())
        result["big_p50"] = one_big(
            url, *serving_servers.body_for(server.name, x[:BIG_ROWS], FEATURES)
        )
        print(f"{server.name}: done", file=sys.stderr, flush=True)
        return result
    except BaseException:
        log = (base / f"{server.name}.log").read_text(errors="replace")
        print(f"{server.name} failed; its log ends:\n{log[-3000:]}", file=sys.stderr)
        raise
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def make_server(name: str, base: Path, args: argparse.Namespace) -> Any:
    import serving_servers as servers

    env = servers.environment()
    port = free_port()
    if name in ("modelci", "modelci-columns", "modelci-oip"):
        server = servers.modelci(name, base, port, env)
    elif name == "modelci-base":
        server = servers.modelci(name, base, port, env, Path(args.baseline_src))
    elif name.startswith("mlserver"):
        server = servers.mlserver(name, base, port, env, [free_port(), free_port()])
    elif name.startswith("bentoml"):
        server = servers.bentoml(name, base, port, env)
    elif name == "mlflow":
        server = servers.mlflow(base, port, env)
    else:
        raise SystemExit(f"unknown server {name!r}; one of {', '.join(ALL)}, modelci-base")
    server.port = port
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--servers", default=",".join(ALL))
    parser.add_argument("--baseline-src", help="a modelci src/ to run as modelci-base")
    parser.add_argument("--serve-modelci", nargs=3, metavar=("MODEL_DIR", "PORT", "DATA"))
    args = parser.parse_args()
    if args.serve_modelci:
        model_dir, port, data = args.serve_modelci
        serve_modelci(Path(model_dir), int(port), Path(data))
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    sys.path.insert(0, str(Path(__file__).parent))
    names = [n for n in args.servers.split(",") if n]
    if args.baseline_src and "modelci-base" not in names:
        names.insert(names.index("modelci") if "modelci" in names else 0, "modelci-base")
    base = Path(tempfile.mkdtemp(prefix="modelci-bench-serving-", dir="/var/tmp"))
    base.chmod(0o711)
    try:
        model, x = train(base)
        figures = floors(model, x, base / "modelci-model", base)
        loads = [os.getloadavg()[0]]
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            # Alternating order per round: neither side always runs on a warmer machine.
            for name in names if round_ % 2 == 0 else names[::-1]:
                results[name].append(bench_server(make_server(name, base, args), x, args, base))
                loads.append(os.getloadavg()[0])
        report(results, figures, loads, args)
        return 0 if all(r["failed"] == 0 for rs in results.values() for r in rs) else 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return (
        format(low, fmt)
        if format(low, fmt) == format(high, fmt)
        else (f"{format(low, fmt)}-{format(high, fmt)}")
    )


def report(
    results: dict[str, list[dict[str, Any]]],
    figures: dict[str, float],
    loads: list[float],
    args: argparse.Namespace,
) -> None:
    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s on loopback, each "
        f"server alone; {args.rounds} round(s) (ranges over rounds); load average (1 min) "
        f"during the run {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs\n"
    )
    columns = [f"{rows} row{'s' if rows > 1 else ''}" for rows in ROWS]
    header = f"{'server':<17}" + "".join(f"{c + ' req/s':>16}{'p99 ms':>12}" for c in columns)
    header += f"{'seq p50':>10}{'10k rows':>10}{'start s':>9}{'RSS MiB':>9}{'failed':>7}"
    print(header)
    print("-" * len(header))
    for name, runs in results.items():
        line = f"{name:<17}"
        for rows in ROWS:
            line += f"{_span([r['loads'][rows]['rps'] for r in runs], '.0f'):>16}"
            line += f"{_span([r['loads'][rows]['p99'] for r in runs], '.1f'):>12}"
        line += f"{_span([r['seq_p50'] for r in runs], '.2f'):>10}"
        line += f"{_span([r['big_p50'] for r in runs], '.1f'):>10}"
        line += f"{_span([r['startup_s'] for r in runs], '.1f'):>9}"
        line += f"{_span([r['rss_mb'] for r in runs], '.0f'):>9}"
        line += f"{sum(r['failed'] for r in runs):>7.0f}"
        print(line)
    print(
        f"\nfloor: model.predict in-process {figures['in_process_ms']:.3f} ms per row; one "
        f"call to the sandboxed worker over its pipe {figures['sandboxed_worker_ms']:.3f} ms"
    )
    rivals = [n for n in results if n.startswith("mlserver")]
    for ours_name in [n for n in results if n.startswith("modelci") and n != "modelci-base"]:
        ours = results[ours_name]
        for rows in ROWS:
            rps = min(r["loads"][rows]["rps"] for r in ours)
            p99 = max(r["loads"][rows]["p99"] for r in ours)
            if rivals:
                best = max(rivals, key=lambda n: max(r["loads"][rows]["rps"] for r in results[n]))
                their_rps = max(r["loads"][rows]["rps"] for r in results[best])
                their_p99 = min(r["loads"][rows]["p99"] for r in results[best])
                print(
                    f"target {ours_name} {rows} rows: req/s {rps:.0f} >= {best} "
                    f"{their_rps:.0f}: {'met' if rps >= their_rps else 'MISSED'}; p99 "
                    f"{p99:.1f} <= {their_p99:.1f} ms: {'met' if p99 <= their_p99 else 'MISSED'}"
                )
        seq = max(r["seq_p50"] for r in ours)
        big = max(r["big_p50"] for r in ours)
        print(
            f"target {ours_name} sequential p50 <= 2 ms at 1 row: {seq:.2f} ms, "
            f"{'met' if seq <= 2 else 'MISSED'}; 10,000 rows <= 50 ms: {big:.1f} ms, "
            f"{'met' if big <= 50 else 'MISSED'}"
        )


if __name__ == "__main__":
    sys.exit(main())
