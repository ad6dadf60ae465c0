"""Server-held datasets: ``modelci datasets add|list|remove`` through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pandas as pd

from modelci.scoring.datasets import DatasetStore
from tests.test_cli import env, modelci

__all__ = ["env"]  # the fixture shared with test_cli

CSV = "x,colour,label\n" + "".join(
    f"{i / 10},{'red' if i % 2 else 'blue'},{i % 2}\n" for i in range(50)
)


def test_add_list_remove(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "holdout.csv"
    source.write_text(CSV)
    added = modelci(env, "datasets", "add", "holdout", str(source), "--format", "json")
    assert added.returncode == 0, added.stderr
    info = json.loads(added.stdout)
    assert info["rows"] == 50
    assert info["sha256"] == hashlib.sha256(CSV.encode()).hexdigest()
    assert info["columns"] == {"x": "double", "colour": "string", "label": "long"}
    stored = Path(info["path"])
    assert stored.read_text() == CSV
    data_dir = Path(env["MODELCI_DATA_DIR"])
    assert stored.parent == data_dir / "datasets"
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700

    frame = pd.DataFrame({"x": [0.5, 1.5, 2.5], "label": [0, 1, 1]})
    frame.to_parquet(tmp_path / "fresh.parquet")
    done = modelci(env, "datasets", "add", "fresh", str(tmp_path / "fresh.parquet"))
    assert done.returncode == 0, done.stderr
    assert "3 rows" in done.stdout

    listed = modelci(env, "datasets", "list", "--format", "json")
    assert [(d["name"], d["format"], d["rows"]) for d in json.loads(listed.stdout)] == [
        ("fresh", "parquet", 3),
        ("holdout", "csv", 50),
    ]
    table = modelci(env, "datasets", "list")
    assert "holdout" in table.stdout and "colour (string)" in table.stdout

    removed = modelci(env, "datasets", "remove", "holdout")
    assert removed.returncode == 0, removed.stderr
    assert not stored.exists()
    assert [d.name for d in DatasetStore(data_dir / "datasets").list()] == ["fresh"]


def _fails(done: object, *needles: str) -> None:
    assert done.returncode == 2, done.stdout  # type: ignore[attr-defined]
    err = done.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err
    assert "How to fix:" in err
    for needle in needles:
        assert needle in err, err


def test_bad_input_is_named_without_a_traceback(env: dict[str, str], tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(CSV)
    bad = tmp_path / "bad.csv"
    bad.write_text('x,label\n1,0\n"2,1\n')
    empty = tmp_path / "empty.csv"
    empty.write_text("x,label\n")
    _fails(modelci(env, "datasets", "add", "a", str(tmp_path / "missing.csv")), "does not exist")
    _fails(modelci(env, "datasets", "add", "a", str(bad)), "not a readable CSV file")
    _fails(modelci(env, "datasets", "add", "a", str(empty)), "has no rows")
    _fails(modelci(env, "datasets", "add", "../escape", str(good)), "not a usable dataset name")
    assert modelci(env, "datasets", "add", "a", str(good)).returncode == 0
    _fails(modelci(env, "datasets", "add", "a", str(good)), "already holds a dataset called 'a'")
    _fails(modelci(env, "datasets", "remove", "b"), "no dataset called 'b'", "held: a")
    # Nothing half-added is left behind by the failures.
    held = sorted(p.name for p in (Path(env["MODELCI_DATA_DIR"]) / "datasets").iterdir())
    assert held == ["a.csv", "index.json"]
    assert os.access(Path(env["MODELCI_DATA_DIR"]) / "datasets" / "a.csv", os.R_OK)
