"""Hostile YAML from a repository is an error, never a crash of modelci."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from modelci import safeyaml

DEEP = "[" * 60_000  # 60 KB: libyaml's composer recursed until the process died


def test_a_deeply_nested_document_is_a_yaml_error() -> None:
    with pytest.raises(yaml.YAMLError, match="nests deeper than 100 levels"):
        safeyaml.load(DEEP)
    value = safeyaml.load("{a: " * 100 + "1" + "}" * 100)  # at the limit: loaded
    for _ in range(99):
        value = value["a"]
    assert value == {"a": 1}
    with pytest.raises(yaml.YAMLError, match="nests deeper"):
        safeyaml.load("{a: " * 101 + "1" + "}" * 101)


@pytest.mark.parametrize(
    "code",
    [
        # Each in a process of its own: a regression kills that process, not the tests.
        "from modelci.runner.config import parse_config; parse_config(DEEP)",
        "from modelci.data.pipeline import pipeline_config; "
        "pipeline_config(lambda path: DEEP.encode() if path == 'dvc.yaml' else None)",
    ],
    ids=["modelci.yaml", "dvc.yaml"],
)
def test_a_hostile_config_is_a_config_error_not_a_segfault(code: str) -> None:
    script = f"DEEP = '[' * 60_000\n{code}"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr[-2000:]  # an exception, not a signal
    assert "ConfigError" in done.stderr
    assert "nests deeper than 100 levels" in done.stderr
