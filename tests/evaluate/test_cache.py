"""Stored run outputs: written whole, and read back or refused, never a crash."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from modelci.errors import OutputError
from modelci.evaluate.cache import load_outputs, save_outputs
from modelci.evaluate.compare import Predictions


def test_round_trip_keeps_predictions_and_nan(tmp_path: Path) -> None:
    predictions = Predictions(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([0.1, 0.9, 0.4]))
    save_outputs(tmp_path / "7", {"accuracy": 0.5, "loss": float("nan")}, predictions)
    metrics, loaded, scored = load_outputs(tmp_path / "7")
    assert metrics["accuracy"] == 0.5 and math.isnan(metrics["loss"])
    assert loaded is not None and loaded.to_json() == predictions.to_json()
    assert scored is None
    assert sorted(p.name for p in (tmp_path / "7").iterdir()) == [
        "metrics.json",
        "predictions.json",
    ]  # no temporary files left


def test_without_predictions(tmp_path: Path) -> None:
    save_outputs(tmp_path, {"accuracy": 0.5}, None)
    assert load_outputs(tmp_path) == ({"accuracy": 0.5}, None, None)


def test_the_rows_modelci_scored_are_kept_beside_the_runs_own(tmp_path: Path) -> None:
    own = Predictions(np.array([0, 1, 1]), np.array([0, 1, 0]))
    scored = Predictions(
        np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), np.array([0.8, 0.4, 0.1, 0.2])
    )
    save_outputs(tmp_path, {"f1": 0.67, "accuracy": 0.75}, own, scored)
    stored = load_outputs(tmp_path)
    assert stored.predictions is not None and stored.predictions.to_json() == own.to_json()
    assert stored.scored is not None and stored.scored.to_json() == scored.to_json()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("predictions.json", "", "predictions.json is empty"),
        ("predictions.json", '{"y_true": [1, 0], "y_pr', "predictions.json is not valid JSON"),
        ("predictions.json", '{"y_true": [1]}', "predictions.json must be an object"),
        ("scored-predictions.json", "[1", "scored-predictions.json is not valid JSON"),
        ("metrics.json", "", "metrics.json is empty"),
        ("metrics.json", "[]", "metrics.json holds no metrics"),
        ("metrics.json", '{"accuracy": "high"}', "metrics.json: accuracy is not a number"),
        ("metrics.json", None, "metrics.json is gone"),
    ],
)
def test_an_unreadable_entry_is_an_output_error(
    tmp_path: Path, name: str, content: str | None, reason: str
) -> None:
    predictions = Predictions(np.array([0, 1]), np.array([0, 1]))
    save_outputs(tmp_path, {"accuracy": 1.0}, predictions, predictions)
    if content is None:
        (tmp_path / name).unlink()
    else:
        (tmp_path / name).write_text(content)
    with pytest.raises(OutputError) as caught:
        load_outputs(tmp_path)
    assert caught.value.message.startswith(reason)
    assert "trains the commit again" in str(caught.value)


def test_metrics_are_written_as_json(tmp_path: Path) -> None:
    save_outputs(tmp_path, {"accuracy": 0.25}, None)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"accuracy": 0.25}
