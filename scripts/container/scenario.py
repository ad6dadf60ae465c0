"""The container scenario (scripts/container-test runs it once the images are built).

compose up → ready → doctor (with and without the sandbox's rights) → deliver a
model from a local repository → a prediction through the published port → a
signed ping webhook → a pull request evaluated whose training tries the network
and the secrets → down and up (volumes kept): the champion still served →
SIGTERM: exit 0, nothing left. Every step fails loudly with the services' logs;
nothing is skipped. Standard library only: it runs on the host.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "modelci-ci"
MODEL = "breast-cancer-classifier"
EXAMPLE = "/opt/modelci/lib/python3.11/site-packages/modelci/_examples/sklearn-classifier"
# Sandbox uids of both services (compose.yaml): serve 60100.., 60400..; worker 61100.., 61400..
SANDBOX_UIDS = [range(60100, 60200), range(60400, 60464), range(61100, 61200), range(61400, 61464)]
T0 = time.monotonic()
FIGURES: dict[str, Any] = {}


class Failed(Exception):
    pass


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def run(*argv: str, check: bool = True, timeout: float = 300, **kw: Any) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and done.returncode != 0:
        raise Failed(f"{' '.join(argv[:6])} … exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def compose(*args: str, timeout: float = 300) -> str:
    return run(
        "podman-compose", "-p", PROJECT, "-f", str(ROOT / "compose.yaml"), *args, timeout=timeout
    )


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def exec_in(service: str, script: str, *, check: bool = True, timeout: float = 600) -> str:
    return run(
        "podman", "exec", container(service), "sh", "-c", script, check=check, timeout=timeout
    )


def http(
    method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{os.environ['MODELCI_PORT']}{path}",
        data=body,
        method=method,
        headers=headers or {},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_ready(what: str, *, models: list[str], limit_s: float = 180) -> float:
    start = time.monotonic()
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() - start < limit_s:
        last = http("GET", "/readyz")
        if last[0] == 200 and json.loads(last[1]).get("models", []) == models:
            return time.monotonic() - start
        time.sleep(0.25)
    raise Failed(f"{what}: not ready in {limit_s:g} s; last /readyz: {last[0]} {last[1][:300]!r}")


def predict() -> dict[str, Any]:
    example = json.loads(
        exec_in(
            "serve",
            f"cat /var/lib/modelci/mlflow-artifacts/{MODEL}/*/artifacts/model/"
            "input_example.json | head -c 1000000",
        )
    )
    status, body = http(
        "POST",
        f"/models/{MODEL}/predict",
        json.dumps({"dataframe_split": example}).encode(),
        {"Content-Type": "application/json"},
    )
    if status != 200:
        raise Failed(f"predict answered {status}: {body[:500]!r}")
    answer: dict[str, Any] = json.loads(body)
    if len(answer["predictions"]) != len(example["data"]):
        raise Failed(f"predict answered {answer} for {len(example['data'])} rows")
    return answer


def sandbox_processes() -> list[str]:
    """Host processes whose uid is one of the sandbox ranges (a rootful container's
    uids are the host's)."""
    found = []
    for line in run("ps", "-eo", "uid=,pid=,comm=").splitlines():
        uid, pid, comm = line.split(None, 2)
        if any(int(uid) in r for r in SANDBOX_UIDS):
            found.append(f"{pid} {comm} (uid {uid})")
    return found


def step_doctor(image: str) -> None:
    out = exec_in("serve", "modelci doctor --offline")
    if "✓ container: inside podman" not in out:
        raise Failed(f"doctor in the compose service does not pass its container check:\n{out}")
    bare = subprocess.run(
        ["podman", "run", "--rm", image, "modelci", "doctor", "--offline"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = bare.stdout + bare.stderr
    if bare.returncode != 2 or "systempaths=unconfined" not in out or "unsafe" in out:
        raise Failed(
            f"doctor without the rights (exit {bare.returncode}) should name "
            f"systempaths=unconfined and never suggest going unsandboxed:\n{out}"
        )
    say("doctor: passes in compose; without the rights it names systempaths=unconfined")


def step_deliver() -> None:
    start = time.monotonic()
    exec_in(
        "serve",
        f"""set -e; rm -rf /srv/model; mkdir -p /srv; cp -r {EXAMPLE} /srv/model
        cd /srv/model; git init -q -b main; git add -A
        git -c user.name=ci -c user.email=ci@example.invalid commit -qm base""",
    )
    out = exec_in("serve", "modelci deliver /srv/model --ref main --format json")
    result = json.loads(out)
    if not (result["champion"] and result["version"] == 1):
        raise Failed(f"the delivery did not make v1 champion: {out[:1000]}")
    FIGURES["deliver_s"] = round(time.monotonic() - start, 1)
    wait = wait_ready("after the delivery", models=[MODEL], limit_s=60)
    answer = predict()
    say(
        f"delivered v1 in {FIGURES['deliver_s']} s, served {wait:.1f} s later; "
        f"predict through the published port: {answer['predictions']} (v{answer['version']})"
    )


def step_ping(secret: bytes) -> None:
    payload = json.loads((ROOT / "tests/samples/ping.json").read_text())
    body = json.dumps(payload, separators=(",", ":")).encode()
    signed = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signed,
    }
    status, answer = http("POST", "/webhooks/github", body, headers)
    if status not in (200, 202):
        raise Failed(f"a signed ping was answered {status}: {answer[:500]!r}")
    forged = dict(
        headers,
        **{"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Delivery": str(uuid.uuid4())},
    )
    bad, _ = http("POST", "/webhooks/github", body, forged)
    if bad != 401:
        raise Failed(f"a ping with a wrong signature was answered {bad}, not 401")
    say(f"ping: signed {status}, forged {bad}")


def step_pull_request() -> None:
    """`modelci evaluate` in the worker's container (no GitHub stand-in): the head's
    training runs probe.py after train.py, which counts what it could reach."""
    probe = (ROOT / "scripts/container/probe.py").read_text()
    run(
        "podman",
        "exec",
        "-i",
        container("worker"),
        "sh",
        "-c",
        f"""set -e; rm -rf /srv/pr; mkdir -p /srv; cp -r {EXAMPLE} /srv/pr; cd /srv/pr
        git init -q -b main; git add -A; git -c user.name=ci -c user.email=c@i commit -qm base
        git checkout -q -b pr; cat > probe.py
        sed -i 's/^train: .*/train: python train.py \\&\\& python probe.py/' modelci.yaml
        git add -A; git -c user.name=ci -c user.email=c@i commit -qm 'try to get out'""",
        input=probe,
    )
    # The control: outside the sandbox, in the same container, the probe does reach them.
    control = json.loads(
        exec_in("worker", "cd /srv/pr && python3 probe.py --report").splitlines()[-1]
    )
    if control["network_reached"] < 2 or control["secrets_read"] < 4:
        raise Failed(
            f"the probe finds too little even unsandboxed, so it proves nothing: {control}"
        )
    out = exec_in(
        "worker",
        "modelci evaluate /srv/pr --base main --head pr --format json; echo exit=$?",
        timeout=600,
    )
    text, _, code = out.rpartition("exit=")
    if code.strip() not in ("0", "1"):
        raise Failed(f"the evaluation failed (exit {code.strip()}):\n{text[-3000:]}")
    report = json.loads(text)
    head = _head_metrics(report)
    leaks = {k: head.get(k) for k in ("network_reached", "secrets_read", "env_leaked")}
    if leaks != {"network_reached": 0, "secrets_read": 0, "env_leaked": 0}:
        raise Failed(
            f"the pull request's training got out of its sandbox: {leaks}; "
            f"unsandboxed it found {control}"
        )
    say(
        f"pull request evaluated (exit {code.strip()}): in the sandbox {leaks}; "
        f"outside it the same probe found {control}"
    )


def _head_metrics(report: dict[str, Any]) -> dict[str, float]:
    rows = report.get("metrics")
    if isinstance(rows, list):
        return {r["name"]: r.get("head") for r in rows if isinstance(r, dict)}
    if isinstance(rows, dict):
        return {k: (v.get("head") if isinstance(v, dict) else v) for k, v in rows.items()}
    raise Failed(f"no metrics in the evaluation's JSON: {sorted(report)}")


def step_down_up() -> None:
    compose("down")  # volumes kept
    start = time.monotonic()
    compose("up", "-d")
    ready = wait_ready("after down and up", models=[MODEL])
    answer = predict()
    if answer["version"] != 1:
        raise Failed(f"after down and up the champion served is v{answer['version']}, not v1")
    FIGURES["restart_to_ready_s"] = round(ready + 0, 1)
    FIGURES["up_to_ready_s_restart"] = round(time.monotonic() - start, 1)
    say(f"down and up: champion v1 served again, ready {ready:.1f} s after `up`")


def step_sigterm() -> None:
    before = sandbox_processes()
    if not before:
        raise Failed("no sandboxed model worker runs before the stop: nothing would be tested")
    names = [container(s) for s in ("serve", "worker")]
    start = time.monotonic()
    run("podman", "stop", "--time", "60", *names, timeout=120)  # SIGTERM, the stop signal
    FIGURES["sigterm_stop_s"] = round(time.monotonic() - start, 1)
    for name in names:
        code = run("podman", "inspect", "--format", "{{.State.ExitCode}}", name).strip()
        if code != "0":
            logs = run("podman", "logs", "--tail", "30", name, check=False)
            raise Failed(
                f"{name} exited {code} on SIGTERM (137: killed after the grace period):\n{logs}"
            )
    left = sandbox_processes()
    if left:
        raise Failed(f"left running after SIGTERM: {left}")
    conmons = [
        line
        for line in run("ps", "-eo", "args=").splitlines()
        if "conmon" in line and any(n in line for n in names)
    ]
    if conmons:
        raise Failed(f"container monitors left after SIGTERM: {conmons}")
    say(
        f"SIGTERM: serve and worker exited 0 in {FIGURES['sigterm_stop_s']} s; "
        f"{len(before)} sandboxed processes before, none after"
    )


def dump_logs() -> None:
    for service in ("db", "serve", "worker"):
        print(f"--- logs of {service} (last 40 lines) ---", file=sys.stderr, flush=True)
        subprocess.run(
            ["podman", "logs", "--tail", "40", container(service)],
            stdout=sys.stderr,
            stderr=sys.stderr,
            check=False,
            timeout=60,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    image = os.environ["MODELCI_IMAGE"]
    secrets_dir = Path(tempfile.mkdtemp(prefix="modelci-ci-secrets."))
    os.environ.update(
        MODELCI_SECRETS_DIR=str(secrets_dir),
        MODELCI_GITHUB_APP_ID="1",
        MODELCI_PORT=str(free_port()),
    )
    secret = os.urandom(32).hex().encode()
    (secrets_dir / "webhook-secret").write_bytes(secret + b"\n")
    (secrets_dir / "db-password").write_text(os.urandom(18).hex() + "\n")
    run("openssl", "genrsa", "-out", str(secrets_dir / "app-key.pem"), "2048")
    for f in secrets_dir.iterdir():
        f.chmod(0o600)
    compose("down", "-v", timeout=180)  # a previous run's leftovers
    try:
        start = time.monotonic()
        compose("up", "-d")
        FIGURES["first_up_to_ready_s"] = round(wait_ready("first start", models=[]), 1)
        FIGURES["first_up_total_s"] = round(time.monotonic() - start, 1)
        say(f"up: ready {FIGURES['first_up_total_s']} s after `up` (empty volumes)")
        step_doctor(image)
        step_deliver()
        step_ping(secret)
        step_pull_request()
        step_down_up()
        step_sigterm()
    except (Failed, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        print(f"container-test: FAILED: {exc}", file=sys.stderr)
        dump_logs()
        return 1
    finally:
        compose("down", "-v", timeout=180)
        shutil.rmtree(secrets_dir, ignore_errors=True)
    size = run("podman", "image", "inspect", "--format", "{{.Size}}", image).strip()
    FIGURES["image_mb"] = round(int(size) / 1e6)
    say(f"container-test: passed; {json.dumps(FIGURES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
