"""The command line as a user runs it: exit codes, formats, messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import GitRepo, commit_files

pytestmark = pytest.mark.sandbox

TRAIN = "import json\njson.dump({'accuracy': %s, 'loss': %s}, open('metrics.json', 'w'))\n"
CONFIG = "train: python train.py\nmetrics: metrics.json\n"


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    data = Path(tempfile.mkdtemp(prefix="modelci-cli-", dir="/var/tmp"))
    yield {
        **os.environ,
        "MODELCI_DATA_DIR": str(data),
        "MODELCI_DATABASE_URL": f"sqlite:///{data}/store.db",
    }
    shutil.rmtree(data, ignore_errors=True)


def modelci(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelci", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def repo_with(make_repo: GitRepo, base: tuple[float, float], head: tuple[float, float]) -> Path:
    repo = make_repo({"modelci.yaml": CONFIG, "train.py": TRAIN % base})
    commit_files(repo, {"train.py": TRAIN % head})
    return repo


def test_improvement_exits_0_with_a_table(make_repo: GitRepo, env: dict[str, str]) -> None:
    repo = repo_with(make_repo, (0.8, 0.5), (0.9, 0.4))
    done = modelci(env, "evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD")
    assert done.returncode == 0, done.stderr
    assert "improved" in done.stdout
    assert "PASS" in done.stdout


def test_regression_exits_1_and_json_says_why(make_repo: GitRepo, env: dict[str, str]) -> None:
    repo = repo_with(make_repo, (0.9, 0.4), (0.8, 0.5))
    done = modelci(
        env, "evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD", "--format", "json"
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is False
    assert {m["name"]: m["verdict"] for m in report["metrics"]} == {
        "accuracy": "regressed",
        "loss": "regressed",
    }
    assert report["sides"]["head"]["sha"]


def test_markdown_format(make_repo: GitRepo, env: dict[str, str]) -> None:
    repo = repo_with(make_repo, (0.8, 0.5), (0.8, 0.5))
    done = modelci(
        env, "evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD", "--format", "markdown"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("### modelci evaluation")
    assert "| accuracy |" in done.stdout


def test_errors_exit_2_with_cause_and_fix_and_no_traceback(
    make_repo: GitRepo, env: dict[str, str]
) -> None:
    repo = repo_with(make_repo, (0.8, 0.5), (0.9, 0.4))
    commit_files(repo, {"modelci.yaml": "train: python train.py\nmetrcs: m.json\n"})
    done = modelci(env, "evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD")
    assert done.returncode == 2
    assert "did you mean 'metrics'" in done.stderr
    assert "Traceback" not in done.stderr
    missing = modelci(env, "evaluate", "/nonexistent/repo", "--base", "a", "--head", "b")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_first_modelci_yaml_is_evaluated_alone_and_exits_0(
    make_repo: GitRepo, env: dict[str, str]
) -> None:
    repo = make_repo({"train.py": TRAIN % (0.8, 0.5)})
    commit_files(repo, {"modelci.yaml": CONFIG})
    args = ("evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD")
    done = modelci(env, *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True and report["head_only"] is True
    assert report["sides"]["base"]["skipped"] == "the base commit has no modelci.yaml"
    assert {m["name"]: (m["head"], m["base"]) for m in report["metrics"]} == {
        "accuracy": (0.8, None),
        "loss": (0.5, None),
    }
    table = modelci(env, *args)
    assert table.returncode == 0, table.stderr
    assert "head evaluated alone" in table.stdout


def test_a_failed_training_exits_2_with_the_end_of_its_log(
    make_repo: GitRepo, env: dict[str, str]
) -> None:
    repo = repo_with(make_repo, (0.8, 0.5), (0.9, 0.4))
    failing = "import sys\nsys.exit('no data/train.csv in the repository')\n"
    commit_files(repo, {"train.py": failing})
    done = modelci(env, "evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD")
    assert done.returncode == 2
    assert "the head commit's run exited with code 1" in done.stderr
    assert "  | no data/train.csv in the repository" in done.stderr
    assert "  | [modelci: the run exited with code 1" in done.stderr  # not taken for markup
    assert "The whole log: " in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_bubblewrap_refuses_unless_unsafe(
    make_repo: GitRepo, env: dict[str, str], tmp_path: Path
) -> None:
    repo = repo_with(make_repo, (0.8, 0.5), (0.9, 0.4))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "prlimit", "setpriv"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    no_bwrap = {**env, "PATH": str(bin_dir)}
    done = modelci(no_bwrap, "evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD")
    assert done.returncode == 2
    assert "apt-get install bubblewrap" in done.stderr
    assert "--unsafe-no-sandbox" in done.stderr
    unsafe = modelci(
        no_bwrap, "evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD", "--unsafe-no-sandbox"
    )
    assert unsafe.returncode == 0, unsafe.stderr


def test_demo_runs_end_to_end_on_the_embedded_default(env: dict[str, str]) -> None:
    embedded = {k: v for k, v in env.items() if k != "MODELCI_DATABASE_URL"}
    done = modelci(embedded, "demo", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    # The pull request, head vs base.
    assert {m["name"] for m in report["metrics"]} == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert all(m["ci"] is not None for m in report["metrics"])  # predictions give intervals
    assert report["passed"] is True
    assert "Verdict: the pull request passes its gates." in done.stderr
    # main delivered first (the first champion), then the merge, which beats it.
    assert report["merged"]
    first, merge = report["deliveries"]
    assert (first["version"], first["promoted"], first["champion_before"]) == (1, True, None)
    assert (merge["version"], merge["promoted"], merge["champion_before"]) == (2, True, 1)
    assert merge["sha"] == report["merged"]
    assert report["champion"] == {
        "model": "breast-cancer-classifier",
        "version": 2,
        "sha": report["merged"],
    }
    # The champion answered over HTTP, and the answer was printed.
    prediction = report["prediction"]
    assert prediction["version"] == 2
    assert prediction["predictions"] in ([0], [1])
    assert len(prediction["inputs"]) == 30
    assert f"prediction {prediction['predictions'][0]} from breast-cancer-classifier v2" in (
        done.stderr
    )
    assert any(step["command"].startswith("mlflow ui") for step in report["next_steps"])
    assert not (
        Path(embedded["MODELCI_DATA_DIR"]) / "postgres" / "data" / "postmaster.pid"
    ).exists()  # the embedded server was stopped
    # Afterwards, a separate process finds v2 as the champion in the registry.
    show = modelci(embedded, "models", "show", "breast-cancer-classifier")
    assert show.returncode == 0, show.stderr
    rows = {line.split("│")[1].strip(): line for line in show.stdout.splitlines() if "│" in line}
    assert "champion" in rows["2"]
    assert "champion" not in rows["1"]
