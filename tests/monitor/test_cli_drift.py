"""``modelci drift REFERENCE CURRENT``: exit codes, the report, JSON, settings, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from click.testing import CliRunner

from modelci.cli import cli


def write(tmp_path: Path, name: str, rows: int, shift: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "age": rng.normal(40 + shift * 10, 10, rows),
            "plan": pa.array(rng.choice(["free", "pro", "team"], rows)),
            "visits": rng.integers(0, 100, rows) + int(shift * 20),
        }
    )
    path = tmp_path / name
    if name.endswith(".csv"):
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["drift", *args])
    return result.exit_code, result.output


def test_no_drift_exits_0_and_drift_exits_1_with_a_report(tmp_path: Path) -> None:
    reference = write(tmp_path, "ref.parquet", 3000, 0.0, 1)
    same = write(tmp_path, "same.csv", 800, 0.0, 2)
    moved = write(tmp_path, "moved.csv", 800, 1.0, 3)
    code, out = run(str(reference), str(same))
    assert code == 0, out
    assert "no dataset drift: 0 of 3 columns drifted" in out
    html = tmp_path / "drift.html"
    code, out = run(str(reference), str(moved), "--report", str(html))
    assert code == 1, out
    assert "the dataset drifts: 2 of 3 columns drifted" in out
    assert html.read_text().count("<svg") == 3


def test_json_and_columns(tmp_path: Path) -> None:
    reference = write(tmp_path, "ref.csv", 3000, 0.0, 1)
    moved = write(tmp_path, "moved.parquet", 800, 1.0, 3)
    code, out = run(str(reference), str(moved), "--format", "json", "--column", "age")
    assert code == 1
    data = json.loads(out)
    assert [col["name"] for col in data["columns"]] == ["age"]
    assert data["columns"][0]["test"] == "wasserstein" and data["dataset_drifted"]
    assert "distribution" not in data["columns"][0]


def test_settings_file_overrides_a_column(tmp_path: Path) -> None:
    reference = write(tmp_path, "ref.csv", 3000, 0.0, 1)
    moved = write(tmp_path, "moved.csv", 800, 1.0, 3)
    settings = tmp_path / "modelci.yaml"
    settings.write_text("monitoring:\n  drift_share: 0.9\n  columns:\n    age: {skip: true}\n")
    code, out = run(str(reference), str(moved), "--settings", str(settings), "--format", "json")
    assert code == 0, out
    data = json.loads(out)
    assert data["skipped"][0]["name"] == "age" and data["drift_share"] == 0.9
    settings.write_text("monitoring:\n  columns:\n    age: {test: psi}\n")
    code, out = run(str(reference), str(moved), "--settings", str(settings))
    assert code == 2
    assert "monitoring.columns.age.test" in out and "How to fix" in out


def test_bad_input_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    reference = write(tmp_path, "ref.csv", 50, 0.0, 1)
    code, out = run(str(reference), str(tmp_path / "missing.csv"))
    assert code == 2 and "does not exist" in out and "Traceback" not in out
    other = tmp_path / "other.csv"
    other.write_text("age,plan\n1,a\n")
    code, out = run(str(reference), str(other))
    assert code == 2 and "no column 'visits'" in out
    code, out = run(str(reference), str(reference), "--max-rows", "10")
    assert code == 2 and "more than the 10 drift reads" in out
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    code, out = run(str(broken), str(reference))
    assert code == 2 and "not a readable PARQUET file" in out
