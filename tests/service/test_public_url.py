"""MODELCI_PUBLIC_URL: the pull request's comment links each run's whole log through the
server's API (`/api/runs/{id}/log`), passing or failing; without it, no link."""

from __future__ import annotations

import re

import pytest

from modelci.errors import RunFailed
from modelci.evaluate.compare import compare
from modelci.evaluate.evaluation import EvaluationResult, SideResult
from modelci.service.comments import check_text, final_comment
from modelci.settings import Settings


def passing() -> EvaluationResult:
    head = SideResult("head", "feature", "a" * 40, run_id=12, timings={"total_s": 3.0})
    base = SideResult("base", "main", "b" * 40, run_id=7, reused_from=7)
    comparison = compare({"accuracy": 0.9}, {"accuracy": 0.8}, [])
    return EvaluationResult("org/model", head, base, comparison)


def links(text: str) -> list[str]:
    return re.findall(r"\]\((\S+?)\)", text)


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCI_PUBLIC_URL", "https://ci.example.com/modelci/")
    assert Settings().public_url == "https://ci.example.com/modelci/"


def test_a_passing_evaluation_links_both_runs_logs() -> None:
    body = final_comment(passing(), logs_url="https://ci.example.com/modelci/")
    assert links(body) == [
        "https://ci.example.com/modelci/api/runs/12/log",
        "https://ci.example.com/modelci/api/runs/7/log",  # the reused run's own log
    ]
    url = "https://ci.example.com/modelci/api/runs/12/log"
    head_row = f"| head | `aaaaaaa` | 3.0 s · [log]({url}) |"
    assert head_row in body


def test_without_a_public_url_nothing_is_linked() -> None:
    assert links(final_comment(passing())) == []


def test_a_failed_evaluations_check_run_links_the_failed_runs_log() -> None:
    result = passing()
    result.head.fail(RunFailed("the head commit's run exited with code 1", log_tail="boom"))
    result.comparison = None
    check = check_text(result, logs_url="https://ci.example.com")
    assert links(check.summary) == ["https://ci.example.com/api/runs/12/log"]
    assert links(check_text(result).summary) == []
