"""End to end: `modelci serve` / `modelci worker` processes, real PostgreSQL, the real
sandbox, real webhook payloads re-signed, and the stand-in GitHub on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import GitRepo, commit_files, git
from tests.github.conftest import INSTALLATION, REPO, GitHub, app_key, github, standin_server
from tests.github.helpers import TEST_SECRET, load_sample, signed_delivery

__all__ = ["app_key", "github", "standin_server"]  # fixtures used here

pytestmark = pytest.mark.sandbox
if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

TRAIN = """\
import json, os, random, time
p = json.load(open("params.json"))
print("training", flush=True)
time.sleep(p.get("sleep", 0))
rng = random.Random(0)
y = [rng.randint(0, 1) for _ in range(300)]
pred = [t if rng.random() < p["skill"] else 1 - t for t in y]
json.dump({"accuracy": sum(a == b for a, b in zip(y, pred)) / len(y)}, open("metrics.json", "w"))
"""
CONFIG = "train: python train.py\nmetrics: metrics.json\n"
MAINTAINER, OUTSIDER = "maintainer", "drive-by"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """modelci processes for one test, sharing one fresh PostgreSQL database."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelci", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def serve(self, workers: int = 2) -> subprocess.Popen[bytes]:
        proc = self._spawn("serve", "serve", "--port", str(self.port), "--workers", str(workers))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.2)
            assert proc.poll() is None, self.dump()
        raise AssertionError("modelci serve did not start\n" + self.dump())

    def worker(self, *queues: str) -> subprocess.Popen[bytes]:
        options = [arg for queue in queues for arg in ("--queue", queue)]
        return self._spawn("worker", "worker", "--concurrency", "2", *options)

    def deliver(
        self,
        payload: dict[str, Any],
        *,
        event: str = "pull_request",
        delivery_id: str | None = None,
        secret: bytes = TEST_SECRET,
    ) -> httpx.Response:
        headers, body = signed_delivery(
            payload, event=event, delivery_id=delivery_id, secret=secret
        )
        return httpx.post(f"{self.url}/webhooks/github", headers=headers, content=body, timeout=10)

    def api(self, path: str) -> Any:
        """GET a jobs API path with a token (created once with `modelci tokens create`)."""
        if not hasattr(self, "token"):
            created = subprocess.run(
                [sys.executable, "-m", "modelci", "tokens", "create", "e2e"],
                env=self.env,
                capture_output=True,
                check=True,
            )
            self.token = created.stdout.decode().strip()
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=10).json()

    def dump(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def service(github: GitHub, postgres_url: str, app_key: Any) -> Iterator[Service]:
    data = Path(tempfile.mkdtemp(prefix="modelci-svc-", dir="/var/tmp"))
    name = f"modelci_e2e_{uuid.uuid4().hex[:8]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    key = data / "app.pem"
    key.write_bytes(app_key.private_pem)
    key.chmod(0o600)
    env = {
        **os.environ,
        "MODELCI_DATA_DIR": str(data),
        "MODELCI_DATABASE_URL": url,
        "MODELCI_GITHUB_API_URL": github.url,
        "MODELCI_GITHUB_APP_ID": str(github.app_id),
        "MODELCI_GITHUB_PRIVATE_KEY_PATH": str(key),
        "MODELCI_GITHUB_WEBHOOK_SECRET": TEST_SECRET.decode(),
        "MODELCI_WORKERS": "2",
        "MODELCI_SANDBOX_UID_BASE": "60300",
        # Repositories are fetched from the stand-in over http on loopback, with the token.
        "MODELCI_ALLOW_LOOPBACK_HTTP": "1",
    }
    github.state.set_role(REPO, MAINTAINER, "write")
    github.state.set_role(REPO, OUTSIDER, "read")
    svc = Service(env, data)
    try:
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(data, ignore_errors=True)


# Each test's repository, served by the stand-in over smart HTTP (clone URL by path).
CLONE_URLS: dict[Path, str] = {}


def model_repo(
    github: GitHub,
    make_repo: GitRepo,
    *,
    head_skill: float = 0.9,
    sleep: float = 0,
    head_files: dict[str, str] | None = None,
) -> tuple[Path, str]:
    """A model repository with a pull request #1 (branch ``feature``) open on GitHub."""
    repo = make_repo(
        {"modelci.yaml": CONFIG, "train.py": TRAIN, "params.json": json.dumps({"skill": 0.7})}
    )
    CLONE_URLS[repo] = github.state.serve_git(REPO, repo)
    git(repo, "checkout", "-q", "-b", "feature")
    params = json.dumps({"skill": head_skill, "sleep": sleep})
    head = commit_files(repo, {"params.json": params, **(head_files or {})})
    git(repo, "checkout", "-q", "main")
    github.state.add_pull(REPO, 1, head_sha=head, head_ref="feature", labels=("evaluate",))
    return repo, head


def labeled(
    repo: Path,
    head_sha: str,
    *,
    sender: str = MAINTAINER,
    action: str = "labeled",
    label: str = "evaluate",
) -> dict[str, Any]:
    """GitHub's real `pull_request` example, pointed at our repository."""
    payload = load_sample("pull_request.labeled.json")
    payload["action"] = action
    payload["repository"]["full_name"] = REPO
    payload["repository"]["clone_url"] = CLONE_URLS[repo]
    payload["pull_request"]["number"] = payload["number"] = 1
    payload["pull_request"]["head"]["sha"] = head_sha
    payload["pull_request"]["base"]["ref"] = "main"
    payload["pull_request"]["labels"] = [{"name": label}]
    payload["label"] = {"name": label}
    payload["sender"]["login"] = sender
    payload["installation"] = {"id": INSTALLATION}
    return payload


def all_jobs_ended(service: Service) -> bool:
    """Every job the server has (housekeeping aside) has run to its end."""
    ended = ("succeeded", "failed", "cancelled", "aborted")
    return all(job["status"] in ended for job in service.api("/api/jobs"))


def wait_for(condition: Callable[[], bool], service: Service, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError("timed out\n" + service.dump())


def sandbox_processes() -> str:
    """Live processes of the sandbox's uids (MODELCI_SANDBOX_UID_BASE + slot); zombies
    hold nothing and wait for whatever init this machine has to reap them."""
    uids = ",".join(str(60300 + slot) for slot in range(4))
    ps = subprocess.run(
        ["ps", "-o", "pid=,stat=,args=", "-u", uids], capture_output=True, text=True
    ).stdout
    return "".join(line for line in ps.splitlines(True) if line.split()[1][0] != "Z")


def no_sandbox_left(service: Service) -> None:
    try:
        wait_for(lambda: not sandbox_processes(), service, timeout=10)
    except AssertionError as exc:
        raise AssertionError(f"sandbox processes left:\n{sandbox_processes()}") from exc


def comments(github: GitHub) -> list[dict[str, Any]]:
    return [c for c in github.state.comments if c["_issue"] == 1]


def finished(github: GitHub, head_sha: str) -> Callable[[], bool]:
    def done() -> bool:
        found = comments(github)
        runs = [r for r in github.state.check_runs.values() if r["head_sha"] == head_sha]
        return (
            len(found) == 1
            and head_sha[:7] in found[0]["body"]
            and ("PASS" in found[0]["body"] or "FAIL" in found[0]["body"])
            and any(r["status"] == "completed" for r in runs)
        )

    return done


def test_label_gives_one_comment_and_a_completed_check(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    repo, head = model_repo(github, make_repo)
    service.serve()
    answer = service.deliver(labeled(repo, head))
    assert answer.status_code == 202, answer.text
    wait_for(finished(github, head), service)
    body = comments(github)[0]["body"]
    assert "| accuracy |" in body and "improved" in body
    run = next(r for r in github.state.check_runs.values() if r["head_sha"] == head)
    assert run["conclusion"] == "success"


def test_relabel_and_synchronize_update_the_same_comment(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    repo, head = model_repo(github, make_repo)
    service.serve()
    assert service.deliver(labeled(repo, head)).status_code == 202
    wait_for(finished(github, head), service)
    assert service.deliver(labeled(repo, head)).status_code == 202
    git(repo, "checkout", "-q", "feature")
    newer = commit_files(repo, {"params.json": json.dumps({"skill": 0.5})})
    git(repo, "checkout", "-q", "main")
    assert service.deliver(labeled(repo, newer, action="synchronize")).status_code == 202
    wait_for(finished(github, newer), service)
    assert len(comments(github)) == 1
    assert "FAIL" in comments(github)[0]["body"]  # 0.5 skill regresses accuracy


def test_label_by_a_user_without_write_access_runs_nothing(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    repo, head = model_repo(github, make_repo)
    service.serve()
    assert service.deliver(labeled(repo, head, sender=OUTSIDER)).status_code == 202
    wait_for(lambda: len(comments(github)) == 1, service, timeout=30)
    assert "maintainer" in comments(github)[0]["body"]
    # The delivery's job decided (and would have queued an evaluation) before it
    # ended: once it has, nothing else can run the pull request's code.
    wait_for(lambda: all_jobs_ended(service), service, timeout=30)
    tasks = [job["task"] for job in service.api("/api/jobs")]
    assert tasks == ["modelci.process_delivery"]
    assert github.state.check_runs == {}
    assert not list((Path(service.env["MODELCI_DATA_DIR"]) / "logs").glob("*.log"))


def test_a_pull_request_asking_for_a_gpu_waits_for_a_gpu_worker(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    device = service.logs / "fake-nvidia0"  # a GPU's device node, as a plain file
    device.write_text("gpu")
    device.chmod(0o666)
    service.env["MODELCI_GPU_DEVICES"] = str(device)
    on_gpu = {
        "modelci.yaml": CONFIG + "limits:\n  gpu: true\n",
        "train.py": TRAIN + f"assert open({str(device)!r}).read() == 'gpu'\n",
    }
    repo, head = model_repo(github, make_repo, head_files=on_gpu)
    service.serve()  # its workers take events and evaluations, not gpu
    assert service.deliver(labeled(repo, head)).status_code == 202

    def waiting() -> bool:
        found = comments(github)
        runs = [r for r in github.state.check_runs.values() if r["head_sha"] == head]
        return (
            len(found) == 1
            and "waiting for a GPU worker" in found[0]["body"]
            and [r["status"] for r in runs] == ["queued"]
        )

    wait_for(waiting, service, timeout=60)
    assert not list((service.logs / "logs").glob("*")), "nothing runs off the gpu queue"
    service.worker("gpu")
    wait_for(finished(github, head), service)
    assert "PASS" in comments(github)[0]["body"]
    (run,) = [r for r in github.state.check_runs.values() if r["head_sha"] == head]
    assert run["conclusion"] == "success"


def test_redelivery_is_processed_once_and_bad_signatures_are_refused(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    repo, head = model_repo(github, make_repo)
    service.serve()
    bad = service.deliver(labeled(repo, head), secret=b"wrong secret")
    assert bad.status_code == 401
    garbage = httpx.post(
        f"{service.url}/webhooks/github",
        content=b"{not json",
        headers={
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": "x",
            "X-Hub-Signature-256": "sha256=00",
        },
        timeout=10,
    )
    assert garbage.status_code == 401
    delivery = str(uuid.uuid4())
    assert service.deliver(labeled(repo, head), delivery_id=delivery).status_code == 202
    again = service.deliver(labeled(repo, head), delivery_id=delivery)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    wait_for(finished(github, head), service)
    wait_for(lambda: all_jobs_ended(service), service, timeout=30)
    assert len([r for r in github.state.check_runs.values() if r["head_sha"] == head]) == 1
    jobs = service.api("/api/jobs")
    assert len([j for j in jobs if j["task"] == "modelci.evaluate_pull_request"]) == 1


def test_jobs_queued_across_a_server_restart_all_complete(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    repo, head = model_repo(github, make_repo)
    server = service.serve(workers=0)
    assert service.deliver(labeled(repo, head)).status_code == 202
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    service.serve(workers=2)
    wait_for(finished(github, head), service, timeout=120)


def test_a_worker_killed_mid_evaluation_is_retried_and_one_comment_remains(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    repo, head = model_repo(github, make_repo, sleep=20)
    service.serve(workers=0)
    first = service.worker()
    assert service.deliver(labeled(repo, head)).status_code == 202
    logs = Path(service.env["MODELCI_DATA_DIR"]) / "logs"

    def training_head() -> bool:
        # Its training prints this, then sleeps 20 s: the sandbox is up (killed
        # while bwrap still starts, the chain would only die with the slot's next use).
        return any("training" in log.read_text() for log in logs.glob(f"*{head[:12]}*.log"))

    wait_for(training_head, service)
    assert first.poll() is None, service.dump()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = time.time()
    # The sandbox dies with its worker (bwrap --die-with-parent), so no stale
    # process holds the slot's uid or cgroup when the job is retried.
    no_sandbox_left(service)
    service.worker()
    wait_for(finished(github, head), service, timeout=180)
    found = comments(github)
    assert len(found) == 1 and "| accuracy |" in found[0]["body"]
    runs = [r for r in github.state.check_runs.values() if r["head_sha"] == head]
    # The retry completed the check run its killed attempt opened: none is left in progress.
    assert [(r["status"], r["conclusion"]) for r in runs] == [("completed", "success")]
    jobs = service.api("/api/jobs")
    evaluations = [j for j in jobs if j["task"] == "modelci.evaluate_pull_request"]
    assert len(evaluations) == 1, evaluations
    retried = (service.logs / "worker-2.log").read_text()
    assert "lost its worker; retrying it" in retried, service.dump()
    task = "Starting job modelci.evaluate_pull_request"
    restart = next(line for line in retried.splitlines() if task in line)
    started = datetime.strptime(restart[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    print(f"SIGKILL to the evaluation restarting: {started - killed_at:.1f} s")


def test_an_evaluation_past_the_job_timeout_is_stopped_and_reported(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    repo, head = model_repo(github, make_repo, sleep=120)
    service.env["MODELCI_JOB_TIMEOUT_S"] = "10"
    service.serve()
    assert service.deliver(labeled(repo, head)).status_code == 202

    def timed_out() -> bool:
        runs = [r for r in github.state.check_runs.values() if r["head_sha"] == head]
        return any(r.get("conclusion") == "timed_out" for r in runs)

    wait_for(timed_out, service)
    found = comments(github)
    assert len(found) == 1 and "job timeout" in found[0]["body"], found
    jobs = service.api("/api/jobs")
    evaluation = next(j for j in jobs if j["task"] == "modelci.evaluate_pull_request")
    wait_for(
        lambda: service.api(f"/api/jobs/{evaluation['id']}")["status"] == "failed",
        service,
        timeout=30,
    )
    no_sandbox_left(service)


def test_poll_mode_evaluates_a_labeled_pull_request_without_webhooks(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    _repo, head = model_repo(github, make_repo)  # labeled by MAINTAINER
    service.env.pop("MODELCI_GITHUB_WEBHOOK_SECRET")  # GitHub cannot reach us: no secret
    service.env.update(
        {"MODELCI_POLL_REPOSITORIES": json.dumps([REPO]), "MODELCI_POLL_INTERVAL_S": "1"}
    )
    service._spawn("serve", "serve", "--port", str(service.port), "--poll")
    wait_for(finished(github, head), service)
    assert len(comments(github)) == 1
    assert (service.logs / "poll-state.json").exists()
