"""The text modelci writes on a pull request: its one comment and its check run.

The GitHub client puts a hidden marker first in the comment so it is found
again and updated in place; the comment shows a status line while the
evaluation runs and the comparison table when
it ends. Everything fits GitHub's limits (65,536 characters for a comment,
65,535 for a check run's summary and text).

A failed run shows why: the end of its log, fenced so nothing in it can break
the Markdown, in a collapsed block, with a link to the whole log through the
server's API when ``MODELCI_PUBLIC_URL`` is set. Nothing names a path on the
server (the error texts used are ``SideResult.public_error``).
"""

from __future__ import annotations

from dataclasses import dataclass

from modelci.evaluate.evaluation import EvaluationResult, SideResult

__all__ = ["COMMENT_LIMIT", "CheckText", "check_text", "final_comment", "status_comment"]

# Room is left for the marker the client prepends.
COMMENT_LIMIT = 65_536 - 100
CHECK_LIMIT = 65_535
_TITLE = "### modelci evaluation"
_REVIEW_LIMIT = 12_000  # the Params and Data changed tables; the metrics keep the rest


def status_comment(*, head_sha: str, status: str, detail: str = "") -> str:
    """The comment while an evaluation is queued or running."""
    extra = f"\n\n{detail}" if detail else ""
    return f"{_TITLE}\n\n**Status:** {status} · head `{head_sha[:7]}`{extra}\n"


def _log_url(side: SideResult, logs_url: str | None) -> str | None:
    if side.run_id is None or not logs_url:
        return None
    return f"{logs_url.rstrip('/')}/api/runs/{side.run_id}/log"


def _side_line(side: SideResult, logs_url: str | None) -> str:
    from modelci.evaluate.report import escape_markdown

    timing = side.timings.get("total_s")
    if side.skipped:
        took = f"not run: {side.skipped}"
    elif side.reused_from:
        took = "reused an earlier result"
    else:
        took = f"{timing:.1f} s" if timing is not None else "-"
    if side.cache_miss:
        took += f" ({side.cache_miss})"
    url = _log_url(side, logs_url)
    log = f" · [log]({url})" if url else ""
    return f"| {side.role} | `{side.sha[:7]}` | {escape_markdown(took)}{log} |"


def _failure(result: EvaluationResult, logs_url: str | None) -> str:
    """Why the evaluation failed: the errors, then each failed run's log tail."""
    from modelci.evaluate.report import markdown_code_block

    parts = [markdown_code_block((result.public_error or "")[:20_000])]
    for side in (result.head, result.base):
        if side.log_tail is None:
            continue
        lines = side.log_tail.count("\n") + 1 if side.log_tail else 0
        if lines:
            summary, body = f"the last {lines} lines of its log", markdown_code_block(side.log_tail)
        else:
            summary, body = "its log", "The log is empty: the commands printed nothing."
        summary = f"{side.role}: {summary}"
        url = _log_url(side, logs_url)
        link = f"\n\n[The whole log]({url})" if url else ""
        parts.append(f"<details><summary>{summary}</summary>\n\n{body}{link}\n\n</details>")
    return "\n\n".join(parts)


def _notes(result: EvaluationResult) -> str:
    # Bounded: one line per gated metric and side at most, each a short sentence;
    # the params and data tables within their own limit.
    from modelci.evaluate.report_data import review_markdown

    text = result.repeats_markdown()
    if result.scored_on:
        from modelci.evaluate.report import scored_note

        text = f"{scored_note(result.scored_on[:300])}\n\n{text}".strip()
    text = f"{review_markdown(result.data, limit=_REVIEW_LIMIT)}\n\n{text}".strip()
    return f"\n\n{text}" if text else ""


def final_comment(result: EvaluationResult, *, logs_url: str | None = None) -> str:
    """The comment once the evaluation has ended (passed, regressed or failed)."""
    from modelci.evaluate.report import render_markdown

    head, base = result.head, result.base
    runs = "\n".join(
        [
            "| commit | sha | run |",
            "| --- | --- | --- |",
            _side_line(head, logs_url),
            _side_line(base, logs_url),
        ]
    )
    footer = f"\n\n<details><summary>Runs</summary>\n\n{runs}\n\n</details>\n"
    if logs_url and result.evaluation_id is not None:
        # The dashboard's page: the intervals drawn, the phases, both logs.
        page = f"{logs_url.rstrip('/')}/ui/evaluations/{result.evaluation_id}"
        footer += f"\n[Details in the dashboard]({page})\n"
    if result.comparison is None:
        # Bounded by construction (errors 20,000 characters, each tail TAIL_LINES
        # short lines), so a cut never splits a fence.
        return (
            f"{_TITLE}\n\n**Status:** ❌ failed · head `{head.sha[:7]}` vs base "
            f"`{base.sha[:7]}`\n\n{_failure(result, logs_url)}{footer}"
        )
    notes = _notes(result)
    table = render_markdown(
        result.comparison,
        head_sha=head.sha,
        base_sha=base.sha,
        title="modelci evaluation",
        limit=COMMENT_LIMIT - len(footer) - len(notes),
    )
    return f"{table}{notes}{footer}"


@dataclass(frozen=True)
class CheckText:
    conclusion: str  # success, failure, neutral
    title: str
    summary: str


def check_text(result: EvaluationResult, *, logs_url: str | None = None) -> CheckText:
    """The check run's conclusion and text for a finished evaluation."""
    from modelci.evaluate.report import render_markdown, summary_line

    if result.comparison is None:
        return CheckText("failure", "Evaluation failed", _failure(result, logs_url))
    regressions = result.comparison.regressions
    notes = _notes(result)
    summary = render_markdown(
        result.comparison,
        head_sha=result.head.sha,
        base_sha=result.base.sha,
        limit=CHECK_LIMIT - len(notes),
    )
    summary += notes
    if result.comparison.head_only:
        return CheckText("success", "Head evaluated alone: the base has no modelci.yaml", summary)
    if regressions:
        title = summary_line(result.comparison).removeprefix("FAIL: ")
        return CheckText("failure", title[:200], summary)
    return CheckText("success", "No gated metric regressed", summary)
