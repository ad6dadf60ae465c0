"""The server's memory while its database is paused: the prediction log's bound.

Delivers a small model into a fresh data dir (embedded PostgreSQL, no GitHub),
starts ``modelci serve``, then SIGSTOPs every PostgreSQL process of that data dir
for ``--pause`` seconds while ``--threads`` clients post ``--rows``-row predict
requests, SIGCONTs it, and reports the server's RSS: before, peak (VmHWM) and
after the backlog is written, with the prediction log's counters. Needs root and
bubblewrap, like ``modelci serve``.

    python bench/predictionlog_memory.py --pause 8 --rows 10000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

MODEL_LIB = """\
class Threshold:
    def __init__(self, cut):
        self.cut = cut

    def predict(self, rows):
        return [int(float(row[0]) > self.cut) for row in rows]
"""
TRAIN = """\
import json, pickle
from model_lib import Threshold
json.dump({"accuracy": 0.9}, open("metrics.json", "w"))
pickle.dump(Threshold(3.5), open("model.pkl", "wb"))
"""
DATA = "x,color,label\n" + "".join(
    f"{x},{'red' if x % 2 else 'blue'},{int(x > 5)}\n" for x in range(10)
)
CONFIG = """\
train: python train.py
metrics: metrics.json
model:
  name: threshold
  artifact: model.pkl
  training_data: data/train.csv
  target: label
"""


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def postgres_pids(data: Path) -> list[int]:
    pid_file = data / "postgres" / "data" / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True
    ).stdout.split()
    return [postmaster, *map(int, children)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pause", type=float, default=8.0, help="seconds PostgreSQL is stopped")
    parser.add_argument("--rows", type=int, default=10_000, help="rows per request")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queue-mb", type=float, help="MODELCI_SERVING_LOG_QUEUE_MB")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="modelci-bench-mem-", dir="/var/tmp"))
    repo = data / "repo"
    (repo / "data").mkdir(parents=True)
    for name, text in {
        "modelci.yaml": CONFIG,
        "train.py": TRAIN,
        "model_lib.py": MODEL_LIB,
        "data/train.csv": DATA,
    }.items():
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "model"], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCI_")}
    env.update(MODELCI_DATA_DIR=str(data), MODELCI_SERVING_UID_BASE="61600")
    env["MODELCI_SANDBOX_UID_BASE"] = "61500"
    if args.queue_mb:
        env["MODELCI_SERVING_LOG_QUEUE_MB"] = str(args.queue_mb)
    modelci = [sys.executable, "-m", "modelci"]
    subprocess.run([*modelci, "deliver", str(repo)], env=env, check=True, capture_output=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = (data / "serve.log").open("wb")
    server = subprocess.Popen(
        [*modelci, "serve", "--port", str(port), "--workers", "0"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    body = json.dumps(
        {"columns": {"x": list(range(args.rows)), "color": ["red"] * args.rows}}
    ).encode()
    stopped: list[int] = []
    try:
        while True:
            assert server.poll() is None, (data / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(5):  # warm: every code path has run once
                http.post("/models/threshold/predict", content=body)
        time.sleep(1)
        before, _ = rss_mb(server.pid)
        stopped = postgres_pids(data)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        done = threading.Event()
        answered = [0] * args.threads

        def load(n: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                while not done.is_set():
                    if http.post("/models/threshold/predict", content=body).status_code == 200:
                        answered[n] += 1

        threads = [threading.Thread(target=load, args=(n,)) for n in range(args.threads)]
        for thread in threads:
            thread.start()
        time.sleep(args.pause)
        done.set()
        for thread in threads:
            thread.join()
        paused_rss, _ = rss_mb(server.pid)
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        stopped = []
        deadline = time.monotonic() + 60
        status = httpx.get(f"{url}/models/threshold", timeout=10).json()
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/models/threshold", timeout=10).json()
            if status["logged_predictions"] + status["dropped_prediction_logs"] >= 5 + sum(
                answered
            ):
                break
            time.sleep(0.5)
        time.sleep(2)
        after, peak = rss_mb(server.pid)
        print(
            json.dumps(
                {
                    "rows_per_request": args.rows,
                    "requests_while_paused": sum(answered),
                    "rss_before_mb": round(before),
                    "rss_while_paused_mb": round(paused_rss),
                    "rss_peak_mb": round(peak),
                    "rss_after_mb": round(after),
                    "logged": status["logged_predictions"],
                    "dropped": status["dropped_prediction_logs"],
                },
                indent=1,
            )
        )
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
