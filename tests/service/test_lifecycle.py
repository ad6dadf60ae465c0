"""`modelci serve`'s life as an operator sees it: a real process on the embedded
PostgreSQL with no GitHub settings, serving a delivered model, stopped by SIGTERM
under load (what systemd, Docker and Kubernetes send)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GitRepo
from tests.deliver.test_delivery import DATA
from tests.service.test_server import free_port
from tests.service.test_server_delivery import MODEL_LIB, TRAIN

# The delivery tests' stdlib-only model (its class in the repository's code) and data.
NAME = "threshold"
CONFIG = f"""\
train: python train.py
metrics: metrics.json
model:
  name: {NAME}
  artifact: model.pkl
  training_data: data/train.csv
  target: label
"""

pytestmark = pytest.mark.sandbox
if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

# Clear of the other tests' uids: these processes may run beside them.
SANDBOX_UIDS, SERVING_UIDS = 61300, 61400
GITHUB_SETTINGS = (
    "MODELCI_DATABASE_URL",
    "MODELCI_GITHUB_APP_ID",
    "MODELCI_GITHUB_PRIVATE_KEY",
    "MODELCI_GITHUB_PRIVATE_KEY_PATH",
    "MODELCI_GITHUB_TOKEN",
    "MODELCI_GITHUB_WEBHOOK_SECRET",
    "MODELCI_GITHUB_WEBHOOK_SECRET_PATH",
)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="modelci-life-", dir="/var/tmp"))
    yield path
    for pid in leftovers(path):
        os.kill(int(pid.split()[0]), signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def leftovers(data: Path) -> list[str]:
    """Live processes this server started: its embedded PostgreSQL, its model
    workers (their uids), its sandboxes."""
    uids = ",".join(str(base + slot) for base in (SANDBOX_UIDS, SERVING_UIDS) for slot in range(4))
    ps = subprocess.run(
        ["ps", "-e", "-o", "pid=,uid=,stat=,args="], capture_output=True, text=True
    ).stdout
    found = []
    for line in ps.splitlines():
        _pid, uid, stat, args = line.split(None, 3)
        if stat.startswith("Z"):
            continue  # reaped by whatever init this machine has; holds nothing
        if str(data) in args or uid in uids.split(","):
            found.append(line.strip())
    return found


def modelci(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "modelci", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_sigterm_under_load_logs_every_answer_and_leaves_nothing_running(
    data_dir: Path, make_repo: GitRepo
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in GITHUB_SETTINGS}
    env.update(
        MODELCI_DATA_DIR=str(data_dir),
        MODELCI_SANDBOX_UID_BASE=str(SANDBOX_UIDS),
        MODELCI_SERVING_UID_BASE=str(SERVING_UIDS),
    )
    repo = make_repo(
        {
            "modelci.yaml": CONFIG,
            "train.py": TRAIN,
            "model_lib.py": MODEL_LIB,
            "data/train.csv": DATA,
            "params.json": json.dumps({"cut": 3.5}),
        }
    )
    modelci(env, "deliver", str(repo), "--ref", "HEAD")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "modelci", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        # Not ready until the champion answered its smoke test; each 503 says when to retry.
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            if ready.status_code == 200:
                break
            assert ready.status_code == 503 and ready.headers["retry-after"], ready.text
            time.sleep(0.1)
        assert httpx.get(f"{url}/models/{NAME}", timeout=5).json()["version"] == 1
        # Without GitHub settings: models are served, the webhook says why it refuses.
        hook = httpx.post(f"{url}/webhooks/github", content=b"{}", timeout=5)
        assert hook.status_code == 503 and "GitHub is not configured" in hook.json()["detail"]
        startup = log_path.read_text()
        assert startup.count("the GitHub loop is off") == 1, startup
        assert "MODELCI_GITHUB_WEBHOOK_SECRET_PATH" in startup

        answered: list[int] = []
        refused: list[str] = []
        lock = threading.Lock()

        def load(first: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                for i in range(first, first + 2000):  # bounded, whatever happens
                    x = i  # the training data's x are integers
                    try:
                        answer = http.post(
                            f"/models/{NAME}/predict", json={"records": [{"x": x, "color": "red"}]}
                        )
                    except httpx.HTTPError as exc:
                        refused.append(type(exc).__name__)
                        return
                    if answer.status_code != 200:
                        refused.append(str(answer.status_code))
                        return
                    with lock:
                        answered.append(x)

        threads = [threading.Thread(target=load, args=(n * 100_000,)) for n in range(3)]
        for thread in threads:
            thread.start()
        while len(answered) < 500 and any(t.is_alive() for t in threads):
            time.sleep(0.01)
        server.send_signal(signal.SIGTERM)  # the process only, as `docker stop` does
        code = server.wait(timeout=120)
        for thread in threads:
            thread.join(60)
        output = log_path.read_text()
        assert code == 0, output
        assert "SIGTERM: stopping" in output and "prediction log:" in output, output
        assert not leftovers(data_dir), leftovers(data_dir)

        logged = json.loads(
            modelci(env, "predictions", NAME, "--limit", "100000", "--format", "json")
        )
        inputs = sorted(row["inputs"]["x"][0] for row in logged)
        print(f"SIGTERM under load: {len(answered)} answered 200, {len(logged)} logged")
        # Once it stops accepting, a client sees a refused connection, never a 5xx or 4xx.
        assert set(refused) <= {"ConnectError", "RemoteProtocolError", "ReadError"}, refused
        assert sorted(answered) == inputs
        assert not leftovers(data_dir), leftovers(data_dir)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
