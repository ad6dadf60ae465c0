"""A pull request that only brings new data and a new param, evaluated end to end:
real git, real DVC with a local remote, the real sandbox; the JSON, the comment, the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from modelci.cli.evaluating import _print_result
from modelci.evaluate.evaluation import Evaluator
from modelci.service.comments import final_comment
from modelci.settings import Settings
from tests.data.dvcrepos import commit_data, csv_rows, dvc_repo
from tests.data.test_fetch import allow, evaluate, evaluator, place, settings

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]
__all__ = ["evaluator", "place", "settings"]  # fixtures shared with test_fetch

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)


def test_a_data_change_pull_request_lists_the_new_data_and_the_changed_param(
    evaluator: Evaluator, settings: Settings, place: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = place / "remote"
    old, new = csv_rows(ones=300, zeros=700), csv_rows(ones=900, zeros=600)
    repo = dvc_repo(
        place / "churn", str(remote), old, files={"params.yaml": "train:\n  lr: 0.01\n"}
    )
    (repo / "params.yaml").write_text("train:\n  lr: 0.05\n")
    commit_data(repo, new, "more rows and a faster learning rate")  # only data + params
    allow(settings, repo, f'allowed_urls = ["{remote}"]\n')

    result = evaluate(evaluator, repo)

    assert result.head.ok, result.head.error
    assert result.base.ok, result.base.error
    _print_result(result, "json")
    payload = json.loads(capsys.readouterr().out)
    assert payload["params_diff"] == [
        {"path": "params.yaml", "key": "train.lr", "old": 0.01, "new": 0.05, "status": "modified"}
    ]
    (change,) = payload["data_changes"]
    assert (change["path"], change["status"], change["source"]) == (
        "data/data.csv",
        "modified",
        "data/data.csv.dvc",
    )
    assert (change["old"]["size"], change["new"]["size"]) == (len(old), len(new))
    assert (change["old"]["rows"], change["new"]["rows"]) == (1000, 1500)
    assert change["old"]["md5"] != change["new"]["md5"]

    # The new data against the old, with the tests served traffic gets: the label's
    # share of ones went from 30% to 60%.
    (drift,) = payload["data_drift"]
    assert (drift["path"], drift["base_rows"], drift["head_rows"]) == ("data/data.csv", 1000, 1500)
    assert drift["drifted"] and "label" in drift["drifted_columns"]

    comment = final_comment(result)
    assert "#### Data drift" in comment and "| data/data.csv | drifts |" in comment
    assert "| params.yaml | train.lr | 0.01 | 0.05 |" in comment
    short = f"`{change['old']['md5'][:8]} → {change['new']['md5'][:8]}`"
    sizes = f"{len(old) / 1024:.1f} KB → {len(new) / 1024:.1f} KB"
    assert f"| data/data.csv (modified) | {sizes} | {short} | 1,000 → 1,500 |" in comment

    _print_result(result, "markdown")
    assert "#### Data changed" in capsys.readouterr().out
    _print_result(result, "table")
    shown = capsys.readouterr().out
    assert "Params" in shown and "train.lr" in shown and "1,000 → 1,500" in shown
