"""A DVC-tracked file copied out of a repository's DVC cache, its md5 checked."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from modelci.data.cache import copy_tracked, object_relpath
from modelci.data.pointers import TrackedFile
from modelci.errors import DatasetError

ROWS = b"x,label\n0.1,0\n0.9,1\n"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def put(cache: Path, data: bytes, *, legacy: bool = False, name: str | None = None) -> str:
    digest = name or md5(data)
    path = cache / object_relpath(digest, legacy=legacy)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def tracked(md5: str, *, output: str = "data/holdout.csv", legacy: bool = False) -> TrackedFile:
    return TrackedFile("data/holdout.csv", f"{output}.dvc", output, md5, legacy)


def test_a_file_comes_out_of_the_cache_whole(tmp_path: Path) -> None:
    digest = put(tmp_path / "cache", ROWS)
    dest = tmp_path / "holdout.csv"
    assert copy_tracked(tmp_path / "cache", tracked(digest), dest, max_bytes=1000) == digest
    assert dest.read_bytes() == ROWS


def test_a_missing_object_or_cache_is_none_to_fetch(tmp_path: Path) -> None:
    dest = tmp_path / "holdout.csv"
    assert copy_tracked(tmp_path / "none", tracked(md5(ROWS)), dest, max_bytes=1000) is None
    (tmp_path / "cache").mkdir()
    assert copy_tracked(tmp_path / "cache", tracked(md5(ROWS)), dest, max_bytes=1000) is None


def test_a_file_in_a_tracked_directory_and_a_dvc2_text_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    crlf = ROWS.replace(b"\n", b"\r\n")
    inner = put(cache, crlf, legacy=True, name=md5(ROWS))  # DVC 2 summed it as LF
    manifest = json.dumps([{"md5": inner, "relpath": "holdout.csv"}]).encode()
    directory = put(cache, manifest, legacy=True, name=md5(manifest) + ".dir")
    found = TrackedFile("data/holdout.csv", "data.dvc", "data", directory, True)
    dest = tmp_path / "holdout.csv"
    assert copy_tracked(cache, found, dest, max_bytes=1000) == inner
    assert dest.read_bytes() == crlf
    other = TrackedFile("data/other.csv", "data.dvc", "data", directory, True)
    with pytest.raises(DatasetError, match=r"data/other\.csv is not in the directory data"):
        copy_tracked(cache, other, dest, max_bytes=1000)


def test_an_object_with_other_bytes_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    digest = put(cache, b"x,label\n0.1,1\n0.9,0\n", name=md5(ROWS))  # tampered with
    dest = tmp_path / "holdout.csv"
    with pytest.raises(DatasetError) as info:
        copy_tracked(cache, tracked(digest), dest, max_bytes=1000)
    assert "other bytes than its md5 says" in str(info.value)
    assert object_relpath(digest, legacy=False) in str(info.value)
    assert not dest.exists()


def test_a_linked_object_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    secret = tmp_path / "secret.csv"
    secret.write_bytes(ROWS)
    path = cache / object_relpath(md5(ROWS), legacy=False)
    path.parent.mkdir(parents=True)
    os.symlink(secret, path)
    with pytest.raises(DatasetError, match=r"cannot read data/holdout\.csv out of"):
        copy_tracked(cache, tracked(md5(ROWS)), tmp_path / "out.csv", max_bytes=1000)


def test_a_tracked_directory_is_not_a_scoring_file(tmp_path: Path) -> None:
    found = TrackedFile("data", "data.dvc", "data", md5(b"[]") + ".dir", False)
    (tmp_path / "cache").mkdir()
    with pytest.raises(DatasetError, match="is a directory DVC tracks"):
        copy_tracked(tmp_path / "cache", found, tmp_path / "out", max_bytes=1000)


def test_a_manifest_naming_a_path_instead_of_an_md5_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    manifest = json.dumps([{"md5": "../../../../../../../etc/passwd", "relpath": "h.csv"}])
    directory = put(cache, manifest.encode(), name=md5(manifest.encode()) + ".dir")
    found = TrackedFile("data/h.csv", "data.dvc", "data", directory, False)
    with pytest.raises(DatasetError, match="a directory manifest DVC does not write"):
        copy_tracked(cache, found, tmp_path / "out.csv", max_bytes=1000)
