"""Delivery end to end: real git repositories, the real sandbox, real MLflow and stores."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import uv

from modelci.deliver.delivery import Deliverer, DeliveryResult
from modelci.deliver.modelspec import ServingSpec
from modelci.deliver.tracking import Registry
from modelci.errors import NeedsGpuWorker
from modelci.evaluate.evaluation import Evaluator
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import make_sandbox
from modelci.settings import Settings
from modelci.store.db import Database, open_database
from tests.conftest import MLFLOW_STORE, GitRepo, commit_files

pytestmark = pytest.mark.sandbox

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

# A stdlib-only model whose class lives in the repository's code, so loading the
# pickle needs the code_paths that delivery copies beside it.
MODEL_LIB = """\
class Threshold:
    def __init__(self, cut):
        self.cut = cut

    def predict(self, rows):
        return [int(float(r["x"]) > self.cut) for r in rows]
"""
TRAIN = """\
import csv, json, pickle
from model_lib import Threshold
p = json.load(open("params.json"))
rows = list(csv.DictReader(open("data/train.csv")))
model = Threshold(p["cut"])
hits = sum(int(float(r["x"]) > p["cut"]) == int(r["label"]) for r in rows)
json.dump({"accuracy": hits / len(rows), "loss": 1 - hits / len(rows)}, open("metrics.json", "w"))
pickle.dump(model, open("model.pkl", "wb"))
"""
DATA = "x,color,label\n" + "".join(
    f"{x},{'red' if x % 2 else 'blue'},{int(x > 5)}\n" for x in range(10)
)
CONFIG = """\
train: python train.py
metrics: metrics.json
model:
  name: threshold
  artifact: model.pkl
  training_data: data/train.csv
  target: label
promotion:
  gates:
    accuracy: {direction: higher, tolerance: 0.002}
  floors:
    accuracy: {min: 0.6}
"""


@pytest.fixture
def data_dir(mlflow_store: Path) -> Iterator[Path]:
    """A data dir whose SQLite store (sqlite:///<it>/store.db) has MLflow's tables made."""
    data = Path(tempfile.mkdtemp(prefix="modelci-test-", dir="/var/tmp"))
    shutil.copyfile(mlflow_store, data / MLFLOW_STORE)
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _deliverer(settings: Settings, db: Database, envs_dir: Path | None = None) -> Deliverer:
    evaluator = Evaluator(
        settings=settings,
        database=lambda: db,
        sandbox=make_sandbox(),
        environments=EnvironmentManager(
            envs_dir=envs_dir or settings.envs_dir,
            python=settings.python,
            uv_bin=uv.find_uv_bin(),
        ),
    )
    registry = Registry.from_settings(settings, db.url)
    return Deliverer(
        settings=settings, database=lambda: db, evaluator=evaluator, registry=lambda: registry
    )


@pytest.fixture
def deliverer(data_dir: Path) -> Iterator[Deliverer]:
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir}/store.db")
    db = open_database(settings)
    try:
        yield _deliverer(settings, db)
    finally:
        db.close()


def pickle_repo(make_repo: GitRepo, cut: float) -> Path:
    return make_repo(
        {
            "modelci.yaml": CONFIG,
            "train.py": TRAIN,
            "model_lib.py": MODEL_LIB,
            "data/train.csv": DATA,
            "params.json": json.dumps({"cut": cut}),
        }
    )


def check_spec(result: DeliveryResult, deliverer: Deliverer) -> ServingSpec:
    assert result.version is not None
    version = deliverer.registry.get_version(result.model_name, result.version)
    spec = ServingSpec.read(version.model_dir)
    assert (version.model_dir / "MLmodel").is_file()
    assert (version.model_dir / spec.artifact).is_file()
    return spec


