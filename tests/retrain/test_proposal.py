"""Proposal mode's pure parts: the import's source, the pull request's description,
and the CLI's refusal (no GitHub App to open the pull request) unless --promote."""

from __future__ import annotations

import json

from modelci.retrain.proposal import (
    NOTHING_TO_PROPOSE,
    Proposal,
    import_source,
    no_proposer_error,
    proposal_body,
)
from modelci.retrain.report import retrain_markdown
from modelci.retrain.result import RetrainResult
from tests.conftest import GitRepo
from tests.test_cli import env, modelci

__all__ = ["env"]  # fixture used here

IMPORT_URL = (
    b"md5: 0c1d\nfrozen: true\ndeps:\n- md5: 1111\n  path: s3://bucket/raw.csv\n"
    b"outs:\n- md5: 22222222222222222222222222222222\n  path: raw.csv\n"
)
IMPORT = (
    b"frozen: true\ndeps:\n- path: data/labels.csv\n  repo:\n    url: https://github.com/o/d\n"
    b"    rev_lock: abc\nouts:\n- md5: 33333333333333333333333333333333\n  path: labels.csv\n"
)


def test_the_source_of_each_kind_of_import() -> None:
    assert import_source(IMPORT_URL) == "s3://bucket/raw.csv"
    assert import_source(IMPORT) == "https://github.com/o/d:data/labels.csv"
    assert import_source(b"outs:\n- md5: 1\n  path: x\n") is None  # dvc add, no import
    assert import_source(b"deps: [") is None  # not YAML


def test_the_description_lists_each_import_with_its_source_and_hashes() -> None:
    new = IMPORT_URL.replace(b"2222", b"4444")
    body = proposal_body(
        {"data/raw.csv.dvc": new, "data/labels.csv.dvc": IMPORT.replace(b"3333", b"5555")},
        {"data/raw.csv.dvc": IMPORT_URL, "data/labels.csv.dvc": None},  # labels: new import
        base_sha="f" * 40,
        sources={"data/labels.csv.dvc": "https://github.com/o/d:data/labels.csv@main"},
    )
    assert "`ffffffffffff`" in body
    row = next(line for line in body.splitlines() if "raw.csv.dvc" in line)
    assert row == (
        "| `data/raw.csv.dvc` | `s3://bucket/raw.csv` | `data/raw.csv` | `222222222222` | "
        "`444444444444` |"
    )
    labels = next(line for line in body.splitlines() if "labels.csv.dvc" in line)
    assert "`https://github.com/o/d:data/labels.csv@main`" in labels  # the refresh's word wins
    assert "| `none` | `555555555555` |" in labels


def test_a_proposal_and_a_skip_read_as_such_in_the_report() -> None:
    result = RetrainResult(repo="o/m", ref="main", sha="a" * 40, trigger="data", actor="x")
    result.decision = "proposed"
    result.refreshed = {"data/raw.csv.dvc": IMPORT_URL}
    result.proposal = Proposal(7, "https://github.com/o/m/pull/7", "modelci/retrain-data",
                               "b" * 40, updated=False)  # fmt: skip
    assert result.title() == "retrain of aaaaaaa: data refreshed, pull request #7 opened"
    text = retrain_markdown(result, history_plot_url=None, sparkline=None)
    assert "[#7](https://github.com/o/m/pull/7)" in text and "📬" in text
    assert result.as_json()["proposal"]["number"] == 7
    assert result.exit_code == 0
    skipped = RetrainResult(repo="o/m", ref="main", sha="a" * 40, trigger="data", actor="x")
    skipped.decision = "skipped"
    skipped.reasons.append(NOTHING_TO_PROPOSE)
    assert skipped.title() == f"retrain of aaaaaaa skipped: {NOTHING_TO_PROPOSE}"


def test_the_cli_refuses_proposal_mode_and_says_how_to_go_on(
    make_repo: GitRepo, env: dict[str, str]
) -> None:
    repo = make_repo(
        {
            "modelci.yaml": "train: python train.py\nmetrics: metrics.json\n"
            "model:\n  artifact: model.pkl\nretrain:\n  mode: pull-request\n",
            "train.py": "print(1)\n",
        }
    )
    done = modelci(env, "retrain", str(repo), "--ref", "HEAD", "--format", "json")
    assert done.returncode == 2, done.stderr
    payload = json.loads(done.stdout)
    assert payload["decision"] == "failed"
    assert str(no_proposer_error()) == payload["error"]
    assert "needs the server's GitHub App" in payload["error"]
    assert "modelci retrain --promote" in payload["error"]
    assert "Traceback" not in done.stderr
    history = modelci(env, "retrain", str(repo), "--history", "--format", "json")
    assert json.loads(history.stdout)["retrains"][0]["decision"] == "failed"
