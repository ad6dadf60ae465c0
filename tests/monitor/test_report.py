"""The HTML report: self-contained, a plot per column, the history chart, escaped names."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa

from modelci.monitor import drift, profile_table, render_html


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def report_page(**options: object) -> str:
    rng = np.random.default_rng(0)
    reference = pa.table(
        {
            "<b>x</b>": rng.normal(0, 1, 3000),
            "city": pa.array(rng.choice(["a", "b", "c"], 3000)),
            "note": pa.array([f"n{i}" for i in range(3000)]),
        }
    )
    current = pa.table(
        {
            "<b>x</b>": rng.normal(1, 1, 500),
            "city": pa.array(rng.choice(["a", "b", "c"], 500)),
            "note": pa.array([f"m{i}" for i in range(500)]),
        }
    )
    return render_html(drift(profile_table(reference), current), **options)  # type: ignore[arg-type]


def test_the_page_needs_nothing_from_outside() -> None:
    page = report_page(history=[("w1", 0.0), ("w2", 0.5), ("<w3>", 1.0)])
    parser = Collect()
    parser.feed(page)
    tags = [tag for tag, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags
    for _, attrs in parser.tags:
        for name, value in attrs.items():
            if name in ("src", "href"):
                assert value is not None and value.startswith("#"), (name, value)
    assert not re.search(r"url\(", page)


def test_each_tested_column_has_its_plot_and_the_history_its_chart() -> None:
    page = report_page(history=[("w1", 0.0), ("w2", 0.5), ("<w3>", 1.0)])
    parser = Collect()
    parser.feed(page)
    svgs = [attrs for tag, attrs in parser.tags if tag == "svg"]
    labels = [attrs.get("aria-label") for attrs in svgs]
    assert labels == [
        "share of drifted columns per window",
        "<b>x</b>: reference and current distributions",
        "city: reference and current distributions",
    ]
    assert sum(1 for tag, _ in parser.tags if tag == "polyline") == 1
    assert sum(1 for tag, _ in parser.tags if tag == "circle") == 3
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page.replace(
        'aria-label="&lt;b&gt;x&lt;/b&gt;', ""
    )
    assert "&lt;w3&gt;" in page
    assert "Not tested" in page and "free text" in page
    assert "wasserstein" in page and "drift" in page


def test_without_history_there_is_no_chart() -> None:
    page = report_page()
    assert "Drift over time" not in page
    assert page.count("<svg") == 2
