"""The model repository's contract: ``modelci.yaml`` at the repository root.

A minimal file::

    train: python train.py
    metrics: metrics.json

Everything else has defaults. A repository without the file still works when
the command and the metrics file come from the command line or the server's
settings (the seed tutorial's layout: ``requirements.txt`` plus a script that
writes ``result.txt``). Errors name the line and field and say how to fix them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from modelci import safeyaml
from modelci.errors import ConfigError
from modelci.monitor.config import MonitoringConfig

__all__ = [
    "CONFIG_FILE",
    "MAX_REPEATS",
    "FloorConfig",
    "InstallConfig",
    "LimitsConfig",
    "MetricConfig",
    "ModelConfig",
    "Overrides",
    "PromotionConfig",
    "RepoConfig",
    "RetrainConfig",
    "RetrainMode",
    "ScoringConfig",
    "effective_config",
    "parse_config",
]

CONFIG_FILE = "modelci.yaml"
# libyaml's parser when PyYAML was built with it: several times faster than the pure one.
MAX_REPEATS = 20
_MAX_CONFIG_BYTES = 256 * 1024
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?)?\s*$", re.IGNORECASE)


def _parse_duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("use seconds (600) or a duration such as 90s, 10m or 1h")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _parse_megabytes(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError("use megabytes (2048) or a size such as 512MB or 4GB")
    number, unit = float(match.group(1)), (match.group(2) or "mb").lower()[:1]
    return int(number * {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstallConfig(_Strict):
    """Where the commit's dependencies come from (wheels only, installed with uv).

    With neither field set, modelci uses ``requirements.txt`` when the commit
    has one, else ``uv.lock`` when it has that, else installs nothing.
    """

    requirements: str | None = Field(
        default=None, description="A pip requirements file, e.g. requirements.txt"
    )
    uv_lock: bool = Field(
        default=False, description="Install the locked dependencies of pyproject.toml + uv.lock"
    )


class MetricConfig(_Strict):
    """How one metric is judged."""

    direction: Literal["higher", "lower"] | None = None
    tolerance: Annotated[float, Field(ge=0)] = 0.0
    gate: bool = True


class FloorConfig(_Strict):
    """An absolute bound a metric must meet to be promoted, whatever the champion's value."""

    min: float | None = None
    max: float | None = None


