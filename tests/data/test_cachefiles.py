"""Reading a DVC cache for the report: real files in DVC's layouts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

from modelci.data.cachefiles import DvcCacheFiles, count_csv_rows
from modelci.data.changes import NOT_CACHED, RowCount


def put(cache: Path, content: bytes, *, legacy: bool = False, suffix: str = "") -> str:
    """Store content as DVC does, under its md5; the md5 (with suffix, e.g. .dir)."""
    md5 = hashlib.md5(content).hexdigest() + suffix
    folder = cache / md5[:2] if legacy else cache / "files" / "md5" / md5[:2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / md5[2:]).write_bytes(content)
    return md5


@pytest.mark.parametrize(
    ("content", "rows"),
    [
        (b"", 0),
        (b"x,label\n", 0),
        (b"x,label", 0),
        (b"x,label\n1,0\n2,1\n", 2),
        (b"x,label\r\n1,0\r\n2,1", 2),  # no newline after the last row
    ],
)
def test_csv_rows_are_lines_after_the_header(tmp_path: Path, content: bytes, rows: int) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert count_csv_rows(fd) == rows
    finally:
        os.close(fd)


def test_rows_of_csv_and_parquet_objects(tmp_path: Path) -> None:
    csv = put(tmp_path, b"x,label\n" + b"1,0\n" * 2_500_000)  # more than one read block
    parquet_file = tmp_path / "t.parquet"
    pd.DataFrame({"x": range(1234)}).to_parquet(parquet_file)
    parquet = put(tmp_path, parquet_file.read_bytes(), legacy=True)  # DVC 2's layout
    cache = DvcCacheFiles(tmp_path)

    assert cache.rows(csv, "data/big.csv") == RowCount(2_500_000)
    assert cache.rows(parquet, "data/t.parquet") == RowCount(1234)
    assert cache.size(csv) == len(b"x,label\n") + 4 * 2_500_000


def test_objects_that_are_not_there_or_not_regular_files_are_not_cached(tmp_path: Path) -> None:
    target = tmp_path / "secret.csv"
    target.write_text("a\n1\n2\n")
    md5 = "ab" + "0" * 30
    (tmp_path / "files" / "md5" / "ab").mkdir(parents=True)
    (tmp_path / "files" / "md5" / "ab" / ("0" * 30)).symlink_to(target)
    cache = DvcCacheFiles(tmp_path)

    assert cache.rows(md5, "x.csv") == RowCount(None, NOT_CACHED)
    assert cache.size(md5) is None
    assert cache.rows("cd" + "0" * 30, "x.csv") == RowCount(None, NOT_CACHED)
    assert cache.size("../../secret") is None  # not an md5: never a path


def test_a_parquet_name_on_other_bytes_and_the_counting_budget(tmp_path: Path) -> None:
    fake = put(tmp_path, b"a,b\n1,2\n")
    big = put(tmp_path, b"h\n" + b"1\n" * 1000)
    cache = DvcCacheFiles(tmp_path, count_budget=1000)

    assert cache.rows(fake, "t.parquet") == RowCount(None, "not a Parquet file")
    assert cache.rows(big, "big.csv") == RowCount(
        None, "not counted: over the bytes counted per evaluation"
    )
    assert cache.rows(fake, "small.csv") == RowCount(1)


def test_manifests_are_read_whole_under_their_cap(tmp_path: Path) -> None:
    listing = b'[{"md5": "' + b"a" * 32 + b'", "relpath": "x.csv"}]'
    md5 = put(tmp_path, listing, suffix=".dir")

    assert DvcCacheFiles(tmp_path).manifest(md5) == listing
    with pytest.raises(ValueError, match="is over the 10 bytes read"):
        DvcCacheFiles(tmp_path, max_manifest_bytes=10).manifest(md5)
    assert DvcCacheFiles(tmp_path).manifest(md5.removesuffix(".dir")) is None