def test_better_commit_becomes_champion_worse_is_rejected_and_rollback(
    make_repo: GitRepo, deliverer: Deliverer
) -> None:
    repo = pickle_repo(make_repo, cut=3.5)  # accuracy 0.8
    first = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert first.error is None, first.error
    assert first.promoted and first.version == 1 and first.exit_code == 0
    spec = check_spec(first, deliverer)
    assert spec.loader == "pickle" and spec.code_paths == ("code",)
    assert [c.name for c in spec.columns] == ["x", "color"]
    assert spec.columns[1].categories == ("blue", "red")
    assert spec.input_example[0] == {"x": 0, "color": "blue"}
    model_dir = deliverer.registry.get_version("threshold", 1).model_dir
    assert (model_dir / "code" / "model_lib.py").is_file()
    import sys

    sys.path.insert(0, str(model_dir / "code"))
    try:  # our own test pickle, loaded here only to prove the files fit together
        loaded = pickle.loads((model_dir / spec.artifact).read_bytes())
        assert loaded.predict(spec.input_example) == [0, 0, 0, 0, 1]
    finally:
        sys.path.remove(str(model_dir / "code"))
        sys.modules.pop("model_lib", None)

    commit_files(repo, {"params.json": json.dumps({"cut": 5.5})}, "better")  # accuracy 1.0
    better = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert better.promoted and better.version == 2, better.error
    assert deliverer.registry.champion("threshold").version == 2

    commit_files(repo, {"params.json": json.dumps({"cut": 4.5})}, "worse")  # accuracy 0.9
    worse = deliverer.deliver(str(repo), "HEAD", actor="bob")
    assert worse.error is None and not worse.promoted and worse.exit_code == 1
    assert worse.version == 3
    assert worse.decision is not None
    assert worse.decision.reasons == [
        "accuracy 0.9 dropped below the champion's 1 by more than 0.002"
    ]
    assert "dropped below" in worse.summary_markdown()
    assert deliverer.registry.champion("threshold").version == 2

    back = deliverer.rollback("threshold", actor="carol", reason="bad predictions in prod")
    assert back.version == 1
    assert deliverer.registry.champion("threshold").version == 1
    actions = [(e["action"], e["version"], e["actor"]) for e in deliverer.events("threshold")]
    assert actions[:3] == [
        ("rolled_back", 1, "carol"),
        ("rejected", 3, "bob"),
        ("registered", 3, "bob"),
    ]
    assert deliverer.events("threshold")[0]["reason"] == "bad predictions in prod"

    deliverer.promote("threshold", 3, actor="dave", reason="accepted by hand")
    assert deliverer.registry.champion("threshold").version == 3
    assert deliverer.champion_history("threshold") == [1, 3]


def test_first_version_below_the_floor_is_not_promoted(
    make_repo: GitRepo, deliverer: Deliverer
) -> None:
    repo = pickle_repo(make_repo, cut=1.5)  # accuracy 0.6 - but floor needs 0.6: lower it
    commit_files(repo, {"params.json": json.dumps({"cut": 0.5})}, "poor")  # accuracy 0.5
    result = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert result.error is None, result.error
    assert result.version == 1 and not result.promoted
    assert result.decision is not None and result.decision.reasons == ["accuracy 0.5 < floor 0.6"]
    assert deliverer.registry.champion("threshold") is None


def test_a_gpu_commit_off_the_gpu_queue_is_handed_back_not_delivered(
    make_repo: GitRepo, deliverer: Deliverer
) -> None:
    repo = pickle_repo(make_repo, cut=1.5)
    commit_files(repo, {"modelci.yaml": CONFIG + "limits:\n  gpu: true\n"}, "train on a GPU")
    with pytest.raises(NeedsGpuWorker):
        deliverer.deliver(str(repo), "HEAD", actor="alice", gpu_allowed=False)
    assert deliverer.registry.champion("threshold") is None


def test_hostile_artifact_symlink_is_refused(make_repo: GitRepo, deliverer: Deliverer) -> None:
    train = TRAIN.replace(
        'pickle.dump(model, open("model.pkl", "wb"))',
        'import os; os.symlink("/etc/shadow", "model.pkl")',
    )
    repo = pickle_repo(make_repo, cut=3.5)
    commit_files(repo, {"train.py": train}, "hostile")
    result = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert result.error is not None and "symbolic link" in result.error
    assert result.exit_code == 2
    assert deliverer.registry.model_names() == []


INTERFACE = """\
import pickle


class Model:
    def train(self, data):
        # data: the training CSV as a DataFrame when pandas is there, else records
        return pickle.dumps({"cut": 5.5})

    def evaluate(self, model, data):
        cut = pickle.loads(model)["cut"]
        hits = sum(int(float(r["x"]) > cut) == int(r["label"]) for r in data)
        return {"accuracy": hits / len(data)}

    def predict(self, model, features):
        cut = pickle.loads(model)["cut"]
        return [int(float(r["x"]) > cut) for r in features]

    def info(self):
        return {"kind": "threshold", "author": "seed 003"}
"""


