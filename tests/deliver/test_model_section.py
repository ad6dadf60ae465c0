"""The `model:` section of modelci.yaml as the README describes it: `test_data`, `method`,
`input_example`, and the refusal of MLflow's skops format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelci.deliver.delivery import Deliverer
from modelci.deliver.modelartifacts import _logged_sklearn
from modelci.deliver.modelspec import ServingSpec
from modelci.errors import ConfigError
from tests.conftest import GitRepo
from tests.deliver.test_delivery import DATA, data_dir, deliverer

__all__ = ["data_dir", "deliverer"]  # fixtures used here

# Marked and skipped like tests/deliver/test_delivery.py, whose fixtures these are.
pytestmark = pytest.mark.sandbox


def registered_spec(deliverer: Deliverer, name: str) -> tuple[Path, ServingSpec]:
    version = deliverer.registry.get_version(name, 1)
    return version.model_dir, ServingSpec.read(version.model_dir)


# -- test_data: what the interface's evaluate() gets ---------------------------------------

COUNTING_INTERFACE = """\
import pickle


def train(data):
    return pickle.dumps({"cut": 5.5, "trained_on": len(data)})


def evaluate(model, data):
    cut = pickle.loads(model)["cut"]
    hits = sum(int(float(r["x"]) > cut) == int(r["label"]) for r in data)
    return {"accuracy": hits / len(data), "evaluated_on": len(data),
            "trained_on": pickle.loads(model)["trained_on"]}


def predict(model, features):
    cut = pickle.loads(model)["cut"]
    return [int(float(r["x"]) > cut) for r in features]


def info():
    return {}
"""
# Three rows, one of which the cut gets wrong: accuracy 2/3 on the test data only.
TEST_DATA = "x,color,label\n1,red,0\n9,blue,1\n3,red,1\n"


def test_the_interface_is_evaluated_on_test_data(make_repo: GitRepo, deliverer: Deliverer) -> None:
    repo = make_repo(
        {
            "modelci.yaml": "model:\n  name: counted\n  interface: main\n"
            "  training_data: data/train.csv\n  target: label\n  test_data: data/test.csv\n",
            "main.py": COUNTING_INTERFACE,
            "data/train.csv": DATA,
            "data/test.csv": TEST_DATA,
        }
    )
    result = deliverer.deliver(str(repo), "HEAD", actor="alice")
    assert result.error is None, result.error
    assert result.metrics["trained_on"] == 10
    assert result.metrics["evaluated_on"] == 3
    assert result.metrics["accuracy"] == pytest.approx(2 / 3)


# -- method and input_example ---------------------------------------------------------------

LABELER = """\
class Labeler:
    def predict(self, frame):
        raise RuntimeError("serving must call the method modelci.yaml names")

    def label(self, frame):
        return ["big" if float(x) > 5 else "small" for x in frame["x"]]
"""
TRAIN_LABELER = """\
import json, pickle
from labeler import Labeler
pickle.dump(Labeler(), open("model.pkl", "wb"))
json.dump({"accuracy": 1.0}, open("metrics.json", "w"))
"""
EXAMPLE = [{"x": 7, "color": "blue"}, {"x": 0, "color": "red"}]


def labeler_repo(make_repo: GitRepo, model: str) -> Path:
    return make_repo(
        {
            "modelci.yaml": "train: python train.py\nmetrics: metrics.json\nmodel:\n" + model,
            "train.py": TRAIN_LABELER,
            "labeler.py": LABELER,
            "data/train.csv": DATA,
            "example.json": json.dumps(EXAMPLE),
        }
    )


def test_method_and_input_example_reach_the_registered_model(
    make_repo: GitRepo, deliverer: Deliverer
) -> None:
    import mlflow.pyfunc
    import pandas

    model = (
        "  name: labeler\n  artifact: model.pkl\n  training_data: data/train.csv\n"
        "  target: label\n  input_example: example.json\n  method: label\n"
    )
    result = deliverer.deliver(str(labeler_repo(make_repo, model)), "HEAD", actor="alice")
    assert result.error is None, result.error
    model_dir, spec = registered_spec(deliverer, "labeler")
    assert spec.method == "label"
    # input_example wins over the training data's first rows; columns still come from it.
    assert spec.input_example == EXAMPLE
    assert [c.name for c in spec.columns] == ["x", "color"]
    assert json.loads((model_dir / "input_example.json").read_text())["data"] == [
        [7, "blue"],
        [0, "red"],
    ]
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    assert list(loaded.predict(pandas.DataFrame(EXAMPLE))) == ["big", "small"]


def test_without_training_data_the_input_example_gives_the_columns(
    make_repo: GitRepo, deliverer: Deliverer
) -> None:
    model = "  name: bare\n  artifact: model.pkl\n  input_example: example.json\n  method: label\n"
    result = deliverer.deliver(str(labeler_repo(make_repo, model)), "HEAD", actor="alice")
    assert result.error is None, result.error
    _, spec = registered_spec(deliverer, "bare")
    assert [(c.name, c.type) for c in spec.columns] == [("x", "long"), ("color", "string")]
    assert spec.input_example == EXAMPLE


def test_without_either_the_first_five_training_rows_are_the_example(
    make_repo: GitRepo, deliverer: Deliverer
) -> None:
    model = "  name: rows\n  artifact: model.pkl\n  training_data: data/train.csv\n"
    model += "  target: label\n"
    result = deliverer.deliver(str(labeler_repo(make_repo, model)), "HEAD", actor="alice")
    assert result.error is None, result.error
    _, spec = registered_spec(deliverer, "rows")
    assert spec.method == "predict"  # the default
    assert spec.input_example == [{"x": x, "color": "red" if x % 2 else "blue"} for x in range(5)]


# -- mlflow: true refuses MLflow's default skops format -------------------------------------

SKOPS_MLMODEL = """\
flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.skops
  sklearn:
    pickled_model: model.skops
    serialization_format: skops
    sklearn_version: 1.5.0
"""


def test_a_model_logged_in_skops_format_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(SKOPS_MLMODEL)
    (tmp_path / "model.skops").write_bytes(b"PK\x03\x04")
    with pytest.raises(ConfigError, match=r"serialization format: skops") as refused:
        _logged_sklearn(tmp_path)
    assert "serialization_format='cloudpickle'" in (refused.value.hint or "")
    # The same model in cloudpickle format is taken.
    (tmp_path / "MLmodel").write_text(
        SKOPS_MLMODEL.replace("skops", "cloudpickle").replace("model.cloudpickle", "model.pkl")
    )
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04N.")
    assert _logged_sklearn(tmp_path)[:2] == ("cloudpickle", "model.pkl")
