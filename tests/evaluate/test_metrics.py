from __future__ import annotations

import pytest

from modelci.errors import OutputError
from modelci.evaluate.metrics import default_direction, flatten_metrics


def test_nested_keys_are_joined_with_dots_like_dvc() -> None:
    data = {
        "train": {"loss": 0.1, "acc": 0.9},
        "test": {"f1": 0.8, "per_class": [0.7, 0.9]},
        "n": 3,
    }
    assert flatten_metrics(data, source="m.json") == {
        "train.loss": 0.1,
        "train.acc": 0.9,
        "test.f1": 0.8,
        "test.per_class.0": 0.7,
        "test.per_class.1": 0.9,
        "n": 3.0,
    }


def test_numbers_in_strings_are_accepted() -> None:
    assert flatten_metrics({"accuracy": "0.93", "recall": "85%"}, source="r") == {
        "accuracy": 0.93,
        "recall": 0.85,
    }


def test_a_value_that_is_not_a_number_is_an_error_naming_key_and_file() -> None:
    # Skipped, these showed up as "missing in head ... regressed": the file is what is wrong.
    with pytest.raises(OutputError) as caught:
        flatten_metrics({"accuracy": "high", "loss": None}, source="metrics.json")
    text = str(caught.value)
    assert text.startswith("metrics.json: metric values must be numbers")
    assert 'accuracy is "high"' in text
    assert "loss is null" in text
    assert "How to fix:" in text


@pytest.mark.parametrize("value", [True, False, {"deeper": "word"}, ["x"]])
def test_booleans_and_nested_words_are_errors_too(value: object) -> None:
    with pytest.raises(OutputError, match=r"m\.json: metric values must be numbers, but test"):
        flatten_metrics({"test": value}, source="m.json")


def test_nan_and_infinity_are_kept_for_the_comparison_to_judge() -> None:
    values = flatten_metrics(
        {"accuracy": float("nan"), "loss": float("inf"), "f1": "-inf"}, source="m"
    )
    assert set(values) == {"accuracy", "loss", "f1"}
    assert values["accuracy"] != values["accuracy"]
    assert values["loss"] == float("inf") and values["f1"] == float("-inf")


@pytest.mark.parametrize("data", [[1, 2], "text", 3, None])
def test_top_level_must_be_an_object(data: object) -> None:
    with pytest.raises(OutputError, match="not an object of metrics"):
        flatten_metrics(data, source="m.json")


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("accuracy", "higher"),
        ("val_accuracy", "higher"),
        ("test.f1_score", "higher"),
        ("roc_auc", "higher"),
        ("r2", "higher"),
        ("eval.precision", "higher"),
        ("loss", "lower"),
        ("val_loss", "lower"),
        ("log_loss", "lower"),
        ("rmse", "lower"),
        ("train-mae", "lower"),
        ("error_rate", "lower"),
        ("wer", "lower"),
        ("epochs", None),
        ("train_time_s", None),
        ("n_features", None),
    ],
)
def test_default_directions(name: str, direction: str | None) -> None:
    assert default_direction(name) == direction
