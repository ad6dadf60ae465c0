"""Evidently's own verdicts (DataDriftPreset, defaults) for the parity tests."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

# Evidently's display names of its default tests, as modelci names them
TESTS = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
}


@dataclass(frozen=True)
class EvidentlyColumn:
    test: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class EvidentlyResult:
    columns: dict[str, EvidentlyColumn]
    share_drifted: float
    dataset_drifted: bool


def evidently_drift(reference: Any, current: Any) -> EvidentlyResult:
    """DataDriftPreset with its defaults on two pandas DataFrames."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset()], include_tests=True).run(current, reference)
        data = snapshot.dict()
    verdicts: dict[str, bool] = {}
    dataset_drifted = None
    for test in data["tests"]:
        params = test["metric_config"]["params"]
        failed = str(test["status"].value if hasattr(test["status"], "value") else test["status"])
        if params["type"].endswith("ValueDrift"):
            verdicts[params["column"]] = failed == "FAIL"
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset_drifted = failed == "FAIL"
    columns: dict[str, EvidentlyColumn] = {}
    share = None
    for metric in data["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            name = config["column"]
            columns[name] = EvidentlyColumn(
                TESTS[config["method"]],
                float(metric["value"]),
                float(config["threshold"]),
                verdicts[name],
            )
        elif config["type"].endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    assert share is not None and dataset_drifted is not None
    return EvidentlyResult(columns, share, dataset_drifted)
