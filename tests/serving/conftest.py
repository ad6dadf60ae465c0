"""Fixtures for serving: real scikit-learn models on disk, a fake registry over
directories, a launcher on the real sandbox with a real uv-built environment."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
import uv
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from modelci.deliver.modelspec import Column, ModelVersion, ServingSpec
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import BubblewrapSandbox
from modelci.serving.launcher import Launcher
from modelci.settings import machine_lock_dir

UID_BASE = 60900  # clear of the server's and the sandbox tests' uids
# Persisted between runs: building the environment costs ~15 s the first time.
ENVS_DIR = Path("/var/tmp/modelci-test-serving-envs")
REQUIREMENTS = (
    f"scikit-learn=={sklearn.__version__}",
    f"numpy=={np.__version__}",
    f"pandas=={pd.__version__}",
    f"joblib=={joblib.__version__}",
)


def skip_reason() -> str | None:
    if shutil.which("bwrap") is None:
        return "needs bubblewrap (apt-get install bubblewrap)"
    if os.geteuid() != 0:
        return "needs root: the sandbox drops to per-slot uids with setpriv"
    return None


sandboxed = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture(scope="session")
def base_dir() -> Iterator[Path]:
    # Not pytest's tmp_path (0700 under /tmp/pytest-of-root): the sandbox's
    # uids must traverse down to the work dirs.
    path = Path(tempfile.mkdtemp(prefix="modelci-serving-test-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def launcher(base_dir: Path) -> Launcher:
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    ENVS_DIR.chmod(0o755)
    environments = EnvironmentManager(
        envs_dir=ENVS_DIR, python="/usr/bin/python3", uv_bin=uv.find_uv_bin()
    )
    return Launcher(
        sandbox=BubblewrapSandbox(uid_base=UID_BASE),
        environments=environments,
        serving_dir=base_dir / "serving",
        logs_dir=base_dir / "logs",
        slots_dir=machine_lock_dir(f"modelci-slots-{UID_BASE}"),
        start_timeout_s=120,
        request_timeout_s=30,
        max_workers=16,
    )


NUMERIC = [f"x{i}" for i in range(4)]


def numeric_model(model_dir: Path, *, flip: bool = False, loader: str = "joblib") -> ServingSpec:
    """A LogisticRegression on four numbers; flip inverts its labels (a 'new' version)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(x, 1 - y if flip else y)
    model_dir.mkdir(parents=True, exist_ok=True)
    if loader == "joblib":
        joblib.dump(model, model_dir / "model.joblib")
    else:
        (model_dir / "model.joblib").write_bytes(pickle.dumps(model))
    spec = ServingSpec(
        loader=loader,
        artifact="model.joblib",
        columns=tuple(Column(name, "double") for name in NUMERIC),
        input_example=[{name: float(v) for name, v in zip(NUMERIC, x[0], strict=True)}],
        requirements=REQUIREMENTS,
    )
    spec.write(model_dir)
    return spec


def categorical_model(model_dir: Path) -> ServingSpec:
    """A Pipeline (OneHotEncoder on a string column + a number) fitted on a DataFrame."""
    frame = pd.DataFrame(
        {
            "colour": ["red", "blue", "green", "red", "blue", "green"] * 20,
            "size": np.linspace(0, 10, 120),
        }
    )
    y = (frame["colour"] == "red").astype(int)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("onehot", OneHotEncoder(handle_unknown="ignore"), ["colour"])],
                    remainder="passthrough",
                ),
            ),
            ("lr", LogisticRegression()),
        ]
    ).fit(frame, y)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    spec = ServingSpec(
        loader="joblib",
        artifact="model.joblib",
        columns=(
            Column("colour", "string", categories=("blue", "green", "red")),
            Column("size", "double"),
        ),
        input_example=[{"colour": "red", "size": 1.0}],
        requirements=REQUIREMENTS,
    )
    spec.write(model_dir)
    return spec


class FakeRegistry:
    """The ModelRegistry protocol over directories; tests move the champion."""

    def __init__(self) -> None:
        self.versions: dict[str, dict[int, ModelVersion]] = {}
        self.champions: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, version: int, model_dir: Path, **extra: Any) -> ModelVersion:
        entry = ModelVersion(
            name=name,
            version=version,
            model_dir=model_dir,
            sha=f"{version:040x}",
            metrics={"accuracy": 0.9},
            trained_at=dt.datetime(2026, 11, 22, tzinfo=dt.UTC),
            **extra,
        )
        with self._lock:
            self.versions.setdefault(name, {})[version] = entry
        return entry

    def promote(self, name: str, version: int) -> None:
        with self._lock:
            self.champions[name] = version

    def model_names(self) -> list[str]:
        with self._lock:
            return list(self.versions)

    def champion(self, name: str) -> ModelVersion | None:
        with self._lock:
            version = self.champions.get(name)
            if version is None:
                return None
            return replace(self.versions[name][version], aliases=("champion",))
