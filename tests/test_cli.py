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
from typing import Any

import click
import pytest
from click.testing import CliRunner

from modelci.cli import Duration, VersionNumber, cli

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
    ui = f"modelci --data-dir {embedded['MODELCI_DATA_DIR']} mlflow-ui"
    assert any(step["command"] == ui for step in report["next_steps"])
    assert not (
        Path(embedded["MODELCI_DATA_DIR"]) / "postgres" / "data" / "postmaster.pid"
    ).exists()  # the embedded server was stopped
    # Afterwards, a separate process finds v2 as the champion in the registry.
    show = modelci(embedded, "models", "show", "breast-cancer-classifier")
    assert show.returncode == 0, show.stderr
    rows = {line.split("│")[1].strip(): line for line in show.stdout.splitlines() if "│" in line}
    assert "champion" in rows["2"]
    assert "champion" not in rows["1"]
    # A second demo in the same data dir registers nothing new and moves no champion.
    again = modelci(embedded, "demo", "--format", "json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert [(d["version"], d["reused"]) for d in second["deliveries"]] == [(1, True), (2, True)]
    assert second["champion"]["version"] == 2
    assert "reused: already registered for this commit" in again.stderr
    listed = json.loads(modelci(embedded, "models", "list", "--format", "json").stdout)
    assert listed["models"][0]["versions"] == 2


# -- conventions (click's CliRunner: stdout and stderr are not terminals) ----------------


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_no_arguments_prints_help_and_exits_0() -> None:
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and "Commands:" in result.output


def test_every_command_takes_h_and_shows_examples() -> None:
    for path in [(), *_commands(cli)]:
        result = CliRunner().invoke(cli, [*path, "-h"])
        assert result.exit_code == 0, (path, result.output)
        assert "Examples:" in result.output, path
        assert "\n      modelci " in result.output or "\n    modelci " in result.output, path
    evaluate = CliRunner().invoke(cli, ["evaluate", "--help"]).output
    assert "Exit codes:" in evaluate and "1  a gated metric regressed" in evaluate


def test_timeout_and_version_take_what_people_write() -> None:
    assert Duration().convert("10m", None, None) == 600
    assert Duration().convert("90s", None, None) == 90
    assert Duration().convert("45", None, None) == 45
    assert VersionNumber().convert("v2", None, None) == 2
    assert VersionNumber().convert("2", None, None) == 2
    bad = CliRunner().invoke(
        cli, ["evaluate", ".", "--base", "a", "--head", "b", "--timeout", "soon"]
    )
    assert bad.exit_code == 2 and "use seconds (600) or 90s, 10m, 1h" in bad.output
    version = CliRunner().invoke(cli, ["models", "promote", "m", "two", "--reason", "r"])
    assert version.exit_code == 2 and "give its number, e.g. 2 or v2" in version.output


def test_errors_are_not_wrapped_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    missing = tmp_path / ("a-directory-whose-name-is-long-enough-to-pass-eighty-columns" * 2)
    result = CliRunner().invoke(
        cli, ["evaluate", str(missing), "--base", "main", "--head", "HEAD", "-q"]
    )
    assert result.exit_code == 2
    assert f"error: {missing} does not exist\n" in result.output


def test_timeout_message_names_where_the_limit_came_from(
    make_repo: GitRepo, env: dict[str, str]
) -> None:
    slow = "import time\ntime.sleep(30)\n"
    repo = make_repo({"modelci.yaml": CONFIG + "limits:\n  timeout: 1s\n", "train.py": slow})
    commit_files(repo, {"params.txt": "1"})
    from_yaml = modelci(env, "evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD", "-q")
    assert from_yaml.returncode == 2, from_yaml.stderr
    assert "1 s timeout (limits.timeout in modelci.yaml; raise it there" in from_yaml.stderr
    from_flag = modelci(
        env, "evaluate", str(repo), "--base", "HEAD~1", "--head", "HEAD", "-q", "--timeout", "2s"
    )
    assert from_flag.returncode == 2, from_flag.stderr
    assert "2 s timeout (set by --timeout; raise it with a larger one" in from_flag.stderr


def test_not_a_repository_and_a_subdirectory_are_named(
    make_repo: GitRepo, env: dict[str, str], tmp_path: Path
) -> None:
    repo = make_repo({"modelci.yaml": CONFIG, "sub/train.py": TRAIN % (0.8, 0.5)})
    plain = tmp_path / "plain"
    plain.mkdir()
    done = modelci(env, "evaluate", str(plain), "--base", "main", "--head", "main", "-q")
    assert done.returncode == 2 and f"{plain} is not a git repository" in done.stderr
    sub = modelci(env, "evaluate", str(repo / "sub"), "--base", "main", "--head", "main", "-q")
    assert sub.returncode == 2 and "is the subdirectory sub of the git repository" in sub.stderr


# -- models: tables, JSON, names, rollback (a registry filled without training) ---------

LONG = "a-model-name-long-enough-that-an-80-column-table-would-cut-it-in-two-or-three"


def _fill_registry(data: Path) -> None:
    from modelci.deliver.modelspec import Column, ServingSpec
    from modelci.deliver.tracking import Registry, build_model_dir, tracking_uri_for
    from modelci.settings import Settings

    settings = Settings(data_dir=data, database_url=f"sqlite:///{data}/store.db")
    registry = Registry(tracking_uri_for(settings, settings.database_url or ""), data_dir=data)
    spec = ServingSpec(
        loader="pickle", artifact="model.pkl", columns=(Column("x", "double"),), input_example=[]
    )
    for n in (1, 2, 3):
        model = data / f"model{n}"
        model.mkdir()
        (model / "model.pkl").write_bytes(b"not loaded")
        build_model_dir(model, spec=spec)
        registry.log_training(
            name=LONG,
            repository="acme/long",
            sha=str(n) * 40,
            model_dir=model,
            params={},
            metrics={"validation.balanced_accuracy_of_the_long_named_metric": 0.9 + n / 100},
        )


def test_models_commands_on_a_registry(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = Path(env["MODELCI_DATA_DIR"])
    monkeypatch.setenv("MODELCI_DATABASE_URL", env["MODELCI_DATABASE_URL"])
    monkeypatch.delenv("MODELCI_DATA_DIR", raising=False)
    _fill_registry(data)
    runner = CliRunner()
    top = ["--data-dir", str(data)]

    def run(*args: str) -> Any:
        return runner.invoke(cli, [*top, *args])

    for version in ("v1", "2", "v3"):  # three champion changes: none→1, 1→2, 2→3
        assert run("models", "promote", LONG, version, "--reason", f"try {version}").exit_code == 0
    first = run("models", "rollback", LONG, "--reason", "bad answers", "--actor", "bo")
    assert first.exit_code == 0 and "v2 is the champion" in first.output, first.output
    second = run("models", "rollback", LONG, "--reason", "still bad", "--actor", "bo")
    assert second.exit_code == 0 and "v1 is the champion" in second.output, second.output
    third = run("models", "rollback", LONG, "--reason", "again")
    assert third.exit_code == 2
    assert "no champion change left to undo (v1 was its first champion)" in third.output

    listed = run("models", "list")
    assert listed.exit_code == 0, listed.output
    assert any(LONG in line and "v1" in line for line in listed.output.splitlines())
    assert "validation.balanced_accuracy_of_the_long_named_metric=0.91" in listed.output
    assert f"modelci --data-dir {data} mlflow-ui" in listed.output
    as_json = json.loads(run("models", "list", "--format", "json").output)
    assert as_json["models"][0]["name"] == LONG and as_json["models"][0]["champion"] == 1

    shown = run("models", "show", LONG)
    assert shown.exit_code == 0, shown.output
    assert "rolled back to v1, replacing v2 (by bo, because still bad)" in shown.output
    assert "promoted v3 by hand (by " in shown.output
    assert "rolled_back" not in shown.output
    history = json.loads(run("models", "show", LONG, "--format", "json").output)
    assert history["champion"] == 1 and [v["version"] for v in history["versions"]] == [3, 2, 1]
    assert history["history"][0]["description"].startswith("rolled back to v1")

    typo = run("models", "show", LONG[:-1] + "x")
    assert typo.exit_code == 2 and f"did you mean '{LONG}'?" in typo.output


def test_mlflow_ui_starts_the_embedded_database_and_stops_both(env: dict[str, str]) -> None:
    import signal
    import socket
    import time
    import urllib.request

    embedded = {k: v for k, v in env.items() if k != "MODELCI_DATABASE_URL"}
    data = Path(embedded["MODELCI_DATA_DIR"])
    data.chmod(0o711)  # the postgres user enters it
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "modelci", "mlflow-ui", "--port", str(port)],
        env=embedded,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_file = data / "postgres" / "data" / "postmaster.pid"
    try:
        deadline = time.monotonic() + 120
        while True:  # until MLflow's UI answers
            assert process.poll() is None, process.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "MLflow's UI did not answer"
                time.sleep(0.5)
        assert pid_file.exists()  # the embedded database runs for it
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not pid_file.exists()  # the database stopped
    with socket.socket() as sock:  # and the UI: its port is free again
        sock.bind(("127.0.0.1", port))
