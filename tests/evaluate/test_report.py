from __future__ import annotations

import json

import numpy as np
import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from modelci.evaluate.bootstrap import PairedData, metric_value
from modelci.evaluate.compare import (
    MetricRule,
    Predictions,
    compare,
    gate_confidence,
    head_only,
)
from modelci.evaluate.report import (
    HEAD_ONLY_NOTE,
    format_number,
    markdown_code_block,
    render_json,
    render_markdown,
    render_rich,
)


def test_markdown_puts_regressions_first_and_escapes_names() -> None:
    result = compare(
        {"acc|x": 0.9, "loss": 0.5}, {"acc|x": 0.8, "loss": 0.1}, [MetricRule("acc|x", "higher")]
    )
    text = render_markdown(result, head_sha="a" * 40, base_sha="b" * 40)
    assert "FAIL: 1 gated metric(s) regressed: loss" in text
    assert "`aaaaaaa`" in text and "`bbbbbbb`" in text
    assert text.index("| loss") < text.index("| acc\\|x")


def test_markdown_always_fits_the_comment_limit() -> None:
    names = {f"metric_{i:05d}_" + "x" * 80 + "_accuracy": i / 10_000 for i in range(10_000)}
    result = compare(names, {k: v + 0.01 for k, v in names.items()}, [])
    text = render_markdown(result, head_sha="a" * 40, base_sha="b" * 40)
    assert len(text) <= 65_536
    assert "more metrics not shown" in text
    small = render_markdown(result, head_sha="a" * 40, base_sha="b" * 40, limit=2000)
    assert len(small) <= 2000


def test_json_is_strict_json() -> None:
    result = compare({"accuracy": float("nan"), "loss": 0.2}, {"accuracy": 0.5, "loss": 0.3}, [])
    payload = render_json(result, repository="r")
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text)["repository"] == "r"


def test_rich_table_renders() -> None:
    result = compare({"accuracy": 0.9}, {"accuracy": 0.8}, [])
    console = Console(record=True, width=120)
    console.print(render_rich(result, head_label="head", base_label="base"))
    assert "improved" in console.export_text()


def test_number_format() -> None:
    assert format_number(None) == "–"
    assert format_number(0.123456) == "0.1235"
    assert format_number(0.01, signed=True) == "+0.01"


def test_a_metric_that_is_not_a_number_says_so() -> None:
    result = compare({"accuracy": float("nan"), "loss": 0.9}, {"accuracy": 0.8, "loss": 0.1}, [])
    text = render_markdown(result, head_sha="a" * 40, base_sha="b" * 40)
    assert "FAIL: 2 gated metric(s) failed: accuracy (not a number), loss (regressed)" in text
    assert "| accuracy | 0.8 | nan | – |  | ❌ not a number |" in text
    payload = render_json(result)
    assert {m["name"]: m["verdict"] for m in payload["metrics"]}["accuracy"] == "not_a_number"


def test_head_only_report_says_there_was_nothing_to_compare() -> None:
    result = head_only({"accuracy": 0.9, "epochs": 3.0}, [])
    text = render_markdown(result, head_sha="a" * 40, base_sha="b" * 40)
    assert "PASS: head evaluated alone, the base has no modelci.yaml (2 metrics)" in text
    assert HEAD_ONLY_NOTE in text
    assert "| accuracy | – | 0.9 | – |  | 🆕 new (gated once merged) |" in text
    assert "| epochs | – | 3 | – |  | 🆕 new (not gated) |" in text
    payload = render_json(result)
    assert payload["head_only"] is True and payload["passed"] is True
    assert render_json(compare({"a": 1.0}, {"a": 1.0}, []))["head_only"] is False


def code_blocks(markdown: str) -> list[str]:
    tokens = MarkdownIt("commonmark").parse(markdown)
    return [t.content for t in tokens if t.type in ("fence", "code_block")]


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "```\n# not a title\n```",
        "````python\nx\n````\n</details>\n<script>",
        "a `b` ``c`` `````",
        "",
    ],
)
def test_code_block_holds_any_text_whole(text: str) -> None:
    markdown = f"before\n\n{markdown_code_block(text)}\n\n## after\n"
    assert code_blocks(markdown) == [text + "\n"]
    assert "## after" not in code_blocks(markdown)[0]


def test_three_gated_metrics_have_wider_intervals_and_the_report_says_why() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=400)
    head_scores = np.clip(y * 0.7 + rng.normal(0.15, 0.2, size=400), 0.01, 0.99)
    base_scores = np.clip(y * 0.7 + rng.normal(0.15, 0.2, size=400), 0.01, 0.99)
    metrics = {}
    preds = {}
    for side, scores in (("head", head_scores), ("base", base_scores)):
        p = Predictions(y, (scores >= 0.5).astype(np.int64), scores)
        preds[side] = p
        data = PairedData(y, p.y_pred, p.y_pred, scores, scores)
        metrics[side] = {
            name: metric_value(kind, data, head=True)
            for name, kind in (("accuracy", "accuracy"), ("f1", "f1"), ("roc_auc", "auc"))
        }
    comparison = compare(
        metrics["head"],
        metrics["base"],
        [],
        head_predictions=preds["head"],
        base_predictions=preds["base"],
    )
    levels = {m.name: m.interval.confidence for m in comparison.metrics if m.interval}
    assert levels == {name: gate_confidence(3) for name in ("accuracy", "f1", "roc_auc")}
    assert gate_confidence(3) == pytest.approx(1 - 0.1 / 3)
    text = render_markdown(comparison, head_sha="a" * 40, base_sha="b" * 40)
    assert "| 96.67% CI of Δ |" in text
    assert "the gate as a whole holds at 95%" in text
    assert render_json(comparison)["metrics"][0]["ci"]["confidence"] == pytest.approx(1 - 0.1 / 3)
    # A metric that gates nothing is not in the family: two gated ones stay at 95%.
    rules = [MetricRule("f1", "higher", gate=False)]
    fewer = compare(
        metrics["head"],
        metrics["base"],
        rules,
        head_predictions=preds["head"],
        base_predictions=preds["base"],
    )
    assert {m.interval.confidence for m in fewer.metrics if m.interval} == {0.95}
    assert "| 95% CI of Δ |" in render_markdown(fewer, head_sha="a" * 40, base_sha="b" * 40)
