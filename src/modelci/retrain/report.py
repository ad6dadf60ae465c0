"""A retrain in Markdown: the commit comment's and the ``modelci/retrain`` check run's body.

The comparison table (new version vs champion, both scored on the same rows)
or, in proposal mode, the link to the pull request,
the data that changed since the champion was trained, the decision and its
reasons, then the metric's history: a plot served by modelci under an
unguessable URL, or a text sparkline when there is no public URL.
"""

from __future__ import annotations

from modelci.evaluate.report import escape_markdown, render_markdown, scored_note
from modelci.retrain.result import RetrainResult

__all__ = ["retrain_markdown", "text_sparkline"]

_LIMIT = 65_536
_ICONS = {"promoted": "🚀", "kept": "🛑", "skipped": "⏭️", "failed": "❌", "proposed": "📬"}
_BARS = "▁▂▃▄▅▆▇█"
MAX_DATA_ROWS = 30


def text_sparkline(values: list[float]) -> str:
    """``values`` as a line of block characters (oldest first); empty for none."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    if span == 0:
        return _BARS[3] * len(values)
    return "".join(_BARS[round((v - low) / span * (len(_BARS) - 1))] for v in values)


def _refreshed_section(result: RetrainResult) -> list[str]:
    """The imports refreshed before training: where from, the commit's hash → the new."""
    if not result.refreshed_from:
        return []
    lines = ["**Imports refreshed from their source:**", ""]
    lines += ["| import | source | commit | now |", "| --- | --- | --- | --- |"]
    for path, (source, old, new) in list(result.refreshed_from.items())[:MAX_DATA_ROWS]:
        before, after = (old or "none")[:12], (new or "none")[:12]
        lines.append(
            f"| {escape_markdown(path)} | {escape_markdown(source)} | `{before}` | `{after}` |"
        )
    return [*lines, ""]


def _data_section(result: RetrainResult) -> str:
    if result.proposal is not None:
        # Nothing trained: the data is what the pull request changes.
        paths = ", ".join(f"`{escape_markdown(p)}`" for p in sorted(result.refreshed))
        return f"**Data:** the pull request updates {paths or 'no pointer'}.\n"
    if not result.data_version:
        return "**Data:** no DVC-tracked data.\n"
    lines = [*_refreshed_section(result), "**Data changed since the champion was trained:**", ""]
    if not result.data_changed:
        lines.append("nothing: the same DVC hashes as the champion's.")
    else:
        lines += ["| output | champion | now |", "| --- | --- | --- |"]
        for path, (old, new) in list(result.data_changed.items())[:MAX_DATA_ROWS]:
            before, after = (old or "absent")[:12], (new or "removed")[:12]
            lines.append(f"| {escape_markdown(path)} | `{before}` | `{after}` |")
        if len(result.data_changed) > MAX_DATA_ROWS:
            lines.append(f"\n…and {len(result.data_changed) - MAX_DATA_ROWS} more outputs.")
    return "\n".join(lines) + "\n"


def retrain_markdown(
    result: RetrainResult, *, history_plot_url: str | None, sparkline: str | None
) -> str:
    """The comment and check-run body, at most 65,536 characters."""
    icon = _ICONS[result.decision]
    head = [f"### modelci retrain ({escape_markdown(result.trigger)})", ""]
    head.append(f"**{icon} {escape_markdown(result.title())}**")
    head.append("")
    if result.error is not None:
        head += ["```", result.error.replace("```", "'''")[:4000], "```", ""]
    if result.proposal is not None:
        verb = "updated" if result.proposal.updated else "opened"
        head += [
            f"**Pull request:** [#{result.proposal.number}]({result.proposal.url}) ({verb}; "
            f"branch `{result.proposal.branch}` at `{result.proposal.commit_sha[:12]}`)",
            "",
        ]
    if result.reasons:
        head += [f"- {escape_markdown(reason)}" for reason in result.reasons] + [""]
    tail = [_data_section(result)]
    if history_plot_url:
        tail.append(f"![metric over the last retrains]({history_plot_url})")
    elif sparkline:
        tail.append(f"Metric over the last retrains: `{sparkline}`")
    tail.append(
        f"\n<sub>commit `{(result.sha or result.ref)[:12]}` · actor "
        f"{escape_markdown(result.actor)} · retrain #{result.retrain_id}</sub>"
    )
    text_head, text_tail = "\n".join(head), "\n".join(tail)
    table = ""
    if result.comparison is not None:
        note = scored_note(result.scored_on) if result.scored_on else ""
        room = _LIMIT - len(text_head) - len(text_tail) - 4
        table = render_markdown(
            result.comparison,
            head_sha=result.sha or "",
            base_sha=result.champion_sha or "",
            title=f"new v{result.version} vs champion v{result.champion_version}, same rows",
            extra=note,
            limit=max(room, 0),
        )
    return f"{text_head}\n{table}\n{text_tail}"[:_LIMIT]
