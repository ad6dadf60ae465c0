"""The trained model, collected out of a sandbox work dir into an MLflow model directory.

The repository's code wrote the work dir, so everything is read with the
link-refusing readers of ``outputs`` and nothing is unpickled here: a pickle
or joblib artifact is copied as it is (with the repository's ``*.py`` beside
it, for pickled classes), a model the training logged to MLflow itself is
taken from the file store it wrote inside its work dir, and the four-method
interface's adapter pickle is taken from where modelci's driver put it. The
input columns, their categorical values and an input example come from the
config's training data or input example, never from the model object.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import yaml

from modelci import safeyaml
from modelci.deliver.modelspec import Column, ServingSpec
from modelci.errors import ConfigError
from modelci.evaluate.evaluation import TrainedCommit
from modelci.runner.config import (
    INTERFACE_ADAPTER,
    INTERFACE_ARTIFACT,
    INTERFACE_INFO,
    INTERFACE_MODULE,
    RepoConfig,
)
from modelci.runner.outputs import (
    copy_output_file,
    copy_output_tree,
    read_json_output,
    read_output_bytes,
)

__all__ = ["collect_model", "mlflow_env"]

_MAX_ARTIFACT_BYTES = 2 * 1024**3
_MAX_CODE_BYTES = 50 * 1024**2
_MAX_DATA_BYTES = 200 * 1024**2
_MAX_CATEGORIES = 1000
_EXAMPLE_ROWS = 5
_MLRUNS = ".modelci/mlruns"
_PANDAS_TYPES = {"i": "long", "u": "long", "f": "double", "b": "boolean", "M": "datetime"}


def mlflow_env(workdir: Path) -> dict[str, str]:
    # The repository's MLflow calls go to a file store in its own work dir:
    # its code never talks to the real tracking server.
    # MLflow 3 refuses file stores unless told: this one only carries the run out.
    return {"MLFLOW_TRACKING_URI": f"file://{workdir}/{_MLRUNS}", "MLFLOW_ALLOW_FILE_STORE": "true"}


def collect_model(trained: TrainedCommit, dest: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Copy the model out of the work dir into dest as an MLflow model directory."""
    from modelci.deliver.tracking import build_model_dir, read_mlflow_run

    config, workdir = trained.config, trained.workdir
    model = config.model
    source = model.source
    if source is None:
        raise ConfigError(
            "modelci.yaml says nothing about the trained model",
            hint="add a model: section with artifact: model.pkl (the file the training "
            "writes), mlflow: true, or interface: main:Model",
        )
    params: dict[str, Any] = {
        "modelci.source": source,
        "modelci.config": config.digest()[:16],
    }
    tags: dict[str, str] = {"modelci.source": source}
    requirements = trained.resolved_requirements()
    columns, example = _signature(workdir, config)
    dest.mkdir(parents=True)
    if source == "mlflow":
        store = dest.parent / "mlruns"
        copy_output_tree(workdir, _MLRUNS, store, max_bytes=_MAX_ARTIFACT_BYTES)
        run = read_mlflow_run(store)
        params.update(run["params"])
        trained.side.metrics = {**run["metrics"], **trained.side.metrics}
        tags["modelci.imported_run"] = str(run["run_id"])
        shutil.copytree(run["model_dir"], dest, dirs_exist_ok=True)
        loader, artifact, logged = _logged_sklearn(dest)
        columns = columns or logged
        spec = ServingSpec(
            loader=loader,
            artifact=artifact,
            columns=columns,
            input_example=example,
            method=model.method,
            requirements=requirements,
        )
        spec.write(dest)
        return params, tags
    if source == "interface":
        artifact_path, loader = INTERFACE_ARTIFACT, "pickle"
        info = read_json_output(workdir, INTERFACE_INFO, max_bytes=1_000_000)
        if isinstance(info, dict):
            tags.update({f"modelci.info.{k}"[:250]: str(v)[:5000] for k, v in info.items()})
    else:
        artifact_path, loader = model.artifact or "", model.artifact_loader()
    code = dest / "code"
    copy_output_tree(
        workdir, ".", code, max_bytes=_MAX_CODE_BYTES, suffixes=(".py",), skip_unusual=True
    )
    shutil.rmtree(code / ".modelci", ignore_errors=True)
    if source == "interface":
        (code / INTERFACE_MODULE).write_text(INTERFACE_ADAPTER)
    (dest / "artifacts").mkdir()
    target = f"artifacts/{Path(artifact_path).name}"
    copy_output_file(workdir, artifact_path, dest / target, max_bytes=_MAX_ARTIFACT_BYTES)
    if not columns:
        raise ConfigError(
            "modelci cannot tell the model's input columns",
            hint="set model.training_data (a CSV, with model.target) or model.input_example "
            "(a JSON list of records) in modelci.yaml",
        )
    spec = ServingSpec(
        loader=loader,
        artifact=target,
        columns=columns,
        input_example=example,
        method=model.method,
        code_paths=("code",),
        requirements=requirements,
    )
    build_model_dir(dest, spec=spec)
    return params, tags


