"""Params and data changes read from real commits: real git, real DVC, the DVC cache's files."""

from __future__ import annotations

from pathlib import Path

from modelci.data.changes import NOT_CACHED
from modelci.data.review import review_data
from modelci.runner.checkout import open_mirror
from tests.conftest import GitRepo, commit_files, git
from tests.data.dvcrepos import commit_data, csv_rows, dvc, dvc_repo


def review(repo: Path, tmp_path: Path, cache: Path, base: str = "HEAD~1") -> dict[str, object]:
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    base_sha, head_sha = mirror.resolve_many(base, "HEAD")
    return review_data(mirror, base_sha, head_sha, cache=cache).as_json()


def test_a_data_and_params_change_read_from_git_and_the_dvc_cache(tmp_path: Path) -> None:
    repo = dvc_repo(
        tmp_path / "churn",
        str(tmp_path / "remote"),
        csv_rows(ones=3, zeros=7),
        files={"params.yaml": "train:\n  lr: 0.01\n  epochs: 5\n"},
    )
    (repo / "params.yaml").write_text("train:\n  lr: 0.02\n  epochs: 5\n")
    commit_data(repo, csv_rows(ones=30, zeros=20), "more rows, faster learning")

    found = review(repo, tmp_path, cache=repo / ".dvc" / "cache")

    assert found["params_diff"] == [
        {"path": "params.yaml", "key": "train.lr", "old": 0.01, "new": 0.02, "status": "modified"}
    ]
    (change,) = found["data_changes"]  # type: ignore[misc]
    assert change["path"] == "data/data.csv"
    assert change["source"] == "data/data.csv.dvc"
    assert (change["old"]["rows"], change["new"]["rows"]) == (10, 50)
    assert change["old"]["size"] == len(csv_rows(ones=3, zeros=7))
    assert change["new"]["size"] == len(csv_rows(ones=30, zeros=20))
    assert found["data_notes"] == []


def test_data_not_fetched_is_listed_with_unknown_rows(tmp_path: Path) -> None:
    repo = dvc_repo(tmp_path / "churn", str(tmp_path / "remote"), csv_rows(ones=1, zeros=1))
    commit_data(repo, csv_rows(ones=2, zeros=2), "new data")

    found = review(repo, tmp_path, cache=tmp_path / "empty-cache")

    (change,) = found["data_changes"]  # type: ignore[misc]
    assert change["new"]["rows"] is None
    assert change["new"]["rows_unknown"] == NOT_CACHED


def test_a_directory_output_lists_its_changed_files(tmp_path: Path) -> None:
    repo = dvc_repo(tmp_path / "imgs", str(tmp_path / "remote"), csv_rows(ones=1, zeros=1))
    folder = repo / "data" / "parts"
    folder.mkdir()
    for name in ("a.csv", "b.csv", "c.bin"):
        (folder / name).write_text(csv_rows(ones=1, zeros=0))
    dvc(repo, "add", "--quiet", "data/parts")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "parts")
    (folder / "b.csv").write_text(csv_rows(ones=4, zeros=4))
    (folder / "c.bin").unlink()
    (folder / "d.csv").write_text(csv_rows(ones=2, zeros=0))
    dvc(repo, "add", "--quiet", "data/parts")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "parts changed")

    found = review(repo, tmp_path, cache=repo / ".dvc" / "cache")

    (change,) = found["data_changes"]  # type: ignore[misc]
    assert change["kind"] == "directory"
    assert (change["old"]["nfiles"], change["new"]["nfiles"]) == (3, 3)
    files = {f["path"]: f for f in change["files"]}
    assert sorted(files) == ["data/parts/b.csv", "data/parts/c.bin", "data/parts/d.csv"]
    assert files["data/parts/b.csv"]["status"] == "modified"
    assert (files["data/parts/b.csv"]["old"]["rows"], files["data/parts/b.csv"]["new"]["rows"]) == (
        1,
        8,
    )
    assert files["data/parts/c.bin"]["status"] == "removed"
    assert files["data/parts/d.csv"]["new"]["rows"] == 2


def test_without_dvc_params_yaml_still_counts_and_nothing_else_shows(
    make_repo: GitRepo, tmp_path: Path
) -> None:
    repo = make_repo({"train.py": "print(1)\n", "params.yaml": "depth: 3\n"})
    commit_files(repo, {"params.yaml": "depth: 4\n", "train.py": "print(2)\n"})
    found = review(repo, tmp_path, cache=tmp_path / "none")
    assert found["params_diff"] == [
        {"path": "params.yaml", "key": "depth", "old": 3, "new": 4, "status": "modified"}
    ]
    assert found["data_changes"] == []

    plain = make_repo({"train.py": "print(1)\n"})
    commit_files(plain, {"train.py": "print(2)\n"})
    assert review(plain, tmp_path, cache=tmp_path / "none") == {
        "params_diff": [],
        "data_changes": [],
        "data_drift": [],
        "data_notes": [],
    }


def test_the_same_commit_has_nothing_to_show(tmp_path: Path) -> None:
    repo = dvc_repo(tmp_path / "same", str(tmp_path / "remote"), csv_rows(ones=1, zeros=1))
    found = review(repo, tmp_path, cache=repo / ".dvc" / "cache", base="HEAD")
    assert found == {"params_diff": [], "data_changes": [], "data_drift": [], "data_notes": []}
