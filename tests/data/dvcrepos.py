"""Real DVC repositories for the tests: git + `python -m dvc` from modelci's environment."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from pathlib import Path

import uv

from modelci.data.fetch import DataFetcher, FetchResult
from modelci.runner.cgroups import acquire_slot
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import Sandbox, SandboxProcess, SandboxResult, SandboxSpec, make_sandbox
from modelci.settings import Settings
from tests.conftest import git

# Trains on the DVC-tracked data.csv: the metric is the share of rows labelled 1.
TRAIN = """\
import csv, json
rows = list(csv.DictReader(open("data/data.csv")))
acc = sum(r["label"] == "1" for r in rows) / len(rows)
json.dump({"accuracy": acc, "rows": len(rows)}, open("metrics.json", "w"))
"""
CONFIG = "train: python train.py\nmetrics: metrics.json\nrepeats: 1\n"


def dvc(path: Path, *args: str) -> str:
    """Run the dvc command in this process: a `python -m dvc` process per command
    (DVC's imports, about a second each) made up most of these tests' set-up."""
    from dvc.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.environ["DVC_NO_ANALYTICS"] = "1"
    try:
        os.chdir(path)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(previous)
    assert code == 0, out.getvalue() + err.getvalue()
    return out.getvalue()


def csv_rows(ones: int, zeros: int) -> str:
    return (
        "x,label\n"
        + "".join(f"{i},1\n" for i in range(ones))
        + "".join(f"{i},0\n" for i in range(zeros))
    )


def dvc_repo(
    path: Path, remote_url: str, data: str, *, files: dict[str, str] | None = None
) -> Path:
    """A git repository whose data/data.csv is tracked by DVC and pushed to remote_url."""
    path.mkdir(parents=True)
    git(path, "init", "--quiet")
    dvc(path, "init", "--quiet")
    dvc(path, "remote", "add", "-d", "storage", remote_url)
    for name, text in {"modelci.yaml": CONFIG, "train.py": TRAIN, **(files or {})}.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    commit_data(path, data, "initial", push=remote_url.startswith("/"))
    return path


def commit_data(path: Path, data: str, message: str, *, push: bool = True) -> str:
    (path / "data").mkdir(exist_ok=True)
    (path / "data" / "data.csv").write_text(data)
    dvc(path, "add", "--quiet", "data/data.csv")
    if push:
        dvc(path, "push", "--quiet")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", message)
    return git(path, "rev-parse", "HEAD")


def damaged_cache_objects(cache: Path) -> list[str]:
    """Objects of a DVC cache whose content no longer matches their name, or linked elsewhere."""
    bad = []
    for file in (cache / "files" / "md5").rglob("*"):
        if not file.is_file() or file.name.endswith(".dir"):
            continue
        digest = hashlib.md5(file.read_bytes()).hexdigest()
        if digest != file.parent.name + file.name or file.stat().st_nlink != 1:
            bad.append(str(file))
    return bad


# A two-stage pipeline: prepare filters the tracked data (and says how many rows it
# kept, in YAML), train writes metrics.json.
PIPELINE = """\
stages:
  prepare:
    cmd: python prepare.py
    deps: [prepare.py, data/data.csv]
    outs: [data/prepared.csv]
    metrics:
      - prepared.yaml:
          cache: false
  train:
    cmd: python train.py
    deps: [train.py, data/prepared.csv]
    metrics:
      - metrics.json:
          cache: false
"""
PREPARE = """\
rows = open("data/data.csv").read().splitlines()
open("data/prepared.csv", "w").write("\\n".join(rows) + "\\n")
open("prepared.yaml", "w").write(f"prepared:\\n  rows: {len(rows) - 1}\\n")
"""
PIPELINE_TRAIN = TRAIN.replace("data/data.csv", "data/prepared.csv")


class CountingSandbox:
    """The real sandbox, counting the commands it runs."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.commands: list[str] = []

    def run(self, spec: SandboxSpec, *, cancel: threading.Event | None = None) -> SandboxResult:
        self.commands.append(spec.command)
        return self.sandbox.run(spec, cancel=cancel)

    def start(self, spec: SandboxSpec) -> SandboxProcess:
        raise AssertionError("a fetch starts no long-running process")


def data_fetcher(settings: Settings) -> tuple[DataFetcher, CountingSandbox]:
    """A DataFetcher as an evaluation builds it, and the sandbox it runs DVC in."""
    sandbox = CountingSandbox(make_sandbox())
    environments = EnvironmentManager(
        envs_dir=settings.envs_dir, python=settings.python, uv_bin=uv.find_uv_bin()
    )
    fetcher = DataFetcher(
        sandbox=sandbox,
        environments=environments,
        cache_root=settings.dvc_cache_dir,
        remotes_file=settings.dvc_remotes_path,
    )
    return fetcher, sandbox


def fetch_clone(
    fetcher: DataFetcher, settings: Settings, repo: Path, workdir: Path
) -> FetchResult | None:
    """A fresh clone of repo at workdir, and its DVC data fetched into it (a slot held)."""
    git(repo.parent, "clone", "--quiet", str(repo), str(workdir))
    with acquire_slot(settings.slots_dir, settings.max_parallel_runs) as slot:
        return fetcher.fetch(
            workdir,
            repository=repo.name,
            cache_key=str(repo),
            slot=slot,
            log_path=settings.logs_dir / f"{workdir.name}.fetch.log",
        )


def import_url_repo(
    path: Path, source: Path, out: str, *, remote: Path | None, files: dict[str, str] | None = None
) -> Path:
    """A git repository whose ``out`` is `dvc import-url`ed from the local file ``source``
    (pushed to the local remote when given), with ``files`` beside it."""
    path.mkdir(parents=True)
    git(path, "init", "--quiet")
    dvc(path, "init", "--quiet")
    if remote is not None:
        dvc(path, "remote", "add", "-d", "storage", str(remote))
    (path / out).parent.mkdir(parents=True, exist_ok=True)
    dvc(path, "import-url", "--quiet", str(source), out)
    if remote is not None:
        dvc(path, "push", "--quiet")
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "import")
    return path
