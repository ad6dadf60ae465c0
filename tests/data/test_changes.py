"""The data a change replaces, from two commits' DVC pointer files and a cache."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from modelci.data.changes import (
    MAX_FILES_LISTED,
    NOT_CACHED,
    DataChanges,
    RowCount,
    data_changes,
    pointer_outs,
)
from modelci.errors import CheckoutError

A, B, C, D = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)


@dataclass
class FakeCache:
    """A cache held in dicts: rows and sizes per md5, manifests per .dir md5."""

    rows_of: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    manifests: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def manifest(self, md5: str) -> bytes | None:
        self.asked.append(md5)
        entries = self.manifests.get(md5)
        return None if entries is None else json.dumps(entries).encode()

    def size(self, md5: str) -> int | None:
        self.asked.append(md5)
        return self.sizes.get(md5)

    def rows(self, md5: str, relpath: str) -> RowCount:
        self.asked.append(md5)
        if md5 not in self.rows_of:
            return RowCount(None, NOT_CACHED)
        return RowCount(self.rows_of[md5])


def dvc_file(md5: str, size: int, path: str = "data.csv", **more: object) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in more.items())
    return f"outs:\n- md5: {md5}\n  size: {size}\n  hash: md5\n  path: {path}\n{extra}"


def compare(
    base: dict[str, str], head: dict[str, str], cache: FakeCache | None = None
) -> DataChanges:
    pointers = sorted({*base, *head})
    return data_changes(
        pointers,
        lambda p: base[p].encode() if p in base else None,
        lambda p: head[p].encode() if p in head else None,
        cache or FakeCache(),
    )


def test_a_new_version_of_a_csv_file_shows_size_hash_and_rows_before_and_after() -> None:
    cache = FakeCache(rows_of={A: 100, B: 250})
    result = compare(
        {"data/data.csv.dvc": dvc_file(A, 1000)},
        {"data/data.csv.dvc": dvc_file(B, 2500)},
        cache,
    )
    assert result.notes == ()
    (change,) = result.changes
    assert (change.path, change.status, change.source) == (
        "data/data.csv",
        "modified",
        "data/data.csv.dvc",
    )
    assert change.as_json() == {
        "path": "data/data.csv",
        "status": "modified",
        "kind": "file",
        "source": "data/data.csv.dvc",
        "old": {"md5": A, "size": 1000, "nfiles": None, "rows": 100, "rows_unknown": None},
        "new": {"md5": B, "size": 2500, "nfiles": None, "rows": 250, "rows_unknown": None},
        "files": [],
        "more_files": 0,
        "note": None,
    }


def test_rows_of_data_not_in_the_cache_are_unknown_and_say_why() -> None:
    result = compare({"d.csv.dvc": dvc_file(A, 1, "d.csv")}, {"d.csv.dvc": dvc_file(B, 2, "d.csv")})
    (change,) = result.changes
    assert change.old is not None and change.old.rows == RowCount(None, NOT_CACHED)
    assert change.new is not None and change.new.rows == RowCount(None, NOT_CACHED)


def test_only_csv_and_parquet_files_have_rows() -> None:
    cache = FakeCache(rows_of={A: 1, B: 2})
    result = compare(
        {"m.dvc": dvc_file(A, 1, "model.pkl")}, {"m.dvc": dvc_file(B, 2, "model.pkl")}, cache
    )
    (change,) = result.changes
    assert change.old is not None and change.old.rows is None
    assert cache.asked == []


def test_added_and_removed_pointers() -> None:
    cache = FakeCache(rows_of={A: 10, B: 20})
    result = compare(
        {"old.parquet.dvc": dvc_file(A, 5, "old.parquet")},
        {"new.parquet.dvc": dvc_file(B, 6, "new.parquet")},
        cache,
    )
    assert [(c.path, c.status) for c in result.changes] == [
        ("new.parquet", "added"),
        ("old.parquet", "removed"),
    ]
    added, removed = result.changes
    assert added.old is None and added.new is not None and added.new.rows == RowCount(20)
    assert removed.new is None and removed.old is not None and removed.old.rows == RowCount(10)


def test_a_pointer_that_changed_around_the_same_data_lists_nothing() -> None:
    result = compare({"d.dvc": dvc_file(A, 5)}, {"d.dvc": dvc_file(A, 5, desc="'now described'")})
    assert result.changes == ()


def test_dvc_lock_outputs_are_compared_by_stage_output() -> None:
    lock = """\
schema: '2.0'
stages:
  prepare:
    cmd: python prepare.py
    deps:
    - path: raw.csv
      md5: {dep}
    outs:
    - path: data/prepared.csv
      md5: {out}
      size: {size}
