"""Params and data changes rendered beside the metrics: Markdown and rich tables.

The JSON form is ``DataReview.as_json`` (``params_diff``, ``data_changes``,
``data_drift``, ``data_notes``). Everything shown comes from the repository (file names,
values), so Markdown cells are escaped and rich cells are plain ``Text``, never
markup. The Markdown fits the ``limit`` it is given: rows that do not fit are
counted in a closing line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from modelci.data.changes import DataChange, FileVersion
from modelci.data.params import ParamChange
from modelci.data.review import DataReview
from modelci.evaluate.report import escape_markdown
from modelci.monitor.filedrift import FileDrift

__all__ = ["review_markdown", "review_rich"]

_VALUE_CHARS = 80
_MAX_NOTES = 10
ABSENT = "–"
UNKNOWN = "?"


def _value(value: Any, present: bool) -> str:
    if not present:
        return ABSENT
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def _params_cells(change: ParamChange) -> list[str]:
    return [
        change.path,
        change.key,
        _value(change.old, change.status != "added"),
        _value(change.new, change.status != "removed"),
    ]


def _size(size: int | None) -> str:
    if size is None:
        return UNKNOWN
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def _pair(change: DataChange, show: Callable[[FileVersion], str]) -> str:
    return " → ".join(ABSENT if v is None else show(v) for v in (change.old, change.new))


def _rows(version: FileVersion) -> str:
    if version.rows is None:
        return ABSENT
    return UNKNOWN if version.rows.rows is None else f"{version.rows.rows:,}"


def _data_cells(change: DataChange, *, inner: bool = False) -> list[str]:
    """data, size, md5 (hex only: shown as code), rows."""
    kind = "directory, " if change.directory else ""
    name = ("↳ " if inner else "") + change.path + ("/" if change.directory else "")
    size = _pair(change, lambda v: _size(v.size))
    if change.directory:
        size += f" ({_pair(change, lambda v: UNKNOWN if v.nfiles is None else f'{v.nfiles:,}')}"
        size += " files)"
    tabular = any(v is not None and v.rows is not None for v in (change.old, change.new))
    return [
        f"{name} ({kind}{change.status})",
        size,
        _pair(change, lambda v: v.md5[:8] if v.md5 else UNKNOWN),
        _pair(change, _rows) if tabular else "",
    ]


def _unknown_rows(changes: Sequence[DataChange]) -> list[str]:
    reasons = []
    for change in changes:
        for entry in (change, *change.files):
            for version in (entry.old, entry.new):
                if version is not None and version.rows is not None and version.rows.unknown:
                    reasons.append(version.rows.unknown)
    return list(dict.fromkeys(reasons))


def _data_rows(changes: Sequence[DataChange]) -> list[list[str]]:
    rows = []
    for change in changes:
        rows.append(_data_cells(change))
        rows += [_data_cells(inner, inner=True) for inner in change.files]
        if change.more_files:
            rows.append([f"↳ …and {change.more_files:,} more files in {change.path}/", "", "", ""])
        if change.note:
            rows.append([f"↳ {change.note}", "", "", ""])
    return rows


def _markdown_table(
    title: str,
    header: Sequence[str],
    align: str,
    rows: list[list[str]],
    budget: int,
    code: int | None = None,
) -> str:
    """A titled table of escaped cells; column ``code`` (safe text: hex digits) as code."""
    lines = [f"#### {title}", "", "| " + " | ".join(header) + " |", align]
    used = sum(len(line) + 1 for line in lines) + 80  # room for the closing line
    kept = 0
    for row in rows:
        cells = [
            f"`{cell}`" if i == code and cell and "`" not in cell else escape_markdown(cell)
            for i, cell in enumerate(row)
        ]
        line = "| " + " | ".join(cells) + " |"
        if used + len(line) + 1 > budget:
            break
        lines.append(line)
        used += len(line) + 1
        kept += 1
    if kept < len(rows):
        lines += ["", f"…and {len(rows) - kept:,} more rows (see the JSON report)."]
    return "\n".join(lines) if kept or not rows else ""


def review_markdown(review: DataReview | None, *, limit: int = 12_000) -> str:
    """The Params and Data changed sections (empty when nothing changed)."""
    if review is None:
        return ""
    parts = []
    share = limit // 2
    if review.params.changes:
        rows = [_params_cells(c) for c in review.params.changes]
        parts.append(
            _markdown_table(
                "Params",
                ("file", "param", "base", "head"),
                "| --- | --- | --- | --- |",
                rows,
                share,
            )
        )
    if review.data.changes:
        rows = _data_rows(review.data.changes)
        table = _markdown_table(
            "Data changed",
            ("data", "size", "md5", "rows"),
            "| --- | ---: | --- | ---: |",
            rows,
            limit - sum(len(p) for p in parts) - 400,
            code=2,
        )
        if reasons := _unknown_rows(review.data.changes):
            table += f"\n\n{UNKNOWN} rows: " + escape_markdown("; ".join(reasons)[:300])
        parts.append(table)
    if review.drift:
        parts.append(
            _markdown_table(
                "Data drift (head against base, Evidently's default tests)",
                ("data", "verdict", "columns drifted", "rows"),
                "| --- | --- | --- | ---: |",
                [_drift_cells(d) for d in review.drift],
                limit - sum(len(p) for p in parts) - 400,
            )
        )
    if review.notes:
        notes = [f"- {escape_markdown(n[:300])}" for n in review.notes[:_MAX_NOTES]]
        parts.append("\n".join(notes))
    return "\n\n".join(p for p in parts if p)[:limit]


def _drift_cells(found: FileDrift) -> list[str]:
    verdict = "drifts" if found.drifted else "no drift"
    share = f"{len(found.drifted_columns)} of {found.columns} ({found.share_drifted:.0%})"
    named = ", ".join(found.drifted_columns[:8]) + ("…" if len(found.drifted_columns) > 8 else "")
    return [
        found.path,
        verdict,
        f"{share}: {named}" if named else share,
        f"{found.base_rows:,} → {found.head_rows:,}",
    ]


def review_rich(review: DataReview | None) -> list[Table | Text]:
    """Rich tables for the terminal (none when nothing changed)."""
    if review is None:
        return []
    out: list[Table | Text] = []
    if review.params.changes:
        params = Table(title="Params")
        for column in ("file", "param", "base", "head"):
            params.add_column(column)
        for change in review.params.changes:
            params.add_row(*(Text(cell) for cell in _params_cells(change)))
        out.append(params)
    if review.data.changes:
        data = Table(title="Data changed")
        for column in ("data", "size", "md5", "rows"):
            data.add_column(column, justify="left" if column in ("data", "md5") else "right")
        for row in _data_rows(review.data.changes):
            data.add_row(*(Text(cell) for cell in row))
        if reasons := _unknown_rows(review.data.changes):
            data.caption = Text(f"{UNKNOWN} rows: {'; '.join(reasons)}")
        out.append(data)
    if review.drift:
        drift = Table(title="Data drift (head against base)")
        for column in ("data", "verdict", "columns drifted", "rows"):
            drift.add_column(column, justify="right" if column == "rows" else "left")
        for found in review.drift:
            drift.add_row(*(Text(cell) for cell in _drift_cells(found)))
        out.append(drift)
    out += [Text(note, style="yellow") for note in review.notes[:_MAX_NOTES]]
    return out
