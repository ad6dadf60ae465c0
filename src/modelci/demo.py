"""The sample model repository behind ``modelci demo``.

Builds a real git repository from ``examples/sklearn-classifier``: a base
commit on ``main`` and a pull-request branch that changes a hyper-parameter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from modelci.errors import ModelCIError

__all__ = ["DemoRepository", "create_demo_repository", "example_dir"]

EXAMPLE = "sklearn-classifier"
BRANCH = "tune-forest"
# The pull request's change: a larger, deeper forest.
TUNED_PARAMS = {"n_estimators": 200, "max_depth": 8, "random_state": 0}


@dataclass(frozen=True)
class DemoRepository:
    path: Path
    base: str
    head: str


def example_dir(name: str = EXAMPLE) -> Path:
    """The shipped example, from an installed wheel or a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples" / name, here.parents[1] / "examples" / name):
        if (candidate / "modelci.yaml").exists():
            return candidate
    raise ModelCIError(
        f"the example repository {name} is not installed",
        hint="reinstall modelci (pip install modelci) from a complete source",
    )


def _git(path: Path, *args: str) -> None:
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=modelci demo",
            "-c",
            "user.email=demo@modelci.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=path,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )


def create_demo_repository(path: Path) -> DemoRepository:
    """A fresh git repository at ``path`` with ``main`` and a PR branch."""
    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(
        example_dir(),
        path,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "metrics.json", "predictions.json"),
    )
    _git(path, "init", "--quiet")
    _git(path, "add", "--all")
    _git(path, "commit", "--quiet", "-m", "Random forest baseline")
    _git(path, "checkout", "--quiet", "-b", BRANCH)
    (path / "params.json").write_text(json.dumps(TUNED_PARAMS, indent=2) + "\n")
    _git(path, "commit", "--quiet", "--all", "-m", "Tune the forest: more and deeper trees")
    _git(path, "checkout", "--quiet", "main")
    return DemoRepository(path=path, base="main", head=BRANCH)