def test_four_method_interface(make_repo: GitRepo, deliverer: Deliverer) -> None:
    repo = make_repo(
        {
            "modelci.yaml": "model:\n  interface: main:Model\n  training_data: data/train.csv\n"
            "  target: label\n",
            "main.py": INTERFACE,
            "data/train.csv": DATA,
        }
    )
    result = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert result.error is None, result.error
    assert result.promoted and result.metrics == {"accuracy": 1.0}
    spec = check_spec(result, deliverer)
    version = deliverer.registry.get_version(result.model_name, 1)
    assert (version.model_dir / "code" / "main.py").is_file()
    assert (version.model_dir / "code" / "modelci_interface.py").is_file()
    import sys

    sys.path.insert(0, str(version.model_dir / "code"))
    try:
        loaded = pickle.loads((version.model_dir / spec.artifact).read_bytes())
        assert loaded.predict([{"x": 7}, {"x": 1}]) == [1, 0]
    finally:
        sys.path.remove(str(version.model_dir / "code"))
        for name in ("main", "modelci_interface"):
            sys.modules.pop(name, None)
    run = deliverer.registry.client.get_run(version.run_id or "")
    assert run.data.tags["modelci.info.kind"] == "threshold"


def test_delivery_on_postgresql(make_repo: GitRepo, data_dir: Path, postgres_url: str) -> None:
    settings = Settings(data_dir=data_dir, database_url=postgres_url)
    db = open_database(settings)
    try:
        deliverer = _deliverer(settings, db)
        assert "_mlflow" in deliverer.registry.tracking_uri
        repo = pickle_repo(make_repo, cut=3.5)
        name = f"threshold-{data_dir.name}"
        config = CONFIG.replace("name: threshold", f"name: {name}")
        commit_files(repo, {"modelci.yaml": config}, "name")
        result = deliverer.deliver(str(repo), "HEAD", actor="alice")
        assert result.error is None, result.error
        assert result.promoted
        champion = deliverer.registry.champion(name)
        assert champion is not None and champion.sha == result.sha
        assert champion.metrics["accuracy"] == pytest.approx(0.8)
        check_spec(result, deliverer)
    finally:
        db.close()


MLFLOW_TRAIN = """\
import mlflow, mlflow.sklearn, pandas
from sklearn.linear_model import LogisticRegression
frame = pandas.read_csv("data/train.csv")
X, y = frame[["x"]].astype(float), frame["label"]
with mlflow.start_run():
    model = LogisticRegression().fit(X, y)
    mlflow.log_param("C", 1.0)
    mlflow.log_metric("accuracy", float(model.score(X, y)))
    mlflow.sklearn.log_model(
        model, name="model", serialization_format="cloudpickle", input_example=X.head(2)
    )
open("metrics.json", "w").write('{"accuracy": %f}' % model.score(X, y))
"""


def test_repository_that_logs_an_mlflow_model_is_imported(
    make_repo: GitRepo, deliverer: Deliverer
) -> None:
    repo = make_repo(
        {
            "modelci.yaml": "train: python train.py\nmetrics: metrics.json\n"
            "model:\n  name: logged\n  mlflow: true\n",
            "requirements.txt": "mlflow-skinny==3.17.2\nscikit-learn\npandas\n",
            "train.py": MLFLOW_TRAIN,
            "data/train.csv": DATA,
        }
    )
    result = deliverer.deliver(str(repo), "HEAD", actor="alice")
    log = result.log_path.read_text()[-3000:] if result.log_path else ""
    assert result.error is None, f"{result.error}\n{log}"
    assert result.promoted
    spec = check_spec(result, deliverer)
    assert spec.loader == "cloudpickle"
    assert [c.name for c in spec.columns] == ["x"]
    assert any(line.startswith("scikit-learn==") for line in spec.requirements)
    version = deliverer.registry.get_version("logged", 1)
    run = deliverer.registry.client.get_run(version.run_id or "")
    assert run.data.params["C"] == "1.0"
    assert run.data.tags["modelci.imported_run"]
    # No file of the repository's own store leaks into the registered model.
    assert not (version.model_dir / "mlruns").exists()

    # A logged model whose MLmodel points outside the model directory is refused.
    escape = (
        MLFLOW_TRAIN
        + """
import glob, re
for path in glob.glob(".modelci/mlruns/**/MLmodel", recursive=True):
    text = open(path).read()
    outside = "pickled_model: ../../../../../etc/shadow"
    open(path, "w").write(re.sub(r"pickled_model: .*", outside, text))
"""
    )
    commit_files(repo, {"train.py": escape}, "escape")
    hostile = deliverer.deliver(str(repo), "HEAD", actor="mallory")
    assert hostile.error is not None and "not a file inside the model" in hostile.error
    assert [v.version for v in deliverer.registry.list_versions("logged")] == [1]


