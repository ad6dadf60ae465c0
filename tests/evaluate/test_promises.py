"""What the README promises about evaluating a change, end to end: real git, real uv,
the real sandbox. Each test names the promise it checks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelci.evaluate.evaluation import EvaluationRequest, EvaluationResult, Evaluator
from modelci.runner.config import Overrides
from tests.conftest import GitRepo, commit_files, git
from tests.evaluate.test_evaluation import evaluator, settings

__all__ = ["evaluator", "settings"]  # fixtures used here

pytestmark = pytest.mark.sandbox

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

# The accuracy is whatever params.json says: each commit's result is known exactly.
TRAIN = """\
import json
acc = json.load(open("params.json"))["accuracy"]
json.dump({"accuracy": acc}, open("metrics.json", "w"))
"""
CONFIG = "train: python train.py\nmetrics: metrics.json\n"


def params(accuracy: float) -> str:
    return json.dumps({"accuracy": accuracy})


def run(
    evaluator: Evaluator, repo: str, base: str, head: str, **request: object
) -> EvaluationResult:
    return evaluator.evaluate(EvaluationRequest(repo=repo, base=base, head=head, **request))  # type: ignore[arg-type]


def accuracies(result: EvaluationResult) -> tuple[float, float]:
    assert result.error is None, result.error
    return result.base.metrics["accuracy"], result.head.metrics["accuracy"]


# -- `--merge-base` compares against the merge base of the two refs ------------------------


def test_merge_base_compares_with_where_the_branch_forked_not_the_moved_base(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo = make_repo({"modelci.yaml": CONFIG, "train.py": TRAIN, "params.json": params(0.7)})
    fork = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    commit_files(repo, {"params.json": params(0.8)}, "the change under review")
    git(repo, "checkout", "-q", "main")
    moved = commit_files(repo, {"params.json": params(0.95)}, "main moved on")

    result = run(evaluator, str(repo), "main", "feature", merge_base=True)
    assert result.base.sha == fork
    assert accuracies(result) == (0.7, 0.8)
    assert result.passed  # against the fork point the change improves accuracy

    tip = run(evaluator, str(repo), "main", "feature")  # without: main's tip, a regression
    assert tip.base.sha == moved
    assert accuracies(tip) == (0.95, 0.8)
    assert not tip.passed


# -- `install: {uv_lock: true}` builds the environment from pyproject.toml + uv.lock ------

PYPROJECT = """\
[project]
name = "tiny-model"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["six==1.16.0"]
"""
# `uv lock` of PYPROJECT; six's wheel is in uv's cache (tests/runner uses it too).
UV_LOCK = """\
version = 1
revision = 5
requires-python = ">=3.11"

[[package]]
name = "six"
version = "1.16.0"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files.pythonhosted.org/packages/71/39/171f1c67cd00715f190ba0b100d606d440a28c93c7714febeca8b79af85e/six-1.16.0.tar.gz", hash = "sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926", size = 34041, upload-time = "2021-05-05T14:18:18.379Z" }
wheels = [
    { url = "https://files.pythonhosted.org/packages/d9/5a/e7c31adbe875f2abbb91bd84cf2dc52d792b5a01506781dbcf25c91daf11/six-1.16.0-py2.py3-none-any.whl", hash = "sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254", size = 11053, upload-time = "2021-05-05T14:18:17.237Z" },
]

[[package]]
name = "tiny-model"
version = "0.1.0"
source = { virtual = "." }
dependencies = [
    { name = "six" },
]

