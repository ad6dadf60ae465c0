"""Retrains end to end: real git, the real sandbox, real MLflow on the test PostgreSQL.

One repository goes through a champion's life: delivered, retrained unchanged
(skipped), retrained on better code and fresh rows (promoted, the champion
re-scored on those rows), on worse code (kept, with the gate's reason), and
without a scoring section (kept: no fair comparison). The steps share the
trained versions, so they run in order in one module.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelci.deliver.delivery import Deliverer
from modelci.monitor import Profile
from modelci.retrain.result import RetrainResult
from modelci.retrain.retrainer import NO_SCORING_REASON, Retrainer, drift_retrain, repository_key
from modelci.settings import Settings
from modelci.store import monitoring
from modelci.store import retrains as store
from modelci.store.db import Database, open_database
from tests.conftest import commit_files, git
from tests.deliver.test_delivery import _deliverer
from tests.scoring.test_scored_evaluation import MODEL_LIB, TRAIN, holdout, honest_accuracy
from tests.store.test_records import _reset_postgres
from tests.test_cli import modelci

pytestmark = pytest.mark.sandbox

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

# A name of its own per run: MLflow's registry on the test server outlives the test.
NAME = f"retrain-{uuid.uuid4().hex[:8]}"
SCORING = "scoring:\n  file: data/holdout.csv\n  target: label\n  metrics: [accuracy, f1]\n"


def config(*, scoring: bool = True) -> str:
    return (
        "train: python train.py\nmetrics: metrics.json\nrepeats: 1\n"
        f"model:\n  name: {NAME}\n  artifact: model.pkl\n  training_data: data/train.csv\n"
        "  target: label\n"
        "promotion:\n  gates:\n    accuracy: {direction: higher, tolerance: 0.01}\n"
        "  floors:\n    accuracy: {min: 0.5}\n" + (SCORING if scoring else "")
    )


class State:
    """What the steps hand on: the repository and the rows of its latest holdout."""

    repo: Path
    deliverer: Deliverer
    retrainer: Retrainer
    settings: Settings
    database: Database
    rows: list[tuple[float, int]]
    results: list[RetrainResult]


@pytest.fixture(scope="module")
def state(postgres_url: str) -> Iterator[State]:
    data_dir = Path(tempfile.mkdtemp(prefix="modelci-test-", dir="/var/tmp"))
    settings = Settings(data_dir=data_dir, database_url=postgres_url)
    _reset_postgres(postgres_url)  # other tests leave their schemas behind
    database = open_database(settings)
    text, rows = holdout(300, seed=5)
    repo = data_dir / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    commit_files(
        repo,
        {
            "modelci.yaml": config(),
            "model_lib.py": MODEL_LIB.format(cheat_paths=[]),
            "train.py": TRAIN,
            "params.json": json.dumps({"cut": 0.7}),
            "data/train.csv": holdout(200, seed=2)[0],
            "data/holdout.csv": text,
        },
        "initial",
    )
    s = State()
    s.repo, s.settings, s.database, s.rows, s.results = repo, settings, database, rows, []
    s.deliverer = _deliverer(settings, database)
    s.retrainer = Retrainer(deliverer=s.deliverer)
    try:
        yield s
    finally:
        database.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def retrain(state: State) -> RetrainResult:
    result = state.retrainer.retrain(str(state.repo), "main", trigger="manual", actor="tester")
    state.results.append(result)
    return result


def test_1_the_first_champion_is_delivered_then_an_unchanged_retrain_is_skipped(
    state: State,
) -> None:
    delivered = state.deliverer.deliver(str(state.repo), "main", actor="tester")
    assert delivered.error is None, delivered.error
    assert delivered.promoted and delivered.version == 1
    version = state.deliverer.registry.get_version(NAME, 1)
    assert version.trigger == "merge"
    assert version.data_version == {}
    # Registered with its drift reference: the scored rows' inputs and its predictions.
    with state.deliverer.evaluator.database().session() as session:
        reference = monitoring.get_profile(session, model_name=NAME, version=1)
        assert reference is not None and reference.rows == 300
        assert reference.source.startswith("data/holdout.csv at ")
        profile = Profile.from_bytes(reference.profile)
        assert reference.settings["window"] == 1000
    assert [c.name for c in profile.columns][-1] == "prediction"
    assert "label" not in [c.name for c in profile.columns]

    result = retrain(state)
    assert result.error is None, result.error
    assert result.decision == "skipped"
    assert result.version is None and result.champion_version == 1
    assert "nothing changed since v1 was trained" in result.reasons[0]
    assert state.deliverer.registry.list_versions(NAME)[-1].version == 1  # nothing trained


def test_2_a_better_model_on_fresh_rows_is_promoted_and_the_champion_rescored(
    state: State,
) -> None:
    text, rows = holdout(300, seed=9)  # fresh rows the champion never saw
    sha = commit_files(
        state.repo, {"params.json": json.dumps({"cut": 0.5}), "data/holdout.csv": text}
    )
    state.rows = rows
    result = retrain(state)
    assert result.error is None, result.error
    assert result.sha == sha
    assert result.decision == "promoted", result.reasons
    assert result.version == 2 and result.champion_version == 1
    # The champion (cut 0.7) was scored again, on the new commit's rows, in its worker.
    assert result.champion_metrics["accuracy"] == pytest.approx(honest_accuracy(rows, 0.7))
    assert result.new_metrics["accuracy"] == pytest.approx(honest_accuracy(rows, 0.5))
    assert result.scored_on == f"data/holdout.csv at {sha[:7]}"
    comparison = result.comparison
    assert comparison is not None
    accuracy = next(m for m in comparison.metrics if m.name == "accuracy")
    assert accuracy.scored and accuracy.verdict == "improved"
    assert accuracy.interval is not None  # paired bootstrap: the same rows on both sides
    assert accuracy.interval.low > 0
    registry = state.deliverer.registry
    assert registry.champion(NAME).version == 2  # type: ignore[union-attr]
    version = registry.get_version(NAME, 2)
    assert version.trigger == "manual"
    assert version.tags["modelci.retrain.decision"] == "promoted"
    assert float(version.tags["modelci.retrain.score.champion.accuracy"]) == pytest.approx(
        honest_accuracy(rows, 0.7)
    )
    events = state.deliverer.events(NAME, limit=1)
    assert events[0]["action"] == "promoted" and events[0]["actor"] == "tester"
    assert events[0]["reason"].startswith("manual retrain: promoted")
    assert events[0]["details"]["trigger"] == "manual"


def test_3_a_worse_model_is_kept_with_the_reason(state: State) -> None:
    commit_files(state.repo, {"params.json": json.dumps({"cut": 0.85})})
    result = retrain(state)
    assert result.error is None, result.error
    assert result.decision == "kept"
    assert result.version == 3 and result.champion_version == 2
    worse = honest_accuracy(state.rows, 0.85)
    assert any(
        r.startswith("accuracy") and "dropped below the champion's" in r for r in result.reasons
    ), result.reasons
    assert result.new_metrics["accuracy"] == pytest.approx(worse)
    assert state.deliverer.registry.champion(NAME).version == 2  # type: ignore[union-attr]
    assert state.deliverer.events(NAME, limit=1)[0]["action"] == "rejected"


def test_4_without_a_scoring_section_the_version_is_kept_unjudged(state: State) -> None:
    commit_files(state.repo, {"modelci.yaml": config(scoring=False), "params.json": '{"cut": 0.5}'})
    result = retrain(state)
    assert result.error is None, result.error
    assert result.decision == "kept"
    assert result.reasons == [NO_SCORING_REASON]
    assert result.comparison is None
    assert state.deliverer.registry.champion(NAME).version == 2  # type: ignore[union-attr]


def test_5_the_history_lists_every_retrain_newest_first(state: State) -> None:
    with state.database.session() as session:
        records = store.list_retrains(session, repository=repository_key(str(state.repo)))
        got = [(r.id, r.decision, r.version, r.champion_version) for r in records]
        metrics = records[2].metrics or {}
        token = records[0].plot_token
    assert got == [
        (r.retrain_id, r.decision, r.version, r.champion_version) for r in reversed(state.results)
    ]
    assert [d for _, d, _, _ in got] == ["kept", "kept", "promoted", "skipped"]
    assert metrics["champion"]["accuracy"] == pytest.approx(honest_accuracy(state.rows, 0.7))
    assert token and len(token) >= 32
    with state.database.session() as session:
        assert store.retrain_by_plot_token(session, token=token).id == got[0][0]  # type: ignore[union-attr]

    env = {
        **os.environ,
        "MODELCI_DATA_DIR": str(state.settings.data_dir),
        "MODELCI_DATABASE_URL": str(state.settings.database_url),
    }
    done = modelci(env, "retrain", str(state.repo), "--history", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["retrains"]
    assert [row["decision"] for row in rows] == ["kept", "kept", "promoted", "skipped"]
    assert rows[2]["metrics"]["new"]["accuracy"] > rows[2]["metrics"]["champion"]["accuracy"]
    table = modelci(env, "retrain", str(state.repo), "--history")
    assert table.returncode == 0, table.stderr
    assert "promoted" in table.stdout and "skipped" in table.stdout

    shown = modelci(env, "models", "show", NAME, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    versions = {v["version"]: v for v in json.loads(shown.stdout)["versions"]}
    assert versions[1]["trigger"] == "merge" and versions[2]["trigger"] == "manual"
    assert versions[2]["data_version"] == {}


def test_6_the_cli_retrains_and_drift_has_its_entry_point(state: State) -> None:
    env = {
        **os.environ,
        "MODELCI_DATA_DIR": str(state.settings.data_dir),
        "MODELCI_DATABASE_URL": str(state.settings.database_url),
    }
    champion_sha = state.results[1].sha
    assert champion_sha is not None
    done = modelci(env, "retrain", str(state.repo), "--ref", champion_sha, "--format", "json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["decision"] == "skipped" and payload["champion_version"] == 2
    assert payload["trigger"] == "manual"
    bad = modelci(env, "retrain", str(state.repo), "--ref", "no-such-branch")
    assert bad.returncode == 2
    assert "'no-such-branch' is not a commit" in bad.stderr and "Traceback" not in bad.stderr

    result = drift_retrain(state.retrainer, str(state.repo), reason="psi 0.4 on x")
    assert result.error is None, result.error
    assert result.trigger == "drift" and result.reasons[0] == "drift: psi 0.4 on x"
    assert result.decision == "kept" and result.version == 5
    assert state.deliverer.registry.get_version(NAME, 5).trigger == "drift"