def test_cli_deliver_and_models(
    make_repo: GitRepo, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from modelci.cli import cli

    monkeypatch.setenv("MODELCI_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MODELCI_DATABASE_URL", f"sqlite:///{data_dir}/store.db")
    repo = pickle_repo(make_repo, cut=3.5)
    runner = CliRunner()
    first = runner.invoke(cli, ["deliver", str(repo), "--ref", "HEAD", "-q", "--actor", "ann"])
    assert first.exit_code == 0, first.output
    assert "threshold version 1 is the champion" in first.output
    commit_files(repo, {"params.json": json.dumps({"cut": 0.5})}, "worse")
    worse = runner.invoke(cli, ["deliver", str(repo), "-q"])
    assert worse.exit_code == 1, worse.output
    assert "accuracy 0.5 < floor 0.6" in worse.output
    listed = runner.invoke(cli, ["models", "list"])
    assert listed.exit_code == 0 and "threshold" in listed.output
    assert f"modelci --data-dir {data_dir} mlflow-ui" in listed.output
    promoted = runner.invoke(cli, ["models", "promote", "threshold", "2", "--reason", "try it"])
    assert promoted.exit_code == 0, promoted.output
    back = runner.invoke(
        cli, ["models", "rollback", "threshold", "--reason", "too many errors", "--actor", "bo"]
    )
    assert back.exit_code == 0 and "v1 is the champion" in back.output
    shown = runner.invoke(cli, ["models", "show", "threshold"])
    assert shown.exit_code == 0
    for text in ("champion", "rolled back to v1", "too many errors", "did not promote v2"):
        assert text in shown.output
    again = runner.invoke(cli, ["deliver", str(repo), "--format", "json"])
    assert again.exit_code == 1, again.output  # the reused v2 is not the champion
    reused = json.loads(again.stdout)
    assert (reused["version"], reused["reused"], reused["champion"]) == (2, True, False)
    commit_files(repo, {"modelci.yaml": "train: python train.py\nmetrics: metrics.json\n"})
    refused = runner.invoke(cli, ["deliver", str(repo)])
    assert refused.exit_code == 2
    assert refused.output.count("has no model: section") == 1, refused.output
    missing = runner.invoke(cli, ["models", "promote", "threshold", "9", "--reason", "x"])
    assert missing.exit_code == 2 and "has no version 9" in missing.output
    unknown = runner.invoke(cli, ["models", "show", "nope"])
    assert unknown.exit_code == 2 and "no registered model named 'nope'" in unknown.output


def test_summary_for_a_check_run_says_why_and_stays_bounded() -> None:
    from modelci.deliver.gates import Decision

    result = DeliveryResult(
        repo="acme/churn",
        ref="main",
        sha="a" * 40,
        model_name="churn",
        version=3,
        decision=Decision(False, ["accuracy 0.9 < floor 0.93"], []),
        metrics={f"m{i}": float(i) for i in range(300)},
    )
    text = result.summary_markdown()
    assert text.startswith("### churn version 3 registered, not promoted")
    assert "- accuracy 0.9 < floor 0.93" in text
    assert result.exit_code == 1
    failed = DeliveryResult(repo="r", ref="main", error="x" * 100_000)
    assert failed.exit_code == 2 and len(failed.summary_markdown()) <= 65_535


def test_delivering_a_commit_again_reuses_its_version(
    make_repo: GitRepo, deliverer: Deliverer
) -> None:
    repo = pickle_repo(make_repo, cut=3.5)
    first = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert first.error is None and first.version == 1 and not first.reused, first.error
    again = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert again.error is None, again.error
    assert (again.version, again.reused, again.promoted, again.exit_code) == (1, True, False, 0)
    assert again.log_path is None  # not trained again
    assert "reused: already registered for this commit" in again.title
    assert "it is the champion" in again.title
    assert again.to_json()["reused"] is True and again.to_json()["champion"] is True
    assert [v.version for v in deliverer.registry.list_versions("threshold")] == [1]
    # Another configuration of the same code is another version.
    commit_files(repo, {"modelci.yaml": CONFIG.replace("min: 0.6", "min: 0.5")}, "floor")
    changed = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert changed.version == 2 and not changed.reused, changed.error


def test_a_commit_without_a_model_section_is_refused_before_training(
    make_repo: GitRepo, deliverer: Deliverer
) -> None:
    repo = make_repo({"modelci.yaml": "train: python train.py\nmetrics: m.json\n", "train.py": ""})
    result = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert result.error is not None and "has no model: section" in result.error
    assert result.log_path is None  # nothing ran
    bare = make_repo({"train.py": ""})
    missing = deliverer.deliver(str(bare), "HEAD", actor="alice")
    assert missing.error is not None and "has no modelci.yaml" in missing.error
    assert "--command" not in missing.error  # deliver has no such flag