class PromotionConfig(_Strict):
    """When a trained version of the default branch becomes the champion."""

    gates: dict[str, MetricConfig] = Field(
        default_factory=dict,
        description="Direction and tolerance against the champion; the top-level gates when empty",
    )
    floors: dict[str, FloorConfig] = Field(default_factory=dict)

    @field_validator("gates", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _gate_shorthand(value)


class ModelConfig(_Strict):
    """Where the trained model is and what it takes as input."""

    name: str | None = Field(
        default=None, description="Registered model name; derived from the repository's name"
    )
    artifact: str | None = Field(
        default=None, description="The pickle/joblib file the training writes, e.g. model.pkl"
    )
    loader: Literal["pickle", "joblib", "cloudpickle"] | None = Field(
        default=None, description="How the artifact was written; guessed from its suffix"
    )
    interface: str | None = Field(
        default=None,
        description="module:Class (or module) with train/evaluate/predict/info methods",
    )
    mlflow: bool = Field(
        default=False, description="The training logs an MLflow model itself (log_model)"
    )
    training_data: str | None = Field(
        default=None, description="CSV of training rows: input columns and categories"
    )
    test_data: str | None = Field(
        default=None, description="CSV the interface's evaluate() gets; training_data if unset"
    )
    target: str | None = Field(default=None, description="The label column of training_data")
    input_example: str | None = Field(
        default=None, description="JSON file of input records (a list of objects)"
    )
    method: str = Field(default="predict", description="The model method that serving calls")

    @field_validator("artifact", "training_data", "test_data", "input_example")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return _relative_path(value)

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", value):
            raise ValueError("use module:Class or module, e.g. main:Model")
        return value

    @property
    def source(self) -> Literal["artifact", "mlflow", "interface"] | None:
        """Which of the three ways the repository hands its model over."""
        if self.interface:
            return "interface"
        if self.mlflow:
            return "mlflow"
        if self.artifact:
            return "artifact"
        return None

    def artifact_loader(self) -> str:
        if self.loader:
            return self.loader
        suffix = (self.artifact or "").rsplit(".", 1)[-1].lower()
        return "joblib" if suffix in ("joblib", "jbl", "z", "gz", "xz", "bz2", "lzma") else "pickle"


def _relative_path(value: str | None) -> str | None:
    if value is not None and (value.startswith("/") or ".." in value.split("/")):
        raise ValueError("must be a path inside the repository, relative to its root")
    return value


def _gate_shorthand(value: Any) -> Any:
    # `accuracy: higher` is accepted as a shorthand for {direction: higher}.
    if isinstance(value, dict):
        return {k: {"direction": v} if isinstance(v, str) else v for k, v in value.items()}
    return value


# What the four-method interface's driver writes in the work dir.
INTERFACE_METRICS = ".modelci/metrics.json"
INTERFACE_ARTIFACT = ".modelci/model.pkl"
INTERFACE_INFO = ".modelci/info.json"
INTERFACE_MODULE = "modelci_interface.py"
# Pickled around the trained value, so serving calls the repository's predict(model,
# features) through an ordinary .predict(features); it lives beside the repository's
# code in the model directory.
INTERFACE_ADAPTER = """\
import importlib


class InterfaceModel:
    def __init__(self, spec, trained):
        self.spec, self.trained = spec, trained

    def __getstate__(self):
        return {"spec": self.spec, "trained": self.trained}

    def __setstate__(self, state):
        self.spec, self.trained = state["spec"], state["trained"]

    def implementation(self):
        impl = self.__dict__.get("_impl")
        if impl is None:
            module, _, name = self.spec.partition(":")
            impl = importlib.import_module(module)
            impl = getattr(impl, name) if name else impl
            impl = impl() if isinstance(impl, type) else impl
            self.__dict__["_impl"] = impl
        return impl

    def predict(self, features):
        return self.implementation().predict(self.trained, features)
"""
# Runs inside the sandbox, in the work dir: train, evaluate, info, then pickle.
_INTERFACE_DRIVER = """\
import json, os, pickle, sys
spec, train_path, test_path, metrics_path, adapter = sys.argv[1:6]
os.makedirs(".modelci", exist_ok=True)
with open(".modelci/modelci_interface.py", "w") as f:
    f.write(adapter)
sys.path.insert(0, ".modelci")
from modelci_interface import InterfaceModel
def load(path):
    if not path:
        return None
    try:
        import pandas
    except ImportError:
        import csv
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    return pandas.read_csv(path)
impl = InterfaceModel(spec, None).implementation()
trained = impl.train(load(train_path))
metrics = impl.evaluate(trained, load(test_path or train_path))
with open(metrics_path, "w") as f:
    json.dump(metrics, f, default=float)
with open(".modelci/info.json", "w") as f:
    json.dump(impl.info() if hasattr(impl, "info") else {}, f, default=str)
with open(".modelci/model.pkl", "wb") as f:
    pickle.dump(InterfaceModel(spec, trained), f)
"""


def interface_command(model: ModelConfig, metrics: str) -> str:
    """A shell command running the four-method interface: train, evaluate, info, pickle."""
    args = [model.interface or "", model.training_data or "", model.test_data or "", metrics]
    return shlex.join(["python", "-c", _INTERFACE_DRIVER, *args, INTERFACE_ADAPTER])


class LimitsConfig(_Strict):
    """Resources the repository's code may use in one run."""

    timeout: Annotated[float, Field(gt=0, le=24 * 3600)] = 1800
    memory_mb: Annotated[int, Field(ge=64)] = 4096
    processes: Annotated[int, Field(ge=8, le=65536)] = 256
    disk_mb: Annotated[int, Field(ge=16)] = 4096
    # Routes the run to workers started with `--queue gpu`, which bind the
    # machine's GPU devices (MODELCI_GPU_DEVICES) into the sandbox.
    gpu: bool = False

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float:
        return _parse_duration(value)

    @field_validator("memory_mb", "disk_mb", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return _parse_megabytes(value)


_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ScoringConfig(_Strict):
    """Metrics modelci computes itself: the trained model's predictions on a dataset.

    The dataset is a CSV or Parquet file in the repository (``file``, read from
    git at the base commit, so a pull request cannot swap the rows it is judged
    on) or one the server holds (``dataset``, added with ``modelci datasets
    add``), by name. Only the feature columns reach the model's sandbox.
    """

    file: str | None = Field(
        default=None, description="A CSV or Parquet file in the repository, e.g. data/holdout.csv"
    )
    dataset: str | None = Field(
        default=None, description="The name of a dataset held by the server (modelci datasets)"
    )
    target: str = Field(description="The label column; never sent to the model")
    metrics: list[str] = Field(min_length=1, description="Metrics to compute, e.g. [accuracy]")

    @field_validator("file")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return _relative_path(value)

    @field_validator("dataset")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _DATASET_NAME.match(value):
            raise ValueError(
                "a dataset name is letters, digits, '_', '.' and '-' (up to 64), "
                "as given to `modelci datasets add`"
            )
        return value

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from modelci.evaluate.bootstrap import KNOWN_METRICS, metric_kind

        unknown = [name for name in value if metric_kind(name) is None]
        if unknown:
            raise ValueError(
                f"modelci cannot compute {', '.join(map(repr, unknown))}; "
                f"use metrics it knows: {', '.join(KNOWN_METRICS)}"
            )
        if len(set(value)) != len(value):
            raise ValueError("a metric is listed twice")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ScoringConfig:
        if (self.file is None) == (self.dataset is None):
            raise ValueError(
                "name exactly one dataset: file: (a file in the repository) or "
                "dataset: (a dataset held by the server)"
            )
        return self


def _valid_cron(value: str | None) -> str | None:
    # croniter loads only when a schedule is read, not with every modelci.yaml.
    from modelci.retrain.schedule import check_cron

    return None if value is None else check_cron(value)


def _valid_zone(value: str) -> str:
    from modelci.retrain.schedule import check_timezone

    check_timezone(value)
    return value


# What a retrain does with a better model: promote it, or propose the refreshed data.
RetrainMode = Literal["promote", "pull-request"]
# A retrain schedule as modelci.yaml and the server's API take it.
CronSchedule = Annotated[str | None, AfterValidator(_valid_cron)]
TimeZoneName = Annotated[str, AfterValidator(_valid_zone)]


class RetrainConfig(_Strict):
    """Continuous training: when the default branch is retrained, and what a retrain does.

    Read from the default branch's ``modelci.yaml`` (on every delivered push to it
    and when the server starts); a schedule set on the server wins over it.
    """

    schedule: CronSchedule = Field(
        default=None, description='A five-field cron schedule, e.g. "0 3 * * 1" (Mondays 03:00)'
    )
    timezone: TimeZoneName = Field(default="UTC", description="The IANA time zone of the schedule")
    mode: RetrainMode = Field(
        default="promote",
        description="promote: a better model becomes the champion at once. pull-request: "
        "nothing trains; the DVC import pointers whose source changed are committed to the "
        "branch modelci/retrain-data and proposed in a pull request 'Retrain: data refreshed' "
        "(evaluated like any other; merging delivers it). Needs the server's GitHub App with "
        "Contents: write and Pull requests: write",
    )


class RepoConfig(_Strict):
    """The parsed ``modelci.yaml``."""

    version: Literal[1] = 1
    install: InstallConfig = InstallConfig()
    train: str | list[str] = Field(description="Command(s) that train the model")
    evaluate: str | list[str] | None = Field(
        default=None, description="Command(s) run after training that write the metrics"
    )
    metrics: str | list[str] = Field(
        description="Metrics file (JSON, or YAML by its suffix) relative to the repository "
        "root, or a list of them, merged"
    )
    predictions: str | None = Field(
        default=None,
        description="Optional JSON file with per-example y_true/y_pred(/scores) on the "
        "evaluation rows, used for confidence intervals",
    )
    gates: dict[str, MetricConfig] = Field(default_factory=dict)
    default_gate: bool = Field(
        default=True,
        description="Gate metrics not listed under gates whose direction modelci knows",
    )
    limits: LimitsConfig = LimitsConfig()
    model: ModelConfig = ModelConfig()
    scoring: ScoringConfig | None = Field(
        default=None, description="Metrics modelci computes itself with the trained model"
    )
    promotion: PromotionConfig = PromotionConfig()
    retrain: RetrainConfig = Field(
        default_factory=RetrainConfig, description="Scheduled retraining of the default branch"
    )
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig,
        description="Drift of the served champion's data against its training reference",
    )
    repeats: int | Literal["auto"] = Field(
        default="auto",
        description="Trainings per commit with seeds 0..N-1 (MODELCI_SEED), or auto: "
        "repeat only when two trainings of the base with different seeds differ",
    )

    @field_validator("repeats", mode="before")
    @classmethod
    def _repeats(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPEATS:
            raise ValueError(
                f"use a whole number of trainings per commit from 1 to {MAX_REPEATS} "
                "(1: the training is deterministic), or auto (the default), not "
                f"{value!r}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _interface_defaults(cls, data: Any) -> Any:
        # The four-method interface brings its own training command and metrics file.
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and model.get("interface") and "train" not in data:
            data = {**data, "train": []}
            data.setdefault("metrics", INTERFACE_METRICS)
        return data

    @field_validator("predictions")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return _relative_path(value)

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics_shape(cls, value: Any) -> Any:
        # One message for both shapes, not pydantic's one per member of the union.
        if isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            return value
        raise ValueError(
            f"give a metrics file (metrics: metrics.json) or a list of them, not {value!r}"
        )

    @field_validator("metrics")
    @classmethod
    def _metrics_files(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("name at least one metrics file")
            return list(dict.fromkeys(_relative_path(path) or "" for path in value))
        return _relative_path(value) or ""

    def metrics_files(self) -> tuple[str, ...]:
        """The metrics files, in the order their metrics are merged."""
        return (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)

    @model_validator(mode="after")
    def _scoring_needs_model(self) -> RepoConfig:
        if self.scoring is not None and self.model.source is None:
            raise ValueError(
                "scoring: needs the trained model: add a model: section "
                "(artifact: model.pkl, mlflow: true, or interface: main:Model)"
            )
        return self

    @field_validator("gates", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _gate_shorthand(value)

    def promotion_gates(self) -> dict[str, MetricConfig]:
        """The gates against the champion: promotion.gates, else the top-level gates."""
        return dict(self.promotion.gates or self.gates)

    def commands(self) -> list[str]:
        out: list[str] = []
        if self.model.interface:
            out.append(interface_command(self.model, self.metrics_files()[0]))
        for part in (self.train, self.evaluate):
            if part is None:
                continue
            out.extend([part] if isinstance(part, str) else part)
        return out

    def digest(self) -> str:
        """A stable hash of everything that changes a run's result."""
        # repeats changes how many runs there are, not what one run with a given seed gives;
        # retrain says when the default branch is retrained and monitoring how the served
        # model is watched, not what a run does (and leaving them out keeps the digests,
        # and so the reusable runs, of older configs).
        canonical = json.dumps(
            self.model_dump(mode="json", exclude={"repeats", "retrain", "monitoring"}),
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Overrides:
    """Settings from the command line or the server for repositories without a config."""

    command: str | None = None
    metrics_file: str | None = None
    predictions_file: str | None = None
    timeout_s: float | None = None
    # The server's MODELCI_DEFAULT_*: unlike the flags above, used only by a commit
    # without modelci.yaml, never over a repository's own configuration.
    default_command: str | None = None
    default_metrics_file: str | None = None

    def stand_in(self) -> tuple[str | None, str | None]:
        """The command and metrics file a commit without modelci.yaml runs with."""
        return (
            self.command or self.default_command,
            self.metrics_file or self.default_metrics_file,
        )


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    node = root
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
            if not match:
                return node.start_mark.line + 1
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
    return node.start_mark.line + 1 if node is not None else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _explain(err: dict[str, Any], root: yaml.Node | None, source: str) -> str:
    loc = tuple(err["loc"])
    # pydantic appends the union member tried ("str"/"list[str]"); drop it for the user.
    loc = tuple(p for p in loc if p not in ("str", "list[str]", "function-after[_relative(), str]"))
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    line = _line_of(root, loc)
    where = f"{source}, line {line}" if line else source
    if err["type"] == "extra_forbidden":
        parent: type[BaseModel] = RepoConfig
        sub: dict[str, type[BaseModel]] = {
            "install": InstallConfig,
            "limits": LimitsConfig,
            "model": ModelConfig,
            "promotion": PromotionConfig,
            "retrain": RetrainConfig,
            "scoring": ScoringConfig,
            "monitoring": MonitoringConfig,
        }
        if len(loc) >= 2 and loc[0] in sub:
            parent = sub[str(loc[0])]
        if len(loc) >= 4 and loc[:2] == ("monitoring", "columns"):
            from modelci.monitor.settings import ColumnOverride

            parent = ColumnOverride
        if (len(loc) >= 2 and loc[0] == "gates") or loc[:2] == ("promotion", "gates"):
            parent = MetricConfig
        elif len(loc) >= 4 and loc[:2] == ("promotion", "floors"):
            parent = FloorConfig
        guess = difflib.get_close_matches(str(loc[-1]), _field_names(parent), n=1)
        fix = (
            f"did you mean '{guess[0]}'?"
            if guess
            else ("allowed: " + ", ".join(_field_names(parent)))
        )
        return f"{where}: unknown field '{dotted}'; {fix}"
    if err["type"] == "missing":
        return f"{where}: required field '{dotted}' is missing"
    return f"{where}: field '{dotted}': {err['msg']}"


def parse_config(text: str | bytes, *, source: str = CONFIG_FILE) -> RepoConfig:
    """Parse and validate a ``modelci.yaml``; every problem is reported with its line."""
    if len(text) > _MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source} is {len(text)} bytes, more than the {_MAX_CONFIG_BYTES} allowed",
            hint="keep modelci.yaml small: it names commands and files, not data",
        )
    try:
        data = safeyaml.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{source}{line}: not valid YAML ({problem})",
            hint="fix the YAML syntax at that line (indentation, an unclosed bracket or quote)",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of settings, found {type(data).__name__}",
            hint="start from the example: `train: python train.py` and `metrics: metrics.json`",
        )
    try:
        return RepoConfig.model_validate(data)
    except ValidationError as exc:
        # The nodes, with their line numbers, only for the message: composing costs
        # as much as loading, and every run of an evaluation parses its config.
        root = yaml.compose(text, Loader=safeyaml.loader)
        problems = [_explain(dict(e), root, source) for e in exc.errors()]
        raise ConfigError(
            "invalid configuration:\n  " + "\n  ".join(problems),
            hint="see 'Writing modelci.yaml' in the README for every field and its meaning",
        ) from None


def effective_config(config_text: bytes | None, overrides: Overrides) -> RepoConfig:
    """The configuration a run uses: the repository's file, else the overrides.

    Overrides from the command line win over the file, so a user can try a
    different command without committing it.
    """
    base = parse_config(config_text) if config_text is not None else None
    command = overrides.command
    if base is None:
        stand_in_command, stand_in_metrics = overrides.stand_in()
        if not stand_in_command or not stand_in_metrics:
            missing = [
                name
                for name, value in (
                    ("--command", stand_in_command),
                    ("--metrics-file", stand_in_metrics),
                )
                if not value
            ]
            raise ConfigError(
                f"the repository has no {CONFIG_FILE} and no {' or '.join(missing)} was given",
                hint=f"add a {CONFIG_FILE} (see the README), or pass --command 'python train.py' "
                "--metrics-file result.txt (server: MODELCI_DEFAULT_COMMAND and "
                "MODELCI_DEFAULT_METRICS_FILE)",
            )
        base = RepoConfig(train=stand_in_command, metrics=stand_in_metrics)
    updates: dict[str, Any] = {}
    if command:
        updates.update(train=command, evaluate=None)
    if overrides.metrics_file:
        updates["metrics"] = overrides.metrics_file
    if overrides.predictions_file:
        updates["predictions"] = overrides.predictions_file
    if overrides.timeout_s:
        updates["limits"] = base.limits.model_copy(update={"timeout": overrides.timeout_s})
    return base.model_copy(update=updates) if updates else base
