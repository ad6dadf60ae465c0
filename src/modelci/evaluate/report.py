"""A comparison rendered for people and programs: rich table, Markdown, JSON.

The Markdown report always fits ``limit`` characters (GitHub's comment limit
is 65,536): regressions and gated metrics come first, and rows that do not
fit are left out with a note saying how many.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from modelci.evaluate.compare import Comparison, MetricComparison

__all__ = [
    "HEAD_ONLY_NOTE",
    "SCORED_MARK",
    "ci_header",
    "escape_markdown",
    "format_number",
    "gate_level_note",
    "markdown_code_block",
    "render_json",
    "render_markdown",
    "render_rich",
    "scored_note",
    "summary_line",
]

_EMOJI = {
    "improved": "✅",
    "regressed": "❌",
    "within_tolerance": "🟡",
    "within_noise": "〰️",
    "unchanged": "➖",
    "new": "🆕",
    "missing": "⚠️",
    "informational": "ℹ️",
    "not_a_number": "❌",
}
_LABEL = {
    "improved": "improved",
    "regressed": "regressed",
    "within_tolerance": "within tolerance",
    "within_noise": "within noise",
    "unchanged": "unchanged",
    "new": "new",
    "missing": "missing in head",
    "informational": "no direction",
    "not_a_number": "not a number",
}
_STYLE = {
    "improved": "green",
    "regressed": "bold red",
    "within_tolerance": "yellow",
    "within_noise": "cyan",
    "missing": "bold red",
    "not_a_number": "bold red",
}


def format_number(value: float | None, *, signed: bool = False) -> str:
    """Four significant digits, scientific only for very large/small numbers."""
    if value is None:
        return "–"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    text = f"{value:+.4g}" if signed else f"{value:.4g}"
    return text


def _noise_parts(metric: MetricComparison) -> dict[str, Any] | None:
    """The two parts of a repeated-training interval, or None for a single run each."""
    from modelci.evaluate.noise import NoiseInterval

    interval = metric.interval
    if not isinstance(interval, NoiseInterval):
        return None
    return {
        "training_randomness": interval.training,
        "evaluation_sample": interval.sample,
        "runs": {"head": interval.head_runs, "base": interval.base_runs},
    }


def _ci(metric: MetricComparison) -> str:
    if metric.interval is None:
        return ""
    low, high = (f"{v:+.3g}" if v else "0" for v in (metric.interval.low, metric.interval.high))
    parts = _noise_parts(metric)
    if parts is None:
        return f"[{low}, {high}]"
    sample = parts["evaluation_sample"]
    detail = f"±{parts['training_randomness']:.2g} from training randomness"
    if sample is not None:
        detail += f", ±{sample:.2g} from the evaluation sample"
    runs = parts["runs"]
    return f"[{low}, {high}] ({detail}; {runs['head']}/{runs['base']} runs)"


def ci_header(comparison: Comparison) -> str:
    """The interval column's title: its level when every interval shares one."""
    levels = {m.interval.confidence for m in comparison.metrics if m.interval is not None}
    if len(levels) > 1:
        return "CI of Δ"
    return f"{_percent(levels.pop() if levels else 0.95)} CI of Δ"


def _percent(level: float) -> str:
    return f"{level * 100:.4g}%"


def gate_level_note(comparison: Comparison) -> str:
    """Why the gated metrics' intervals are wider than 95%, or empty when they are not."""
    gated = [m for m in comparison.metrics if m.gated and m.interval is not None]
    levels = {m.interval.confidence for m in gated if m.interval is not None}
    if not levels or max(levels) <= 0.95:
        return ""
    return (
        f"The gated metrics' intervals are {_percent(max(levels))} each, so that the gate as a "
        f"whole holds at 95%: a change within noise fails it at most 1 time in 20."
    )


def repeats_markdown(
    *, head_runs: int, base_runs: int, reason: str | None, unstable: Sequence[str]
) -> str:
    """Why each side was trained more than once, and the metrics too noisy for their
    gates: empty when each side ran once and nothing is unstable."""
    lines = []
    if head_runs > 1 or base_runs > 1:
        why = f": {reason}" if reason else ""
        lines.append(
            f"**Repeated training:** {head_runs} runs of head, {base_runs} of base{why}. "
            "Intervals include both training randomness and the evaluation sample."
        )
    if unstable:
        lines.append("**Unstable metrics** (they move between seeds more than their gates allow):")
        lines += [f"- {text}" for text in unstable[:10]]
        if len(unstable) > 10:
            lines.append(f"- …and {len(unstable) - 10} more (see the JSON report)")
    return "\n".join(lines)


def _order(comparison: Comparison) -> list[MetricComparison]:
    def key(m: MetricComparison) -> tuple[int, int, str]:
        return (
            0 if m.gated and m.verdict in ("regressed", "missing") else 1,
            0 if m.gated else 1,
            m.name,
        )

    return sorted(comparison.metrics, key=key)


HEAD_ONLY_NOTE = (
    "The base commit has no modelci.yaml: this change adds it, so there is no base "
    "result to compare with. These are head's metrics alone; the gates (the directions "
    "and tolerances below) apply to pull requests once it is merged."
)


def summary_line(comparison: Comparison) -> str:
    total = len(comparison.metrics)
    if comparison.head_only:
        return f"PASS: head evaluated alone, the base has no modelci.yaml ({total} metrics)"
    regressions = comparison.regressions
    if not regressions:
        gated = sum(m.gated for m in comparison.metrics)
        return f"PASS: no gated metric regressed ({gated} gated, {total} total)"
    shown = regressions[:10]
    more = f" and {len(regressions) - 10} more" if len(regressions) > 10 else ""
    if all(m.verdict != "not_a_number" for m in regressions):
        names = ", ".join(m.name for m in shown)
        return f"FAIL: {len(regressions)} gated metric(s) regressed: {names}{more}"
    names = ", ".join(f"{m.name} ({_LABEL[m.verdict]})" for m in shown)
    return f"FAIL: {len(regressions)} gated metric(s) failed: {names}{more}"


