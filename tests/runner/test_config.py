from __future__ import annotations

import pytest

from modelci.errors import ConfigError
from modelci.runner.config import Overrides, effective_config, parse_config

MINIMAL = "train: python train.py\nmetrics: metrics.json\n"


def test_minimal_config_has_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.commands() == ["python train.py"]
    assert config.limits.timeout == 1800
    assert config.install.requirements is None


def test_full_config_with_units_and_shorthand() -> None:
    config = parse_config(
        MINIMAL
        + "evaluate: [python eval.py, python report.py]\n"
        + "gates:\n  accuracy: higher\n  loss: {direction: lower, tolerance: 0.1, gate: false}\n"
        + "limits: {timeout: 10m, memory_mb: 2GB, disk_mb: 512MB}\n"
    )
    assert config.commands() == ["python train.py", "python eval.py", "python report.py"]
    assert config.gates["accuracy"].direction == "higher"
    assert config.gates["loss"].gate is False
    assert config.limits.timeout == 600
    assert config.limits.memory_mb == 2048
    assert config.limits.disk_mb == 512


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: [a\n", "not valid YAML"),
        ("trian: x\nmetrics: m.json\n", "line 1: unknown field 'trian'; did you mean 'train'?"),
        (MINIMAL + "limits:\n  timeout: forever\n", "line 4: field 'limits.timeout'"),
        ("train: x\nmetrics: /etc/passwd\n", "line 2: field 'metrics'"),
        ("train: x\nmetrics: ../../secret\n", "inside the repository"),
        ("- a\n", "expected a mapping"),
        (MINIMAL + "gates:\n  acc: {direction: up}\n", "line 4: field 'gates.acc.direction'"),
        (MINIMAL + "limits:\n  memroy_mb: 1\n", "did you mean 'memory_mb'"),
        ("metrics: m.json\n", "required field 'train' is missing"),
        ("train: x\nmetrics: [a.json, ../b.json]\n", "line 2: field 'metrics'"),
        ("train: x\nmetrics: []\n", "name at least one metrics file"),
        ("train: x\nmetrics: 5\n", "give a metrics file (metrics: metrics.json) or a list"),
        ("", "expected a mapping"),
    ],
)
def test_broken_config_names_line_and_fix(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert expected in str(info.value)
    assert "How to fix" in str(info.value)


def test_huge_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="more than"):
        parse_config("a: " + "x" * 300_000)


def test_no_config_needs_command_and_metrics_file() -> None:
    with pytest.raises(ConfigError, match="--metrics-file"):
        effective_config(None, Overrides(command="python demo.py"))
    config = effective_config(None, Overrides(command="python demo.py", metrics_file="result.txt"))
    assert config.commands() == ["python demo.py"]
    assert config.metrics == "result.txt"


def test_overrides_win_over_the_file() -> None:
    config = effective_config(MINIMAL.encode(), Overrides(command="python other.py", timeout_s=5))
    assert config.commands() == ["python other.py"]
    assert config.limits.timeout == 5


def test_digest_is_stable_and_sensitive() -> None:
    assert parse_config(MINIMAL).digest() == parse_config(MINIMAL).digest()
    assert (
        parse_config(MINIMAL).digest() != parse_config(MINIMAL + "predictions: p.json\n").digest()
    )


@pytest.mark.parametrize("value", ["0", "-1", "lots", "true", "2.5", "21"])
def test_repeats_must_be_a_whole_number_of_runs_or_auto(value: str) -> None:
    with pytest.raises(ConfigError, match=r"line 3: field 'repeats'.*or auto"):
        parse_config(f"train: python t.py\nmetrics: m.json\nrepeats: {value}\n")


def test_repeats_defaults_to_auto_and_does_not_change_a_runs_cache_key() -> None:
    text = "train: python t.py\nmetrics: m.json\n"
    assert parse_config(text).repeats == "auto"
    assert parse_config(text + "repeats: 3\n").repeats == 3
    assert parse_config(text + "repeats: 3\n").digest() == parse_config(text).digest()


def test_several_metrics_files_are_a_list() -> None:
    config = parse_config("train: python train.py\nmetrics: [metrics.json, eval/scores.yaml]\n")
    assert config.metrics_files() == ("metrics.json", "eval/scores.yaml")
    assert parse_config(MINIMAL).metrics_files() == ("metrics.json",)
    # One file keeps the digest it had: stored results stay reusable.
    assert parse_config(MINIMAL).model_dump(mode="json")["metrics"] == "metrics.json"
