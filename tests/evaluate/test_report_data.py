"""Params and data changes beside the metrics: Markdown (the PR comment) and rich."""

from __future__ import annotations

from markdown_it import MarkdownIt
from rich.console import Console

from modelci.data.changes import NOT_CACHED, DataChange, DataChanges, FileVersion, RowCount
from modelci.data.params import ParamChange, ParamsDiff
from modelci.data.review import DataReview
from modelci.evaluate.compare import compare
from modelci.evaluate.evaluation import EvaluationResult, SideResult, summary_json
from modelci.evaluate.report_data import review_markdown, review_rich
from modelci.service.comments import check_text, final_comment

A, B = "0123456789abcdef" * 2, "fedcba9876543210" * 2


def csv_change(path: str = "data/data.csv", old_rows: int | None = 100) -> DataChange:
    return DataChange(
        path,
        "modified",
        FileVersion(A, 2048, rows=RowCount(old_rows, None if old_rows else NOT_CACHED)),
        FileVersion(B, 3 * 1024 * 1024, rows=RowCount(250)),
        source=f"{path}.dvc",
    )


def review(*changes: DataChange, params: tuple[ParamChange, ...] = ()) -> DataReview:
    return DataReview(ParamsDiff(params), DataChanges(changes))


LR = ParamChange("params.yaml", "train.lr", 0.01, 0.02, "modified")


def test_params_and_data_tables() -> None:
    added = ParamChange("params.yaml", "train.batch", None, 32, "added")
    text = review_markdown(review(csv_change(), params=(LR, added)))

    assert "#### Params" in text and "#### Data changed" in text
    assert "| params.yaml | train.lr | 0.01 | 0.02 |" in text
    assert "| params.yaml | train.batch | – | 32 |" in text
    assert (
        "| data/data.csv (modified) | 2.0 KB → 3.0 MB | `01234567 → fedcba98` | 100 → 250 |" in text
    )


def test_rows_unknown_and_directories_with_more_files() -> None:
    inner = DataChange("imgs/a.csv", "added", None, FileVersion(B, 10, rows=RowCount(3)))
    folder = DataChange(
        "imgs",
        "modified",
        FileVersion(A + ".dir", 100, nfiles=40),
        FileVersion(B + ".dir", 120, nfiles=45),
        source="imgs.dvc",
        directory=True,
        files=(inner,),
        more_files=24,
    )
    text = review_markdown(review(csv_change(old_rows=None), folder))

    assert "| ? → 250 |" in text
    assert f"? rows: {NOT_CACHED}" in text
    assert "imgs/ (directory, modified) | 100 B → 120 B (40 → 45 files)" in text
    assert "| ↳ imgs/a.csv (added) | – → 10 B | `– → fedcba98` | – → 3 |" in text
    assert "↳ …and 24 more files in imgs/" in text


def test_names_and_values_from_the_repository_cannot_break_the_markdown() -> None:
    hostile = "x|y`</details>\n## h"
    text = review_markdown(
        review(
            csv_change(path=hostile),
            params=(ParamChange(hostile, hostile, "`code`", [1, "|"], "modified"),),
        )
    )
    tokens = MarkdownIt().enable("table").parse(text)
    assert [t.type for t in tokens if t.type == "table_open"] == ["table_open", "table_open"]
    assert not any(t.type in ("html_block", "fence") or t.tag == "h2" for t in tokens)
    assert "\n## h" not in text


def test_the_sections_fit_their_limit() -> None:
    many = tuple(ParamChange("params.yaml", f"k{i}", i, i + 1, "modified") for i in range(2000))
    changes = [csv_change(path=f"data/{i}.csv") for i in range(500)]
    text = review_markdown(review(*changes, params=many), limit=6000)
    assert len(text) <= 6000
    assert "more rows (see the JSON report)" in text
    assert "#### Params" in text and "#### Data changed" in text


def test_nothing_changed_shows_nothing() -> None:
    assert review_markdown(None) == ""
    assert review_markdown(review()) == ""
    assert review_rich(review()) == []


def test_notes_are_listed() -> None:
    notes = DataReview(ParamsDiff(notes=("params.yaml at head is not valid YAML (line 2): x",)))
    assert review_markdown(notes) == "- params.yaml at head is not valid YAML (line 2): x"


def test_rich_cells_are_text_not_markup() -> None:
    console = Console(record=True, width=200)
    for part in review_rich(review(csv_change(path="[bold red]x[/]"), params=(LR,))):
        console.print(part)
    out = console.export_text()
    assert "[bold red]x[/] (modified)" in out
    assert "train.lr" in out and "100 → 250" in out


def result_with(data: DataReview) -> EvaluationResult:
    head = SideResult("head", "feature", "a" * 40, run_id=2)
    base = SideResult("base", "main", "b" * 40, run_id=1)
    head.metrics, base.metrics = {"accuracy": 0.9}, {"accuracy": 0.8}
    result = EvaluationResult("org/m", head, base, compare(head.metrics, base.metrics, []))
    result.data = data
    return result


def test_the_comment_the_check_and_the_json_carry_both() -> None:
    result = result_with(review(csv_change(), params=(LR,)))

    body = final_comment(result)
    assert body.index("| accuracy") < body.index("#### Params") < body.index("#### Data changed")
    assert "100 → 250" in check_text(result).summary
    payload = summary_json(result)
    assert payload["params_diff"] == [LR.as_json()]
    (change,) = payload["data_changes"]
    assert (change["old"]["rows"], change["new"]["rows"]) == (100, 250)
    assert payload["data_notes"] == []
