"""The text modelci writes on a pull request: its one comment and its check run.

The GitHub client puts a hidden marker first in the comment so it is found
again and updated in place; the comment shows a status line while the
evaluation runs and the comparison table when
it ends. Everything fits GitHub's limits (65,536 characters for a comment,
65,535 for a check run's summary and text).
"""

from __future__ import annotations

from dataclasses import dataclass

from modelci.evaluate.evaluation import EvaluationResult, SideResult

__all__ = ["COMMENT_LIMIT", "CheckText", "check_text", "final_comment", "status_comment"]

# Room is left for the marker the client prepends.
COMMENT_LIMIT = 65_536 - 100
CHECK_LIMIT = 65_535
_TITLE = "### modelci evaluation"


def status_comment(*, head_sha: str, status: str, detail: str = "") -> str:
    """The comment while an evaluation is queued or running."""
    extra = f"\n\n{detail}" if detail else ""
    return f"{_TITLE}\n\n**Status:** {status} · head `{head_sha[:7]}`{extra}\n"


def _side_line(side: SideResult, logs_url: str | None) -> str:
    timing = side.timings.get("total_s")
    took = (
        "reused an earlier result"
        if side.reused_from
        else (f"{timing:.1f} s" if timing is not None else "-")
    )
    log = ""
    if side.run_id is not None and logs_url:
        log = f" · [log]({logs_url.rstrip('/')}/api/runs/{side.run_id}/log)"
    return f"| {side.role} | `{side.sha[:7]}` | {took}{log} |"


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
    if result.comparison is None:
        body = (
            f"{_TITLE}\n\n**Status:** ❌ failed · head `{head.sha[:7]}` vs base "
            f"`{base.sha[:7]}`\n\n```\n{(result.error or '')[:20_000]}\n```{footer}"
        )
        return body[:COMMENT_LIMIT]
    table = render_markdown(
        result.comparison,
        head_sha=head.sha,
        base_sha=base.sha,
        title="modelci evaluation",
        limit=COMMENT_LIMIT - len(footer),
    )
    return f"{table}{footer}"


@dataclass(frozen=True)
class CheckText:
    conclusion: str  # success, failure, neutral
    title: str
    summary: str


def check_text(result: EvaluationResult) -> CheckText:
    """The check run's conclusion and text for a finished evaluation."""
    from modelci.evaluate.report import render_markdown

    if result.comparison is None:
        return CheckText("failure", "Evaluation failed", (result.error or "")[:CHECK_LIMIT])
    regressions = result.comparison.regressions
    summary = render_markdown(
        result.comparison, head_sha=result.head.sha, base_sha=result.base.sha, limit=CHECK_LIMIT
    )
    if regressions:
        names = ", ".join(m.name for m in regressions[:5])
        return CheckText(
            "failure", f"{len(regressions)} gated metric(s) regressed: {names}", summary
        )
    return CheckText("success", "No gated metric regressed", summary)
