"""Metrics files merged into one run's metrics (dvc.yaml pipelines, lists in modelci.yaml)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelci.errors import OutputError
from modelci.evaluate.metricfiles import read_metrics


def write(workdir: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(text)


def test_json_and_yaml_files_merge_their_names(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "metrics.json": '{"accuracy": 0.9, "train": {"loss": 0.3}}',
            "eval/scores.yaml": "f1: 0.8\nval:\n  auc: 0.95\n",
        },
    )
    read = read_metrics(tmp_path, ["metrics.json", "eval/scores.yaml"], max_bytes=10_000)
    assert read.metrics == {"accuracy": 0.9, "train.loss": 0.3, "f1": 0.8, "val.auc": 0.95}
    assert read.notes == ()


def test_a_name_in_two_files_is_kept_from_each_with_its_file_and_said(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "metrics.json": '{"accuracy": 0.9, "loss": 0.2}',
            "eval.yml": "accuracy: 0.7\nrecall: 0.5\n",
        },
    )
    read = read_metrics(tmp_path, ["metrics.json", "eval.yml"], max_bytes=10_000)
    assert read.metrics == {
        "metrics.json:accuracy": 0.9,
        "eval.yml:accuracy": 0.7,
        "loss": 0.2,
        "recall": 0.5,
    }
    assert read.notes == (
        "accuracy is in metrics.json and eval.yml: kept as metrics.json:accuracy, "
        "eval.yml:accuracy",
    )


def test_one_file_reads_as_before(tmp_path: Path) -> None:
    # The seed tutorial's result.txt: JSON (or a Python dict) whatever its suffix.
    write(tmp_path, {"result.txt": "{'accuracy': 0.5}"})
    assert read_metrics(tmp_path, ["result.txt"], max_bytes=10_000).metrics == {"accuracy": 0.5}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a.json": "{}", "b.yaml": "acc: [1, 2\n"}, "b.yaml is not valid YAML"),
        ({"a.json": "{}", "b.yaml": "- 1\n- 2\n"}, "b.yaml holds a list"),
        ({"a.json": "{}", "b.yaml": "acc: high\n"}, "b.yaml: metric values must be numbers"),
        ({"a.json": "{}"}, "b.yaml"),  # missing: named
    ],
)
def test_a_bad_file_is_named(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    write(tmp_path, files)
    with pytest.raises(OutputError) as info:
        read_metrics(tmp_path, ["a.json", "b.yaml"], max_bytes=10_000)
    assert expected in str(info.value)


def test_a_yaml_file_that_links_out_of_the_work_dir_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("token: 1\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    os.symlink(secret, workdir / "m.yaml")
    with pytest.raises(OutputError, match=r"m\.yaml"):
        read_metrics(workdir, ["m.yaml"], max_bytes=10_000)