"""
    cache = FakeCache(rows_of={A: 3, B: 4})
    result = compare(
        {"dvc.lock": lock.format(dep=C, out=A, size=30)},
        {"dvc.lock": lock.format(dep=D, out=B, size=40)},
        cache,
    )
    (change,) = result.changes
    assert (change.path, change.source) == ("data/prepared.csv", "dvc.lock")
    assert change.old is not None and change.old.rows == RowCount(3)


def manifest(files: dict[str, str]) -> list[dict[str, str]]:
    return [{"md5": md5, "relpath": path} for path, md5 in files.items()]


def test_a_directory_lists_the_files_inside_that_changed() -> None:
    cache = FakeCache(
        rows_of={B: 7, C: 9},
        sizes={A: 10, B: 20, C: 30},
        manifests={
            "1" * 32 + ".dir": manifest({"same.csv": A, "changed.csv": B, "gone.bin": D}),
            "2" * 32 + ".dir": manifest({"same.csv": A, "changed.csv": C, "new.txt": D}),
        },
    )
    result = compare(
        {"images.dvc": dvc_file("1" * 32 + ".dir", 100, "images", nfiles=3)},
        {"images.dvc": dvc_file("2" * 32 + ".dir", 120, "images", nfiles=3)},
        cache,
    )
    (change,) = result.changes
    assert change.directory
    assert change.old is not None and change.old.nfiles == 3
    assert [(f.path, f.status) for f in change.files] == [
        ("images/changed.csv", "modified"),
        ("images/gone.bin", "removed"),
        ("images/new.txt", "added"),
    ]
    changed = change.files[0]
    assert changed.old is not None and changed.new is not None
    assert (changed.old.size, changed.new.size) == (20, 30)
    assert (changed.old.rows, changed.new.rows) == (RowCount(7), RowCount(9))
    assert change.more_files == 0


def test_a_directory_listing_is_capped() -> None:
    many = {f"f{i:03d}.bin": "e" * 32 for i in range(MAX_FILES_LISTED + 15)}
    cache = FakeCache(manifests={"1" * 32 + ".dir": manifest(many)})
    result = compare({}, {"dir.dvc": dvc_file("1" * 32 + ".dir", 1, "dir")}, cache)
    (change,) = result.changes
    assert change.status == "added"
    assert len(change.files) == MAX_FILES_LISTED
    assert change.more_files == 15


def test_a_directory_whose_file_list_is_not_cached_says_so() -> None:
    result = compare(
        {"dir.dvc": dvc_file("1" * 32 + ".dir", 1, "dir")},
        {"dir.dvc": dvc_file("2" * 32 + ".dir", 2, "dir")},
    )
    (change,) = result.changes
    assert change.files == ()
    assert change.note == (
        f"the file list of base is {NOT_CACHED}; the file list of head is {NOT_CACHED}"
    )


def test_a_directory_whose_file_list_cannot_be_used_says_why() -> None:
    cache = FakeCache(manifests={"2" * 32 + ".dir": {"not": "a list"}})  # type: ignore[dict-item]
    result = compare(
        {"dir.dvc": dvc_file("1" * 32, 1, "dir")},  # a file at base, a directory at head
        {"dir.dvc": dvc_file("2" * 32 + ".dir", 2, "dir")},
        cache,
    )
    (change,) = result.changes
    assert change.directory
    assert change.note == "the file list of head is not a DVC file list"


def test_hostile_pointer_files_become_notes_and_never_reach_the_cache_with_a_bad_hash() -> None:
    cache = FakeCache()
    result = compare(
        {"a.dvc": "outs: [", "b.dvc": dvc_file("../../../etc/passwd", 1, "b.csv")},
        {
            "a.dvc": "- not\n- a dvc file\n",
            "b.dvc": dvc_file(B, 2, "b.csv"),
            "c.dvc": dvc_file(C, 1, "../../outside.csv"),
            "d.dvc": "[" * 250_000,
        },
        cache,
    )
    assert [(c.path, c.old and c.old.md5) for c in result.changes] == [("b.csv", None)]
    assert cache.asked == [B]
    assert result.notes == (
        "a.dvc at base is not valid YAML: did not find expected node content: its data is not "
        "compared",
        "a.dvc at head is not a DVC file: its data is not compared",
        "d.dvc at head is not valid YAML: nests deeper than 100 levels: its data is not compared",
    )


def test_a_pointer_file_too_large_for_git_is_a_note() -> None:
    def refuse(path: str) -> bytes | None:
        raise CheckoutError(f"{path} at abc1234 is over the 1048576 bytes allowed")

    result = data_changes(["big.dvc", "train.py"], refuse, refuse, FakeCache())
    assert result.changes == ()
    assert result.notes[0] == (
        "big.dvc at base could not be read: big.dvc at abc1234 is over the 1048576 bytes allowed"
    )


def test_paths_in_a_dvc_file_are_relative_to_it() -> None:
    outs = pointer_outs("sub/dir/x.dvc", dvc_file(A, 1, "x.csv").encode())
    assert [o.path for o in outs] == ["sub/dir/x.csv"]
