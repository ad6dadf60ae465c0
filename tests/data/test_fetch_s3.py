"""DVC data on S3: moto's server mode on loopback speaks the real S3 API; the
credentials and the endpoint are the server's, and training never sees them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from modelci.evaluate.evaluation import Evaluator
from modelci.settings import Settings
from tests.conftest import commit_files
from tests.data.dvcrepos import commit_data, csv_rows, dvc, dvc_repo
from tests.data.test_fetch import allow, evaluate, evaluator, place, settings

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]
__all__ = ["evaluator", "place", "settings"]  # fixtures shared with test_fetch

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

SECRET = "moto-secret-d41d8cd98f00b204"
KEY_ID = "AKIAMODELCITEST0001"

# Looks everywhere a training could find the fetch's credentials.
SNOOP = f"""\
import json, os
found = []
def look(where, text):
    if {SECRET[::-1]!r}[::-1] in text or {KEY_ID[::-1]!r}[::-1] in text:  # not in this file
        found.append(where)
look("environ", repr(dict(os.environ)))
for root in (os.getcwd(), "/tmp", os.path.expanduser("~"), "/etc", "/run"):
    for base, dirs, files in os.walk(root):
        for name in files:
            try:
                path = os.path.join(base, name)
                look(path, open(path, errors="ignore").read())
            except OSError:
                pass
for pid in os.listdir("/proc"):
    for part in ("environ", "cmdline"):
        try:
            path = f"/proc/{{pid}}/{{part}}"
            look(path, open(path, "rb").read().decode(errors="ignore"))
        except OSError:
            pass
print("FOUND", found)
rows = open("data/data.csv").read().splitlines()[1:]
json.dump({{"accuracy": sum(r.endswith(",1") for r in rows) / len(rows), "leaks": len(found)}},
          open("metrics.json", "w"))
"""


@pytest.fixture
def s3() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="team-bucket")
    try:
        yield endpoint
    finally:
        server.stop()


def s3_repo(place: Path, endpoint: str, data: str) -> Path:
    repo = dvc_repo(place / "churn", "s3://team-bucket/churn", data, files={"train.py": SNOOP})
    # The developer's own endpoint and keys stay in .dvc/config.local (not committed).
    for option, value in (
        ("endpointurl", endpoint),
        ("access_key_id", KEY_ID),
        ("secret_access_key", SECRET),
    ):
        dvc(repo, "remote", "modify", "--local", "storage", option, value)
    dvc(repo, "push", "--quiet")
    return repo


def allow_s3(
    settings: Settings, repo: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_KEY_ID", KEY_ID)
    monkeypatch.setenv("CHURN_SECRET", SECRET)
    allow(
        settings,
        repo,
        'allowed_urls = ["s3://team-bucket/churn"]\n'
        f'[repositories."{repo.name}".remotes.storage]\n'
        'access_key_id_env = "CHURN_KEY_ID"\nsecret_access_key_env = "CHURN_SECRET"\n'
        f'endpoint_url = "{endpoint}"\n',
    )


def test_s3_data_is_fetched_and_training_finds_no_credentials(
    evaluator: Evaluator,
    settings: Settings,
    place: Path,
    s3: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = s3_repo(place, s3, csv_rows(ones=1, zeros=3))
    commit_data(repo, csv_rows(ones=3, zeros=1), "new data")
    allow_s3(settings, repo, s3, monkeypatch)

    result = evaluate(evaluator, repo)

    assert result.base.ok, result.base.error
    assert result.head.ok, result.head.error
    assert result.base.metrics["accuracy"] == pytest.approx(0.25)
    assert result.head.metrics["accuracy"] == pytest.approx(0.75)
    assert result.head.metrics["leaks"] == 0
    assert result.head.log_path is not None
    assert "FOUND []" in result.head.log_path.read_text()
    for log in settings.logs_dir.iterdir():
        assert SECRET not in log.read_text(errors="ignore")


def test_an_endpoint_in_the_repository_config_is_not_used(
    evaluator: Evaluator,
    settings: Settings,
    place: Path,
    s3: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = s3_repo(place, s3, csv_rows(ones=1, zeros=1))
    allow_s3(settings, repo, s3, monkeypatch)
    # A pull request sends the fetch, keys and all, to an address of its choosing.
    config = (repo / ".dvc" / "config").read_text()
    config += "    endpointurl = http://127.0.0.1:9/steal\n"
    commit_files(repo, {".dvc/config": config})

    result = evaluate(evaluator, repo, base="HEAD")

    assert result.head.ok, result.head.error  # fetched from the server's endpoint
    assert result.head.metrics["accuracy"] == pytest.approx(0.5)
