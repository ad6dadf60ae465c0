"""Which DVC output of a commit holds a file, read from the commit's pointers."""

from __future__ import annotations

import pytest

from modelci.data.pointers import find_tracked
from modelci.errors import DatasetError

MD5 = "f69f5b72bc79a92dc70c63c9aa142e36"
DIR_MD5 = "ba5f590a99087d9bc019de7c05e29820.dir"


def reader(files: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda path: files[path].encode() if path in files else None


def test_the_dvc_file_beside_the_file() -> None:
    files = {
        "data/holdout.csv.dvc": f"outs:\n- md5: {MD5}\n  size: 4\n  hash: md5\n"
        "  path: holdout.csv\n"
    }
    found = find_tracked(reader(files), "data/holdout.csv", sha="a" * 40)
    assert found is not None
    assert (found.pointer, found.output, found.md5, found.legacy) == (
        "data/holdout.csv.dvc",
        "data/holdout.csv",
        MD5,
        False,
    )
    assert found.inner is None and found.size == 4
    # What the fetch of that one output declares, at the root.
    assert found.pointer_entry() == {
        "md5": MD5,
        "path": "data/holdout.csv",
        "hash": "md5",
        "size": 4,
    }


def test_a_file_in_a_tracked_directory_and_a_dvc2_pointer() -> None:
    files = {"data.dvc": f"outs:\n- md5: {DIR_MD5}\n  path: data\n  remote: cold\n"}
    found = find_tracked(reader(files), "data/eval/holdout.csv", sha="a" * 40)
    assert found is not None
    assert (found.output, found.inner, found.legacy, found.remote) == (
        "data",
        "eval/holdout.csv",
        True,
        "cold",
    )
    assert find_tracked(reader(files), "other/holdout.csv", sha="a" * 40) is None


def test_a_pipeline_output_in_dvc_lock() -> None:
    lock = (
        "schema: '2.0'\nstages:\n  split:\n    cmd: python split.py\n    outs:\n"
        f"    - path: data/test.csv\n      hash: md5\n      md5: {MD5}\n      size: 9\n"
    )
    found = find_tracked(reader({"dvc.lock": lock}), "data/test.csv", sha="a" * 40)
    assert found is not None and (found.pointer, found.md5) == ("dvc.lock", MD5)
    assert find_tracked(reader({"dvc.lock": lock}), "data/train.csv", sha="a" * 40) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("outs:\n- md5: ../../etc\n  path: holdout.csv\n", "without an md5 DVC could have written"),
        ("outs: [\n", "data/holdout.csv.dvc at aaaaaaa is not valid YAML"),
    ],
)
def test_a_broken_pointer_is_named(text: str, expected: str) -> None:
    with pytest.raises(DatasetError) as info:
        find_tracked(reader({"data/holdout.csv.dvc": text}), "data/holdout.csv", sha="a" * 40)
    assert expected in str(info.value)