def markdown_code_block(text: str) -> str:
    """``text`` as a fenced code block that nothing in it can close early.

    CommonMark ends a fence only at a run of at least as many backticks, so the
    fence is one longer than the longest run inside; other Markdown and HTML
    inside a code block is shown as it is.
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


SCORED_MARK = "scored by modelci"


def scored_note(dataset: str) -> str:
    """What the metrics marked as scored by modelci are (Markdown, one paragraph)."""
    return (
        f"Metrics marked *{SCORED_MARK}* were computed by modelci from the trained models' "
        f"predictions on {escape_markdown(dataset)}; the labels never reached the models' "
        "sandbox, and these values replace any the repository reported under the same name."
    )


def render_rich(comparison: Comparison, *, head_label: str, base_label: str) -> Table:
    table = Table(
        title=f"{head_label} vs {base_label}",
        caption=summary_line(comparison),
        caption_style="bold green" if comparison.passed else "bold red",
    )
    for column in ("metric", "base", "head", "Δ", ci_header(comparison), "verdict"):
        table.add_column(
            column,
            justify="left" if column in ("metric", "verdict") else "right",
            no_wrap=column != "metric",
        )
    for m in _order(comparison):
        gate = "" if m.gated else " [dim](not gated)[/]"
        if comparison.head_only:
            gate = " [dim](gated once merged)[/]" if m.gated else " [dim](not gated)[/]"
        verdict = Text.from_markup(
            f"{_EMOJI[m.verdict]} {_LABEL[m.verdict]}{gate}", style=_STYLE.get(m.verdict, "")
        )
        name = Text(m.name)
        if m.scored:
            name.append(f" {SCORED_MARK}", style="cyan")
        table.add_row(
            name,
            format_number(m.base),
            format_number(m.head),
            format_number(m.delta, signed=True),
            _ci(m),
            verdict,
        )
    return table


def escape_markdown(text: str) -> str:
    """``text`` as literal Markdown on one line (a table cell)."""
    out = text.replace("\\", "\\\\")
    for char in "|`*_[]<>#":
        out = out.replace(char, "\\" + char)
    return out.replace("\n", " ")


def _markdown_row(m: MetricComparison, *, head_only: bool = False) -> str:
    gate = "" if m.gated else " (not gated)"
    if head_only and m.gated:
        gate = " (gated once merged)"
    scored = f" ({SCORED_MARK})" if m.scored else ""
    cells = [
        escape_markdown(m.name) + scored,
        format_number(m.base),
        format_number(m.head),
        format_number(m.delta, signed=True),
        _ci(m),
        f"{_EMOJI[m.verdict]} {_LABEL[m.verdict]}{gate}",
    ]
    return "| " + " | ".join(cells) + " |"


def render_markdown(
    comparison: Comparison,
    *,
    head_sha: str,
    base_sha: str,
    title: str = "modelci evaluation",
    extra: str = "",
    limit: int = 65_536,
) -> str:
    """GitHub-flavoured Markdown that never exceeds ``limit`` characters."""
    icon = "✅" if comparison.passed else "❌"
    note = f"{HEAD_ONLY_NOTE}\n\n" if comparison.head_only else ""
    head = (
        f"### {title}\n\n**{icon} {summary_line(comparison)}**\n\n"
        f"head `{head_sha[:7]}` vs base `{base_sha[:7]}`\n\n{note}"
        f"| metric | base | head | Δ | {ci_header(comparison)} | verdict |\n"
        "| --- | ---: | ---: | ---: | ---: | --- |\n"
    )
    levels = gate_level_note(comparison)
    tail = (f"\n{levels}\n" if levels else "") + (f"\n{extra}" if extra else "")
    rows = [_markdown_row(m, head_only=comparison.head_only) for m in _order(comparison)]
    note_room = 120
    budget = limit - len(head) - len(tail) - note_room
    if budget < 0:
        return (head + tail)[:limit]
    kept: list[str] = []
    used = 0
    for row in rows:
        if used + len(row) + 1 > budget:
            break
        kept.append(row)
        used += len(row) + 1
    body = "\n".join(kept)
    if len(kept) < len(rows):
        body += (
            f"\n\n…and {len(rows) - len(kept)} more metrics not shown "
            "(see the JSON report or the logs)."
        )
    return f"{head}{body}\n{tail}"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def render_json(comparison: Comparison, **context: Any) -> dict[str, Any]:
    metrics = [
        {
            "name": m.name,
            "head": _finite(m.head),
            "base": _finite(m.base),
            "delta": _finite(m.delta),
            "rel_delta": _finite(m.rel_delta),
            "direction": m.direction,
            "tolerance": m.tolerance,
            "gated": m.gated,
            "verdict": m.verdict,
            "scored_by": "modelci" if m.scored else "repository",
            "ci": None
            if m.interval is None
            else {
                "low": m.interval.low,
                "high": m.interval.high,
                "confidence": m.interval.confidence,
                **(_noise_parts(m) or {}),
            },
        }
        for m in _order(comparison)
    ]
    return {
        "passed": comparison.passed,
        "head_only": comparison.head_only,
        "summary": summary_line(comparison),
        "metrics": metrics,
        **context,
    }
