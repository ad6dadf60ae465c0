"""Scoring: a trained model's metrics, computed by modelci on a dataset.

The model directory (the one delivery builds: ``modelci-serving.json`` and the
artifact) is started in a sandboxed model worker, the same as serving's. The
dataset is read here, in modelci's process, and only the columns of the model's
signature are streamed to the worker, a batch at a time: the target column
never enters the sandbox, and no copy of the dataset is written where the
model's code runs. The predictions come back as JSON, and the metrics (and the
per-row predictions that the paired bootstrap resamples) are computed here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelci.deliver.modelspec import ModelVersion, ServingSpec
from modelci.errors import DatasetError, OutputError, PredictionFailed
from modelci.evaluate.bootstrap import SCORE_KINDS, PairedData, metric_kind, metric_value
from modelci.evaluate.compare import Predictions
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import make_sandbox
from modelci.scoring.tables import read_batches
from modelci.settings import Settings

if TYPE_CHECKING:
    from modelci.serving.launcher import Launcher

__all__ = ["Scored", "score_model", "score_version", "scoring_launcher"]

SCORES_METHOD = "predict_proba"


@dataclass(frozen=True)
class Scored:
    """The metrics modelci computed, and the rows they were computed on."""

    metrics: dict[str, float]
    predictions: Predictions
    dataset: str  # what was scored on, in words


def scoring_launcher(
    settings: Settings, environments: EnvironmentManager, *, unsafe: bool = False
) -> Launcher:
    """A launcher for scoring workers: serving's sandbox uids and slots, its own dir."""
    from modelci.serving.launcher import launcher_for

    return launcher_for(
        settings,
        "scoring",
        sandbox=make_sandbox(unsafe=unsafe, uid_base=settings.serving_uid_base),
        environments=environments,
        request_timeout_s=max(settings.serving_request_timeout_s, 120),
    )


def _array(values: list[Any], what: str) -> np.ndarray[Any, Any]:
    array = np.asarray(values)
    if array.dtype == object or array.ndim != 1:
        raise DatasetError(
            f"the model's {what} are not one number or label per row",
            hint="make the model's predict return a flat list or array, one value per row",
        )
    return array


def score_model(
    launcher: Launcher,
    model_dir: Path,
    metrics: Sequence[str],
    *,
    dataset: Path,
    dataset_label: str,
    target: str,
    batch_rows: int,
    max_rows: int,
    name: str = "scoring",
    version: int = 0,
) -> Scored:
    """Start the model's worker, stream the dataset's features to it, compute ``metrics``."""
    spec = ServingSpec.read(model_dir)
    if any(column.name == target for column in spec.columns):
        raise DatasetError(
            f"the model takes the target column '{target}' as an input: modelci never sends "
            "a sandboxed model the labels it is scored on",
            hint="set model.target in modelci.yaml so the label is not among the model's "
            "input columns",
        )
    kinds = {m: metric_kind(m) for m in metrics}
    wants_scores = any(kind in SCORE_KINDS for kind in kinds.values())
    y_true: list[Any] = []
    y_pred: list[Any] = []
    scores: list[Any] = []
    worker = launcher.start(_safe(name), version, model_dir, spec)
    try:
        batches = read_batches(
            dataset,
            spec.columns,
            target,
            batch_rows=batch_rows,
            max_rows=max_rows,
            name=dataset_label,
        )
        for batch in batches:
            columns = dict(batch.columns)
            for column in spec.columns:  # optional inputs the dataset lacks: empty
                columns.setdefault(column.name, [None] * batch.rows)
            y_pred.extend(worker.predict(columns, batch.rows))
            if wants_scores:
                try:
                    scores.extend(worker.predict(columns, batch.rows, method=SCORES_METHOD))
                except PredictionFailed as exc:
                    needs = [m for m, k in kinds.items() if k in SCORE_KINDS]
                    raise DatasetError(
                        f"{', '.join(needs)} need the model's class probabilities, and its "
                        f"{SCORES_METHOD} failed: {exc.message}",
                        hint=f"give the model a {SCORES_METHOD} method, or score with "
                        "accuracy, precision, recall or f1",
                    ) from None
            y_true.extend(batch.target)
    finally:
        worker.stop()
    truth, predicted = _array(y_true, "labels"), _array(y_pred, "predictions")
    probabilities = None
    if wants_scores:
        probabilities = np.asarray(scores, dtype=np.float64)
    predictions = Predictions(truth, predicted, probabilities)
    data = PairedData(truth, predicted, predicted, probabilities, probabilities)
    values: dict[str, float] = {}
    for metric, kind in kinds.items():
        assert kind is not None  # ScoringConfig accepts only metrics with a kind
        try:
            values[metric] = metric_value(kind, data, head=True)
        except (OutputError, ValueError) as exc:
            raise DatasetError(
                f"modelci cannot compute {metric} on {dataset_label}: {exc}",
                hint="score with metrics that fit the task (binary metrics need two classes)",
            ) from None
    return Scored(values, predictions, dataset_label)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "scoring"


def score_version(
    launcher: Launcher,
    version: ModelVersion,
    *,
    dataset: str,
    target: str,
    metrics: Sequence[str],
    settings: Settings,
) -> Scored:
    """Score a registered version on a held dataset (by name) or a CSV/Parquet file.

    ``metrics`` empty: the version's recorded metrics that modelci can compute."""
    from modelci.scoring.datasets import DatasetStore

    chosen = list(metrics) or [m for m in sorted(version.metrics) if metric_kind(m) is not None]
    unknown = [m for m in chosen if metric_kind(m) is None]
    if not chosen or unknown:
        from modelci.evaluate.bootstrap import KNOWN_METRICS

        what = (
            f"modelci cannot compute {', '.join(unknown)}"
            if unknown
            else (f"{version.name} v{version.version} records no metric modelci can compute")
        )
        raise DatasetError(what, hint=f"name them with --metric, from: {', '.join(KNOWN_METRICS)}")
    path = Path(dataset)
    if path.is_file():
        source, label = path, str(path)
    else:
        source, label = (
            DatasetStore(settings.datasets_dir).get(dataset).path,
            f"dataset '{dataset}'",
        )
    return score_model(
        launcher,
        version.model_dir,
        chosen,
        dataset=source,
        dataset_label=label,
        target=target,
        batch_rows=settings.scoring_batch_rows,
        max_rows=settings.scoring_max_rows,
        name=version.name,
        version=version.version,
    )