[package.metadata]
requires-dist = [{ name = "six", specifier = "==1.16.0" }]
"""  # noqa: E501
TRAIN_WITH_SIX = """\
import json, six
acc = json.load(open("params.json"))["accuracy"]
json.dump({"accuracy": acc, "six": float(six.__version__ == "1.16.0")}, open("metrics.json", "w"))
"""


def test_uv_lock_builds_the_environment_from_the_lock(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo = make_repo(
        {
            "modelci.yaml": "install: {uv_lock: true}\n" + CONFIG,
            "pyproject.toml": PYPROJECT,
            "uv.lock": UV_LOCK,
            "requirements.txt": "",  # uv_lock wins over the default requirements.txt
            "train.py": TRAIN_WITH_SIX,
            "params.json": params(0.7),
        }
    )
    commit_files(repo, {"params.json": params(0.8)})
    result = run(evaluator, str(repo), "HEAD~1", "HEAD")
    assert accuracies(result) == (0.7, 0.8)
    assert result.head.metrics["six"] == 1.0
    assert result.base.env_key == result.head.env_key  # the same lock: one environment


# -- MODELCI_DEFAULT_COMMAND / MODELCI_DEFAULT_METRICS_FILE (server settings) ------------

SEED = "open('result.txt', 'w').write(str({'accuracy': %s}))\n"


def with_defaults(evaluator: Evaluator) -> Evaluator:
    settings = evaluator.settings.model_copy(
        update={"default_command": "python demo.py", "default_metrics_file": "result.txt"}
    )
    return Evaluator(
        settings=settings,
        database=evaluator.database,
        sandbox=evaluator.sandbox,
        environments=evaluator.environments,
    )


def test_the_default_command_runs_a_repository_without_modelci_yaml(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo = make_repo({"demo.py": SEED % "0.7", "requirements.txt": ""})
    commit_files(repo, {"demo.py": SEED % "0.8"})
    # As the server runs it: no --command or --metrics-file, only the settings.
    result = run(with_defaults(evaluator), str(repo), "HEAD~1", "HEAD")
    assert accuracies(result) == (0.7, 0.8)
    assert result.passed


def test_the_default_command_does_not_replace_a_repositorys_own_config(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo = make_repo(
        {
            "modelci.yaml": CONFIG,
            "train.py": TRAIN,
            "params.json": params(0.7),
            "demo.py": SEED % "0.1",  # what the default command would report
        }
    )
    commit_files(repo, {"params.json": params(0.8)})
    result = run(with_defaults(evaluator), str(repo), "HEAD~1", "HEAD")
    assert accuracies(result) == (0.7, 0.8)


def test_modelci_evaluate_takes_the_defaults_from_the_environment_for_no_config_only(
    make_repo: GitRepo,
) -> None:
    data = Path(tempfile.mkdtemp(prefix="modelci-cli-", dir="/var/tmp"))
    env = {
        **os.environ,
        "MODELCI_DATA_DIR": str(data),
        "MODELCI_DATABASE_URL": f"sqlite:///{data}/store.db",
        "MODELCI_DEFAULT_COMMAND": "python demo.py",
        "MODELCI_DEFAULT_METRICS_FILE": "result.txt",
    }
    seed = make_repo({"demo.py": SEED % "0.7"})
    commit_files(seed, {"demo.py": SEED % "0.8"})
    configured = make_repo(
        {"modelci.yaml": CONFIG, "train.py": TRAIN, "params.json": params(0.7), "demo.py": "1/0"}
    )
    commit_files(configured, {"params.json": params(0.8)})
    args = ["--base", "HEAD~1", "--head", "HEAD", "--format", "json"]
    try:
        for repo in (seed, configured):
            done = subprocess.run(
                [sys.executable, "-m", "modelci", "evaluate", str(repo), *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            rows = {m["name"]: m for m in json.loads(done.stdout)["metrics"]}
            assert (rows["accuracy"]["base"], rows["accuracy"]["head"]) == (0.7, 0.8)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_flags_still_win_over_modelci_yaml(evaluator: Evaluator, make_repo: GitRepo) -> None:
    repo = make_repo({"modelci.yaml": CONFIG, "train.py": TRAIN, "params.json": params(0.7)})
    commit_files(repo, {"demo.py": SEED % "0.9"})
    result = run(
        evaluator,
        str(repo),
        "HEAD~1",
        "HEAD",
        overrides=Overrides(command="python train.py && python demo.py", metrics_file="result.txt"),
    )
    assert result.head.ok and result.head.metrics["accuracy"] == 0.9


# -- `modelci evaluate URL`: a repository fetched over the network --------------------------


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """``git daemon`` on loopback serving the repositories under a directory."""
    served = tmp_path / "served"
    served.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={served}",
            str(served),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise
                time.sleep(0.05)
        yield served, port
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_a_repository_is_evaluated_by_its_git_url(
    evaluator: Evaluator, make_repo: GitRepo, git_daemon: tuple[Path, int]
) -> None:
    served, port = git_daemon
    repo = make_repo({"modelci.yaml": CONFIG, "train.py": TRAIN, "params.json": params(0.7)})
    base = git(repo, "rev-parse", "HEAD")
    head = commit_files(repo, {"params.json": params(0.8)})
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(repo), str(served / "model.git")], check=True
    )
    url = f"git://127.0.0.1:{port}/model.git"
    result = run(evaluator, url, base[:10], "main")
    assert (result.base.sha, result.head.sha) == (base, head)
    assert accuracies(result) == (0.7, 0.8)
    assert result.repo == url

    # The branch moves on the server: the next evaluation fetches it.
    commit_files(repo, {"params.json": params(0.9)})
    subprocess.run(
        ["git", "--git-dir", str(served / "model.git"), "fetch", "-q", str(repo), "main:main"],
        check=True,
    )
    again = run(evaluator, url, base, "main")
    assert again.head.sha == git(repo, "rev-parse", "HEAD")
    assert accuracies(again) == (0.7, 0.9)


# -- `evaluate:` commands run after `train`, and not when it failed ------------------------

EVALUATE = """\
import json
print("evaluate ran", flush=True)
model = json.load(open("model.json"))  # what train wrote
json.dump({"accuracy": model["accuracy"]}, open("metrics.json", "w"))
"""
TRAIN_A_MODEL = """\
import json
json.dump({"accuracy": json.load(open("params.json"))["accuracy"]}, open("model.json", "w"))
"""


def test_evaluate_runs_after_train_and_not_when_train_failed(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    config = "train: python train.py\nevaluate: python evaluate.py\nmetrics: metrics.json\n"
    repo = make_repo(
        {
            "modelci.yaml": config,
            "train.py": TRAIN_A_MODEL,
            "evaluate.py": EVALUATE,
            "params.json": params(0.7),
        }
    )
    commit_files(repo, {"params.json": params(0.8)})
    result = run(evaluator, str(repo), "HEAD~1", "HEAD")
    assert accuracies(result) == (0.7, 0.8)  # evaluate read the model train had written
    assert result.head.log_path is not None
    assert "evaluate ran" in result.head.log_path.read_text()

    commit_files(repo, {"train.py": "raise SystemExit('training diverged')\n"})
    failed = run(evaluator, str(repo), "HEAD~1", "HEAD")
    assert failed.base.ok and not failed.head.ok
    assert "exited with code 1" in (failed.head.error or "")
    assert failed.head.log_path is not None
    log = failed.head.log_path.read_text()
    assert "training diverged" in log  # the run ended at train's failure
    assert "evaluate ran" not in log
