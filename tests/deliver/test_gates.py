from __future__ import annotations

from modelci.deliver.gates import decide
from modelci.runner.config import FloorConfig, MetricConfig, parse_config

GATES = {
    "accuracy": MetricConfig(direction="higher", tolerance=0.002),
    "loss": MetricConfig(direction="lower"),
}


def test_first_version_is_promoted_when_it_meets_the_floors() -> None:
    decision = decide({"accuracy": 0.95}, None, GATES, {"accuracy": FloorConfig(min=0.9)})
    assert decision.promote
    assert any("no champion" in c for c in decision.checks)


def test_first_version_below_a_floor_is_refused_with_the_numbers() -> None:
    decision = decide({"accuracy": 0.91}, None, GATES, {"accuracy": FloorConfig(min=0.93)})
    assert not decision.promote
    assert decision.reasons == ["accuracy 0.91 < floor 0.93"]


def test_ceiling_and_missing_floor_metric() -> None:
    floors = {"loss": FloorConfig(max=0.5), "f1": FloorConfig(min=0.1)}
    decision = decide({"loss": 0.7}, None, {}, floors)
    assert not decision.promote
    assert decision.reasons == ["loss 0.7 > ceiling 0.5", "f1 is missing (a floor is set on it)"]


def test_within_tolerance_is_promoted() -> None:
    decision = decide({"accuracy": 0.899, "loss": 0.3}, {"accuracy": 0.9, "loss": 0.3}, GATES, {})
    assert decision.promote, decision.reasons


def test_drop_beyond_tolerance_is_refused() -> None:
    decision = decide({"accuracy": 0.89, "loss": 0.3}, {"accuracy": 0.9, "loss": 0.3}, GATES, {})
    assert not decision.promote
    assert decision.reasons == ["accuracy 0.89 dropped below the champion's 0.9 by more than 0.002"]


def test_loss_must_not_rise() -> None:
    decision = decide({"accuracy": 0.9, "loss": 0.31}, {"accuracy": 0.9, "loss": 0.3}, GATES, {})
    assert decision.reasons == ["loss 0.31 rose above the champion's 0.3"]


def test_default_direction_from_the_name_and_unknown_direction() -> None:
    gates = {"val_loss": MetricConfig(), "widgets": MetricConfig()}
    decision = decide({"val_loss": 0.2, "widgets": 3}, {"val_loss": 0.1, "widgets": 3}, gates, {})
    assert decision.reasons == [
        "val_loss 0.2 rose above the champion's 0.1",
        "widgets: no direction known; set direction: higher or lower",
    ]


def test_informational_metric_and_missing_candidate_metric() -> None:
    gates = {"accuracy": MetricConfig(direction="higher", gate=False), "auc": MetricConfig()}
    decision = decide({"accuracy": 0.1}, {"accuracy": 0.9, "auc": 0.8}, gates, {})
    assert decision.reasons == ["auc is missing (the champion has it gated)"]


def test_promotion_gates_default_to_the_top_level_gates() -> None:
    config = parse_config("train: t\nmetrics: m\ngates:\n  accuracy: higher\n")
    assert config.promotion_gates() == {"accuracy": MetricConfig(direction="higher")}
    config = parse_config(
        "train: t\nmetrics: m\ngates:\n  accuracy: higher\n"
        "promotion:\n  gates:\n    loss: {direction: lower, tolerance: 0.01}\n"
        "  floors:\n    accuracy: {min: 0.8}\n"
    )
    assert list(config.promotion_gates()) == ["loss"]
    assert config.promotion.floors["accuracy"].min == 0.8
