"""What a served model is: the contract between delivery (which writes it) and serving.

Delivery (``tracking.py``, the only module that imports mlflow) stores every
registered model version as an MLflow model directory and writes a
``modelci-serving.json`` file (a :class:`ServingSpec`) beside its ``MLmodel``
file. Serving reads only that file and the artifact it names: it never imports
mlflow, and it never unpickles anything itself (unpickling runs code, so the
artifact is loaded only inside a sandboxed model worker).

A :class:`ModelRegistry` tells serving which version is each model's champion;
the real one sits on MLflow's registry, tests use a fake over plain directories.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DATA_VERSION_TAG",
    "DELIVERY_KEY_TAG",
    "SERVING_SPEC_FILE",
    "TRIGGER_TAG",
    "Column",
    "ModelRegistry",
    "ModelVersion",
    "ServingSpec",
    "parse_data_version",
]

SERVING_SPEC_FILE = "modelci-serving.json"
# MLflow tags of a registered version: what triggered its training (merge, schedule,
# manual, data, drift) and the data version (JSON: DVC output path -> md5).
TRIGGER_TAG = "modelci.trigger"
DATA_VERSION_TAG = "modelci.data_version"
# (commit, environment, configuration) a version was trained for: see Registry.find_delivered.
DELIVERY_KEY_TAG = "modelci.delivery_key"
# MLflow's column types (mlflow.types.DataType), which signatures use.
COLUMN_TYPES = frozenset(
    {"double", "float", "long", "integer", "boolean", "string", "binary", "datetime"}
)
LOADERS = frozenset({"pickle", "joblib", "cloudpickle"})


def parse_data_version(value: str | None) -> dict[str, str] | None:
    """The DVC output path -> md5 mapping a data-version tag holds; None when there is
    no tag or it was cut short (``data.versions.data_version_tag`` writes it)."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else None


@dataclass(frozen=True)
class Column:
    """One input column, in the order the model expects them."""

    name: str
    type: str  # one of COLUMN_TYPES
    required: bool = True
    # Allowed values of a categorical column, taken from the training data;
    # None means any value of the type.
    categories: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ServingSpec:
    """How to load and call a model version; ``modelci-serving.json`` in its directory."""

    loader: str  # one of LOADERS: how the artifact was written
    artifact: str  # path of the pickled model, relative to the model directory
    columns: tuple[Column, ...]  # the input signature
    input_example: list[dict[str, Any]]  # records, used for the smoke test and the form
    method: str = "predict"  # the model's method that serving calls
    # Directories (relative to the model directory) put on sys.path before
    # loading, for models whose classes live in the repository's code.
    code_paths: tuple[str, ...] = ()
    # pip requirements of the environment the model worker runs in.
    requirements: tuple[str, ...] = ()
    output_name: str = "prediction"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServingSpec:
        columns = tuple(
            Column(
                name=str(c["name"]),
                type=str(c["type"]),
                required=bool(c.get("required", True)),
                categories=None if c.get("categories") is None else tuple(c["categories"]),
            )
            for c in data["columns"]
        )
        return cls(
            loader=str(data["loader"]),
            artifact=str(data["artifact"]),
            columns=columns,
            input_example=list(data.get("input_example") or []),
            method=str(data.get("method", "predict")),
            code_paths=tuple(data.get("code_paths") or ()),
            requirements=tuple(data.get("requirements") or ()),
            output_name=str(data.get("output_name", "prediction")),
        )

    def write(self, model_dir: Path) -> Path:
        path = model_dir / SERVING_SPEC_FILE
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    @classmethod
    def read(cls, model_dir: Path) -> ServingSpec:
        return cls.from_json(json.loads((model_dir / SERVING_SPEC_FILE).read_text()))


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version, as serving and the CLI see it."""

    name: str  # the registered model's name
    version: int
    model_dir: Path  # local MLflow model directory (MLmodel + modelci-serving.json)
    run_id: str | None = None  # the MLflow run
    sha: str | None = None  # the commit it was trained from
    repository: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    trained_at: dt.datetime | None = None
    aliases: tuple[str, ...] = ()
    # The run's and the version's MLflow tags (the version's win).
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def trigger(self) -> str:
        """What made it: merge (a delivery), or a retrain's schedule, manual, data, drift."""
        return self.tags.get(TRIGGER_TAG, "merge")

    @property
    def data_version(self) -> dict[str, str] | None:
        """DVC output path -> md5 it was trained on; None when not recorded."""
        return parse_data_version(self.tags.get(DATA_VERSION_TAG))


class ModelRegistry(Protocol):
    """Which models exist and which version of each is the champion."""

    def model_names(self) -> list[str]: ...

    def champion(self, name: str) -> ModelVersion | None: ...