def _logged_sklearn(model_dir: Path) -> tuple[str, str, tuple[Column, ...]]:
    """Loader, artifact and signature columns of an MLflow model the repository logged."""
    hint = (
        "log the model with mlflow.sklearn.log_model(model, name='model', "
        "serialization_format='cloudpickle'): serving loads it without mlflow"
    )
    try:
        mlmodel = safeyaml.load((model_dir / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(
            "the logged MLflow model's MLmodel file is unreadable", hint=hint
        ) from None
    sklearn = (mlmodel.get("flavors") or {}).get("sklearn") or {}
    loader = sklearn.get("serialization_format")
    artifact = sklearn.get("pickled_model")
    if loader not in ("pickle", "cloudpickle") or not isinstance(artifact, str):
        raise ConfigError(
            "the logged MLflow model is not a pickled scikit-learn model "
            f"(serialization format: {loader or 'none'})",
            hint=hint,
        )
    # The repository wrote MLmodel: its artifact path must stay inside the model.
    inside = model_dir.resolve()
    path = (model_dir / artifact).resolve()
    if artifact.startswith("/") or not path.is_relative_to(inside) or not path.is_file():
        raise ConfigError(
            f"the logged model names {artifact!r}, which is not a file inside the model",
            hint=hint,
        )
    columns: list[Column] = []
    inputs = (mlmodel.get("signature") or {}).get("inputs")
    if isinstance(inputs, str):
        import json

        for item in json.loads(inputs):
            if isinstance(item, dict) and item.get("name") and item.get("type"):
                required = bool(item.get("required", True))
                columns.append(Column(str(item["name"]), str(item["type"]), required))
    return loader, artifact, tuple(columns)


def _signature(
    workdir: Path, config: RepoConfig
) -> tuple[tuple[Column, ...], list[dict[str, Any]]]:
    """Input columns (with categories) and an input example, from the config's files.

    Parsed here, in the trusted process: CSV and JSON parsing run no code.
    """
    model = config.model
    example: list[dict[str, Any]] = []
    columns: list[Column] = []
    if model.input_example:
        data = read_json_output(workdir, model.input_example, max_bytes=_MAX_DATA_BYTES)
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data) or not data:
            raise ConfigError(
                f"{model.input_example} is not a list of records",
                hint='write a JSON list of objects, e.g. [{"age": 31, "city": "Lima"}]',
            )
        example = data[:_EXAMPLE_ROWS]
    if model.training_data:
        import pandas  # type: ignore[import-untyped]

        raw = read_output_bytes(workdir, model.training_data, max_bytes=_MAX_DATA_BYTES)
        try:
            frame = pandas.read_csv(io.BytesIO(raw))
        except (ValueError, pandas.errors.ParserError) as exc:
            raise ConfigError(
                f"{model.training_data} is not a readable CSV file: {exc}",
                hint="point model.training_data at a CSV file with a header row",
            ) from None
        if model.target:
            if model.target not in frame.columns:
                raise ConfigError(
                    f"model.target {model.target!r} is not a column of {model.training_data}",
                    hint="columns: " + ", ".join(map(str, frame.columns[:30])),
                )
            frame = frame.drop(columns=[model.target])
        for name in frame.columns:
            series = frame[name]
            kind = _PANDAS_TYPES.get(series.dtype.kind, "string")
            categories = None
            if kind == "string":
                values = sorted({str(v) for v in series.dropna().unique()})
                categories = tuple(values) if len(values) <= _MAX_CATEGORIES else None
            required = not bool(series.isna().any())
            columns.append(Column(str(name), kind, required, categories))
        if not example:
            head = frame.head(_EXAMPLE_ROWS).astype(object).where(frame.head(_EXAMPLE_ROWS).notna())
            example = [
                {str(k): _plain(v) for k, v in row.items()} for row in head.to_dict("records")
            ]
    elif example:
        columns = [Column(str(k), _json_type(v)) for k, v in example[0].items()]
    return tuple(columns), example


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars to Python ones
    value = item() if callable(item) else value
    return None if value != value else value  # NaN → None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return "string"
