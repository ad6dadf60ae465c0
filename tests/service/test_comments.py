"""The pull request's comment and check run for a finished evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from modelci.errors import ConfigError, EnvironmentBuildError, RunFailed
from modelci.evaluate.compare import compare, head_only
from modelci.evaluate.evaluation import EvaluationResult, SideResult
from modelci.service.comments import COMMENT_LIMIT, check_text, final_comment

DATA = "/var/lib/modelci"
LOG = f"{DATA}/logs/20260101T000000-head-abcdef123456-1a2b3c.log"
# What a failing training prints, hostile to the Markdown around it.
TAIL = "\n".join(
    [
        'File "train.py", line 3, in <module>',
        "```",
        "</details>",
        "## not a heading",
        "ValueError: learning rate must be positive",
    ]
)


def sides(*, head_error: Exception | None = None) -> tuple[SideResult, SideResult]:
    head = SideResult("head", "feature", "a" * 40, run_id=12)
    base = SideResult("base", "main", "b" * 40, run_id=11)
    if isinstance(head_error, RunFailed | ConfigError):
        head.fail(head_error)
    return head, base


def failed_run() -> RunFailed:
    return RunFailed(
        "the head commit's run exited with code 1",
        hint="the end of its log says why; fix that in the commit and push again",
        log_tail=TAIL,
        log_path=LOG,
    )


def test_the_cli_error_shows_the_log_tail_and_where_the_whole_log_is() -> None:
    text = str(failed_run())
    assert "The last 5 lines of its log:" in text
    assert "  | ValueError: learning rate must be positive" in text
    assert text.endswith(f"The whole log: {LOG}")


def test_a_failed_run_shows_its_log_tail_collapsed_with_a_link_and_no_server_path() -> None:
    head, base = sides(head_error=failed_run())
    result = EvaluationResult("org/model", head, base, None)
    body = final_comment(result, logs_url="https://ci.example.com/")
    assert DATA not in body
    assert "<details><summary>head: the last 5 lines of its log</summary>" in body
    assert "[The whole log](https://ci.example.com/api/runs/12/log)" in body
    tokens = MarkdownIt("commonmark").parse(body)
    blocks = [t.content for t in tokens if t.type == "fence"]
    assert blocks[1] == TAIL + "\n"  # whole, nothing in it closed the fence early
    assert not [t for t in tokens if t.type == "heading_open" and t.map and t.map[0] > 0]
    assert body.rstrip().endswith("</details>")  # the runs table after it is intact
    check = check_text(result, logs_url="https://ci.example.com")
    assert check.conclusion == "failure"
    assert DATA not in check.summary and TAIL in check.summary


def test_without_a_public_url_there_is_no_link_and_still_no_path() -> None:
    head, base = sides(head_error=failed_run())
    body = final_comment(EvaluationResult("org/model", head, base, None))
    assert "[The whole log]" not in body and DATA not in body
    assert "ValueError: learning rate must be positive" in body


def test_other_errors_keep_their_hint_and_show_no_log_block() -> None:
    error = ConfigError(
        "modelci.yaml, line 2: unknown field 'metrcs'", hint="did you mean 'metrics'"
    )
    head, base = sides(head_error=error)
    body = final_comment(EvaluationResult("org/model", head, base, None))
    assert "How to fix: did you mean 'metrics'" in body
    assert "its log</summary>" not in body


def test_a_huge_failure_still_fits_the_comment() -> None:
    long_tail = "\n".join("`" * 299 for _ in range(40))
    error = RunFailed("the head commit's run exited with code 1" + "!" * 50_000, log_tail=long_tail)
    head, base = sides(head_error=error)
    base.fail(RunFailed("the base commit's run exited with code 1", log_tail=long_tail))
    body = final_comment(EvaluationResult("org/model", head, base, None), logs_url="https://x")
    assert len(body) <= COMMENT_LIMIT
    assert body.rstrip().endswith("</details>")


def test_the_first_config_is_evaluated_alone_and_says_so() -> None:
    head, base = sides()
    base.skipped, base.run_id = "the base commit has no modelci.yaml", None
    head.metrics = {"accuracy": 0.9}
    result = EvaluationResult("org/model", head, base, head_only(head.metrics, []))
    body = final_comment(result)
    assert "PASS: head evaluated alone, the base has no modelci.yaml" in body
    assert "| base | `bbbbbbb` | not run: the base commit has no modelci.yaml |" in body
    check = check_text(result)
    assert check.conclusion == "success"
    assert check.title == "Head evaluated alone: the base has no modelci.yaml"


def test_a_head_metric_that_is_not_a_number_fails_the_check_with_that_reason() -> None:
    head, base = sides()
    comparison = compare({"accuracy": float("nan")}, {"accuracy": 0.9}, [])
    check = check_text(EvaluationResult("org/model", head, base, comparison))
    assert check.conclusion == "failure"
    assert check.title == "1 gated metric(s) failed: accuracy (not a number)"


def test_paths_in_reports_are_only_in_the_cli_error() -> None:
    head, base = sides(head_error=failed_run())
    result = EvaluationResult("org/model", head, base, None)
    assert result.error is not None and LOG in result.error
    assert result.public_error is not None and LOG not in result.public_error


def test_a_tool_message_naming_the_data_dir_is_scrubbed_for_the_pull_request() -> None:
    head, _ = sides()
    error = EnvironmentBuildError(f"uv failed while installing:\n{DATA}/envs/k1/lib: denied")
    head.fail(error, data_dir=Path(DATA))
    assert head.error is not None and f"{DATA}/envs" in head.error  # the CLI keeps it
    assert head.public_error == "uv failed while installing:\n<data dir>/envs/k1/lib: denied"


def test_an_empty_log_says_so() -> None:
    head, base = sides(head_error=RunFailed("the head commit's run exited with code 3"))
    body = final_comment(EvaluationResult("org/model", head, base, None))
    assert "<details><summary>head: its log</summary>\n\nThe log is empty" in body


def repeated_result() -> EvaluationResult:
    """Five runs a side (repeats: auto found the base nondeterministic), accuracy flaky."""
    from modelci.evaluate.compare import MetricRule
    from modelci.evaluate.noise import compare_repeated, unstable_metrics

    head, base = sides()
    reason = "training is nondeterministic (two seeds of the base gave different metrics)"
    for side, centre in ((head, 0.90), (base, 0.901)):
        side.metrics = {"accuracy": centre - 0.012, "loss": 0.3}
        side.repeats_reason = reason
        for k, offset in enumerate([0.006, 0.0, 0.012, -0.012], start=1):
            side.again(k).metrics = {"accuracy": centre + offset, "loss": 0.3}
    rules = [MetricRule("accuracy", "higher", tolerance=0.002)]
    comparison = compare_repeated(head.seed_runs(), base.seed_runs(), rules)
    result = EvaluationResult("org/model", head, base, comparison)
    result.unstable = [
        *unstable_metrics("head", head.seed_runs(), rules),
        *unstable_metrics("base", base.seed_runs(), rules),
    ]
    return result


def test_repeats_show_runs_per_side_why_and_the_unstable_metrics() -> None:
    from modelci.evaluate.evaluation import summary_json

    result = repeated_result()
    advice = (
        "accuracy varies by 0.024 between the base's 5 seeds (lowest to highest), more "
        "than its tolerance 0.002: seed your training from MODELCI_SEED or widen the tolerance"
    )
    body = final_comment(result)
    assert "5 runs of head, 5 of base: training is nondeterministic" in body
    assert f"- {advice}" in body
    assert "from training randomness" in body  # the interval's two parts, per metric
    check = check_text(result)
    assert check.conclusion == "success" and advice in check.summary
    payload = summary_json(result)
    assert payload["sides"]["head"]["runs"] == payload["sides"]["base"]["runs"] == 5
    assert payload["sides"]["base"]["repeats_reason"].startswith("training is nondeterministic")
    head_unstable, base_unstable = payload["unstable"]
    assert base_unstable["role"] == "base" and base_unstable["message"] == advice
    assert head_unstable["spread"] == base_unstable["spread"] == pytest.approx(0.024)
    assert base_unstable["tolerance"] == 0.002 and base_unstable["runs"] == 5


def test_one_run_a_side_adds_no_repeats_note() -> None:
    head, base = sides()
    head.metrics, base.metrics = {"accuracy": 0.9}, {"accuracy": 0.9}
    result = EvaluationResult("org/model", head, base, compare(head.metrics, base.metrics, []))
    assert result.repeats_markdown() == ""
    assert "Repeated training" not in final_comment(result)
