"""The drift report as one self-contained HTML page: inline SVG, inline CSS, no script.

Nothing is fetched (no CDN, no font, no JavaScript), so the page reads the same
offline, in a mail client or from a CI artifact. Per column: both distributions
(reference grey, current blue), the test, score, threshold and verdict; at the
top the share of drifted columns, and, given a history, the share per window as
a line chart against the drift share.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from modelci.monitor.verdicts import ColumnDrift, Distribution, DriftReport

__all__ = ["render_html"]

_REF = "#9aa0a6"
_CUR = "#1a73e8"
_BAD = "#c5221f"
_OK = "#188038"
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#202124;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.verdict{font-size:18px;font-weight:600;margin:8px 0}
.drift{color:#c5221f}.ok{color:#188038}.muted{color:#5f6368}
table{border-collapse:collapse;margin:8px 0}
td,th{padding:4px 10px;border-bottom:1px solid #e0e0e0;text-align:left}
th{font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.col{border:1px solid #e0e0e0;border-radius:6px;padding:10px 14px;margin:12px 0}
.col h3{margin:0 0 6px;font-size:15px}.legend span{margin-right:14px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
"""


def render_html(
    report: DriftReport,
    *,
    history: Sequence[tuple[str, float]] | None = None,
    title: str = "Data drift",
) -> str:
    """The page for ``report``; ``history``: (window label, share of drifted columns)."""
    verdict_class = "drift" if report.dataset_drifted else "ok"
    verdict = "The dataset drifts" if report.dataset_drifted else "No dataset drift"
    drifted = len(report.drifted_columns)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(report.label)} reference {report.reference_rows:,} rows, '
        f"current {report.current_rows:,} rows</p>"
        if report.label
        else f'<p class="muted">reference {report.reference_rows:,} rows, '
        f"current {report.current_rows:,} rows</p>",
        f'<p class="verdict {verdict_class}">{verdict}: {drifted} of {len(report.columns)} '
        f"columns drifted ({report.share_drifted:.0%}; the dataset drifts from "
        f"{report.drift_share:.0%})</p>",
    ]
    if history:
        parts += ["<h2>Drift over time</h2>", _history_chart(history, report.drift_share)]
    parts += ["<h2>Columns</h2>", _summary_table(report.columns)]
    parts += [_column_section(col) for col in report.columns]
    if report.skipped:
        parts.append("<h2>Not tested</h2><table><tr><th>column</th><th>kind</th><th>why</th></tr>")
        parts += [
            f"<tr><td>{_e(col.name)}</td><td>{_e(col.kind)}</td><td>{_e(col.reason)}</td></tr>"
            for col in report.skipped
        ]
        parts.append("</table>")
    parts.append(
        '<p class="muted">Tests and thresholds follow Evidently\'s defaults (modelci.monitor).'
        "</p></body></html>"
    )
    return "\n".join(parts)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _score(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4f}"


def _summary_table(columns: Sequence[ColumnDrift]) -> str:
    rows = [
        "<table><tr><th>column</th><th>kind</th><th>test</th><th>score</th>"
        "<th>threshold</th><th>verdict</th></tr>"
    ]
    for col in columns:
        verdict = '<b class="drift">drift</b>' if col.drifted else '<span class="ok">ok</span>'
        rows.append(
            f'<tr><td><a href="#c-{_e(col.name)}">{_e(col.name)}</a></td><td>{_e(col.kind)}</td>'
            f'<td>{_e(col.test)}</td><td class="num">{_score(col.score)}</td>'
            f'<td class="num">{_score(col.threshold)}</td><td>{verdict}</td></tr>'
        )
    rows.append("</table>")
    return "".join(rows)


def _column_section(col: ColumnDrift) -> str:
    verdict = '<b class="drift">drift</b>' if col.drifted else '<span class="ok">no drift</span>'
    bound = f" (± {_score(col.error_bound)})" if col.error_bound else ""
    return (
        f'<div class="col" id="c-{_e(col.name)}"><h3>{_e(col.name)} — {verdict}</h3>'
        f'<div class="muted">{_e(col.kind)}, {_e(col.test)} score {_score(col.score)}{bound}, '
        f"threshold {_score(col.threshold)}; reference {col.reference_rows:,} values, "
        f"current {col.current_rows:,}</div>"
        f'<div class="legend"><span><i class="sw" style="background:{_REF}"></i>reference</span>'
        f'<span><i class="sw" style="background:{_CUR}"></i>current</span></div>'
        f"{_bars(col.distribution, col.name)}</div>"
    )


def _bars(dist: Distribution, name: str) -> str:
    """Grouped bars: per bin or value, the reference's share and the current's."""
    if not dist.labels:
        return '<p class="muted">no values to plot</p>'
    width, height, left, bottom, top = 760, 200, 44, 40, 10
    groups = len(dist.labels)
    top_share = max([*dist.reference, *dist.current, 1e-12])
    step = (width - left - 10) / groups
    bar = max(step * 0.4, 1.0)
    scale = (height - bottom - top) / top_share
    base = height - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(name)}: reference and current distributions">',
        f'<line x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#5f6368"/>',
        f'<text x="{left - 6}" y="{top + 8}" font-size="10" text-anchor="end">'
        f"{top_share:.0%}</text>",
        f'<text x="{left - 6}" y="{base}" font-size="10" text-anchor="end">0%</text>',
    ]
    every = max(1, math.ceil(groups / 12))
    for i, label in enumerate(dist.labels):
        x = left + i * step + step * 0.1
        for j, (share, colour) in enumerate(((dist.reference[i], _REF), (dist.current[i], _CUR))):
            h = share * scale
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{_e(label)}: '
                f"{'reference' if j == 0 else 'current'} {share:.2%}</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + bar:.1f}" y="{base + 14}" font-size="10" text-anchor="middle">'
                f"{_e(label[:14])}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _history_chart(history: Sequence[tuple[str, float]], drift_share: float) -> str:
    """The share of drifted columns per window, with the dataset's drift share dashed."""
    width, height, left, bottom, top, right = 760, 220, 44, 40, 12, 16
    inner_w, inner_h = width - left - right, height - bottom - top
    n = len(history)

    def x(i: int) -> float:
        return left + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)

    def y(share: float) -> float:
        return top + inner_h * (1 - min(max(share, 0.0), 1.0))

    points = " ".join(f"{x(i):.1f},{y(share):.1f}" for i, (_, share) in enumerate(history))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'role="img" aria-label="share of drifted columns per window">',
        f'<line x1="{left}" y1="{top + inner_h}" x2="{width - right}" y2="{top + inner_h}" '
        'stroke="#5f6368"/>',
        f'<line x1="{left}" y1="{y(drift_share):.1f}" x2="{width - right}" '
        f'y2="{y(drift_share):.1f}" stroke="{_BAD}" stroke-dasharray="4 3"/>',
        f'<text x="{left - 6}" y="{top + 8}" font-size="10" text-anchor="end">100%</text>',
        f'<text x="{left - 6}" y="{top + inner_h}" font-size="10" text-anchor="end">0%</text>',
        f'<polyline points="{points}" fill="none" stroke="{_CUR}" stroke-width="2"/>',
    ]
    every = max(1, math.ceil(n / 10))
    for i, (label, share) in enumerate(history):
        colour = _BAD if share >= drift_share else _OK
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(share):.1f}" r="3.5" fill="{colour}">'
            f"<title>{_e(label)}: {share:.0%}</title></circle>"
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x(i):.1f}" y="{top + inner_h + 16}" font-size="10" '
                f'text-anchor="middle">{_e(label[:16])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
