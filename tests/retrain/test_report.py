"""The retrain's Markdown: comparison on the same rows, data changed, decision, history."""

from __future__ import annotations

import numpy as np

from modelci.evaluate.compare import MetricRule, Predictions, compare, mark_scored
from modelci.retrain.report import retrain_markdown, text_sparkline
from modelci.retrain.result import RetrainResult


def _result() -> RetrainResult:
    y = np.array([0, 1] * 50)
    new = Predictions(y, y.copy())
    old = Predictions(y, np.array([0, 0] * 50))
    comparison = compare(
        {"accuracy": 1.0},
        {"accuracy": 0.5},
        [MetricRule("accuracy", "higher")],
        head_predictions=new,
        base_predictions=old,
    )
    return RetrainResult(
        repo="org/churn",
        ref="main",
        sha="a" * 40,
        trigger="schedule",
        actor="modelci scheduler",
        decision="promoted",
        reasons=["accuracy 1 vs champion 0.5"],
        model_name="churn",
        version=4,
        champion_version=3,
        champion_sha="b" * 40,
        data_version={"data/train.csv": "1" * 32},
        data_changed={"data/train.csv": ("0" * 32, "1" * 32)},
        comparison=mark_scored(comparison, frozenset({"accuracy"})),
        scored_on="data/holdout.csv at aaaaaaa",
        retrain_id=7,
    )


def test_the_body_has_the_comparison_the_data_the_decision_and_the_plot() -> None:
    text = retrain_markdown(_result(), history_plot_url="https://ci.example/p.png", sparkline=None)
    assert "churn v4 promoted to champion" in text
    assert "new v4 vs champion v3, same rows" in text
    assert "| accuracy (" in text and "improved" in text.lower()
    assert "data/holdout.csv at aaaaaaa" in text
    assert "| data/train.csv | `000000000000` | `111111111111` |" in text
    assert "![metric over the last retrains](https://ci.example/p.png)" in text
    assert "- accuracy 1 vs champion 0.5" in text


def test_without_a_public_url_a_sparkline_and_errors_fenced() -> None:
    result = _result()
    result.decision, result.error, result.comparison = "failed", "run failed\n```\nboom", None
    text = retrain_markdown(result, history_plot_url=None, sparkline=text_sparkline([1, 2, 3]))
    assert "Metric over the last retrains: `▁▅█`" in text
    assert "retrain of aaaaaaa failed" in text
    assert text.count("```") == 2  # the error cannot close its fence


def test_sparkline() -> None:
    assert text_sparkline([]) == ""
    assert text_sparkline([0.5, 0.5]) == "▄▄"
    assert text_sparkline([0.0, 1.0]) == "▁█"
