"""End to end, delivery and serving: pushes and merges to the default branch, through
`modelci serve`, the real sandbox, MLflow on the real PostgreSQL, and the stand-in GitHub.

A better commit becomes champion and is served; a worse one is registered, not
promoted, with the reason on its check run; a rollback serves the previous
version; bad predict requests get a 422 naming the field; predictions are logged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import GitRepo, commit_files, git
from tests.deliver.test_delivery import CONFIG, DATA  # the same threshold model's data and gates
from tests.github.conftest import INSTALLATION, REPO, GitHub, app_key, github, standin_server
from tests.github.helpers import load_sample
from tests.service.test_server import CLONE_URLS, Service, service, wait_for

__all__ = ["app_key", "github", "service", "standin_server"]  # fixtures used here

pytestmark = pytest.mark.sandbox

# A stdlib-only model whose class lives in the repository's code: serving
# loads the pickle in its sandboxed worker with the code copied beside it.
MODEL_LIB = """\
class Threshold:
    def __init__(self, cut):
        self.cut = cut

    def predict(self, rows):
        return [int(float(row[0]) > self.cut) for row in rows]
"""
TRAIN = """\
import csv, json, pickle
from model_lib import Threshold
cut = json.load(open("params.json"))["cut"]
rows = list(csv.DictReader(open("data/train.csv")))
hits = sum(int(float(r["x"]) > cut) == int(r["label"]) for r in rows)
json.dump({"accuracy": hits / len(rows)}, open("metrics.json", "w"))
pickle.dump(Threshold(cut), open("model.pkl", "wb"))
"""
NAME = "threshold"


def push(repo: Path, sha: str, before: str = "0" * 40) -> dict[str, Any]:
    """GitHub's real `push` example, pointed at our repository's default branch."""
    payload = load_sample("push.json")
    payload.update(ref="refs/heads/main", before=before, after=sha, deleted=False)
    payload["repository"].update(full_name=REPO, clone_url=CLONE_URLS[repo], default_branch="main")
    payload["sender"]["login"] = "maintainer"
    payload["installation"] = {"id": INSTALLATION}
    return payload


def merged(repo: Path, merge_sha: str) -> dict[str, Any]:
    """GitHub's real merged `pull_request` example, merged into our default branch."""
    payload = load_sample("derived/pull_request.closed.merged.json")
    payload["repository"].update(full_name=REPO, clone_url=CLONE_URLS[repo], default_branch="main")
    payload["pull_request"]["base"]["ref"] = "main"
    payload["pull_request"]["merge_commit_sha"] = merge_sha
    payload["sender"]["login"] = "maintainer"
    payload["installation"] = {"id": INSTALLATION}
    return payload


def delivered(github: GitHub, sha: str) -> dict[str, Any] | None:
    runs = [
        r
        for r in github.state.check_runs.values()
        if r["head_sha"] == sha and r["name"] == "modelci/deliver" and r["status"] == "completed"
    ]
    return runs[-1] if runs else None


def served(service: Service) -> dict[str, Any]:
    answer = httpx.get(f"{service.url}/models/{NAME}", timeout=10)
    return dict(answer.json()) if answer.status_code == 200 else {}


def predict(service: Service, **row: Any) -> httpx.Response:
    return httpx.post(f"{service.url}/models/{NAME}/predict", json={"records": [row]}, timeout=30)


def test_merges_deliver_promote_serve_and_roll_back(
    service: Service, github: GitHub, make_repo: GitRepo
) -> None:
    service.env["MODELCI_SERVING_POLL_S"] = "1"
    repo = make_repo(
        {
            "modelci.yaml": CONFIG,
            "train.py": TRAIN,
            "model_lib.py": MODEL_LIB,
            "data/train.csv": DATA,
            "params.json": json.dumps({"cut": 3.5}),  # accuracy 0.8
        }
    )
    CLONE_URLS[repo] = github.state.serve_git(REPO, repo)
    first = git(repo, "rev-parse", "HEAD")
    service.serve()

    # The first version passes its floor and becomes champion.
    assert service.deliver(push(repo, first), event="push").status_code == 202
    wait_for(lambda: delivered(github, first) is not None, service, timeout=180)
    assert delivered(github, first)["conclusion"] == "success"  # type: ignore[index]
    try:
        wait_for(lambda: served(service).get("version") == 1, service, timeout=60)
    except AssertionError:
        logs = Path(service.env["MODELCI_DATA_DIR"]) / "logs" / "serving"
        raise AssertionError(
            json.dumps(served(service), indent=1)
            + "\n".join(p.read_text()[-3000:] for p in logs.glob("*"))
        ) from None
    answer = predict(service, x=7.0, color="red")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    first_request = body.pop("request_id")
    assert len(first_request) == 32  # feedback names the request by it
    assert body == {"predictions": [1], "model": NAME, "version": 1}

    # A merged pull request with a better model: the merge and its push are
    # both delivered by GitHub; the commit is delivered once and promoted.
    better = commit_files(repo, {"params.json": json.dumps({"cut": 5.5})})  # accuracy 1.0
    assert service.deliver(merged(repo, better)).status_code == 202
    assert service.deliver(push(repo, better, before=first), event="push").status_code == 202
    wait_for(lambda: delivered(github, better) is not None, service, timeout=180)
    assert delivered(github, better)["conclusion"] == "success"  # type: ignore[index]
    wait_for(lambda: served(service).get("version") == 2, service, timeout=60)
    assert predict(service, x=5.0, color="blue").json()["predictions"] == [0]

    # A worse commit is registered but not promoted, and the check run says why.
    worse = commit_files(repo, {"params.json": json.dumps({"cut": 1.5})})  # accuracy 0.6
    assert service.deliver(push(repo, worse, before=better), event="push").status_code == 202
    wait_for(lambda: delivered(github, worse) is not None, service, timeout=180)
    check = delivered(github, worse)
    assert check is not None and check["conclusion"] == "neutral"
    assert "accuracy" in check["output"]["summary"], check["output"]
    assert served(service)["version"] == 2

    # Bad requests: the field and the reason, never a 500.
    bad = predict(service, x="seven", color="red")
    assert bad.status_code == 422 and "x" in json.dumps(bad.json()["detail"])
    unknown = predict(service, x=1.0, color="green")
    assert unknown.status_code == 422 and "green" in json.dumps(unknown.json()["detail"])

    # Rollback by hand: the previous champion is served again.
    rolled = subprocess.run(
        [sys.executable, "-m", "modelci", "models", "rollback", NAME, "--reason", "test"],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    wait_for(lambda: served(service).get("version") == 1, service, timeout=60)
    again = predict(service, x=5.0, color="blue").json()
    assert again.pop("request_id") != first_request  # one per request
    assert again == {"predictions": [1], "model": NAME, "version": 1}

    # Every prediction answered is logged, off the request path.
    url = service.env["MODELCI_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")

    def logged() -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM predictions WHERE model_name = %s", (NAME,))
            return int(row.fetchone()[0])  # type: ignore[index]

    wait_for(lambda: logged() == 3, service, timeout=30)
    # The log is written in order and the last answer came after the 422s, so had
    # they been logged they would be among these three.
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT inputs::text FROM predictions WHERE model_name = %s", (NAME,)
        ).fetchall()
    assert not [row for row in rows if "seven" in row[0] or "green" in row[0]], rows
