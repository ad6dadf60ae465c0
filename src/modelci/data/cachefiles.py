"""Reading a repository's DVC cache for the report: manifests, sizes, row counts.

The cache (``data.fetch``: one per repository, written only by the fetch
sandbox) holds each object under its md5, ``files/md5/ab/cdef…`` (DVC 3; DVC 2
used ``ab/cdef…``). Objects are opened without following a symlink and must be
regular files. CSV rows are counted by streaming newlines (minus the header
line; a quoted field with a newline counts twice), Parquet rows come from the
file's metadata (``scoring.tables``, the one reader of pyarrow). Counting is
capped in bytes per evaluation, so a change with many large files costs
bounded time.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

from modelci.data.changes import NOT_CACHED, RowCount
from modelci.errors import ModelCIError

__all__ = ["DvcCacheFiles", "count_csv_rows"]

GB = 1 << 30
_MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
_BLOCK = 1 << 20
_PARQUET_MAGIC = b"PAR1"


def count_csv_rows(fd: int) -> int:
    """Lines of an open file after its header line, read in blocks."""
    lines, last = 0, b"\n"
    while block := os.read(fd, _BLOCK):
        lines += block.count(b"\n")
        last = block[-1:]
    if last != b"\n":  # a last line without its newline is a row too
        lines += 1
    return max(0, lines - 1)


class DvcCacheFiles:
    """The objects of one DVC cache directory, read for the report (a ``CacheReader``)."""

    def __init__(
        self, root: Path, *, count_budget: int = 2 * GB, max_manifest_bytes: int = 16 << 20
    ) -> None:
        self.root = root
        self.count_budget = count_budget  # bytes of CSV still to count
        self.max_manifest_bytes = max_manifest_bytes
        self._rows: dict[tuple[str, bool], RowCount] = {}

    def _paths(self, md5: str) -> tuple[Path, ...]:
        if not _MD5.match(md5):
            return ()
        return (self.root / "files" / "md5" / md5[:2] / md5[2:], self.root / md5[:2] / md5[2:])

    def _open(self, md5: str) -> tuple[int, int] | None:
        """An open descriptor and the size of the object, None when it is not cached."""
        for path in self._paths(md5):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode):
                return fd, info.st_size
            os.close(fd)
        return None

    def object_path(self, md5: str) -> Path | None:
        """Where a cached file is (a regular file, not a link), None when it is not cached."""
        for path in self._paths(md5):
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    return path
        return None

    def manifest(self, md5: str) -> bytes | None:
        opened = self._open(md5) if md5.endswith(".dir") else None
        if opened is None:
            return None
        fd, size = opened
        try:
            if size > self.max_manifest_bytes:
                # Parsed whole: a bigger list would cost this process hundreds of MB.
                raise ValueError(f"is over the {self.max_manifest_bytes:,} bytes read")
            return os.read(fd, size)
        except OSError as exc:
            raise ValueError(f"could not be read: {exc.strerror}") from None
        finally:
            os.close(fd)

    def size(self, md5: str) -> int | None:
        opened = self._open(md5)
        if opened is None:
            return None
        os.close(opened[0])
        return opened[1]

    def rows(self, md5: str, relpath: str) -> RowCount:
        # The same object may be several files: counted once (per what its name says it is).
        key = (md5, _parquet_name(relpath))
        if key not in self._rows:
            self._rows[key] = self._count(md5, parquet=key[1])
        return self._rows[key]

    def _count(self, md5: str, *, parquet: bool) -> RowCount:
        opened = self._open(md5)
        if opened is None:
            return RowCount(None, NOT_CACHED)
        fd, size = opened
        try:
            if os.pread(fd, 4, 0) == _PARQUET_MAGIC:
                return _parquet_rows(fd)
            if parquet:
                return RowCount(None, "not a Parquet file")
            if size > self.count_budget:
                return RowCount(None, "not counted: over the bytes counted per evaluation")
            self.count_budget -= size
            return RowCount(count_csv_rows(fd))
        except OSError as exc:
            return RowCount(None, f"unreadable: {exc.strerror}")
        finally:
            os.close(fd)


def _parquet_name(relpath: str) -> bool:
    return relpath.lower().endswith((".parquet", ".pq"))


def _parquet_rows(fd: int) -> RowCount:
    from modelci.scoring.tables import inspect_table

    try:
        # Through the descriptor already checked: no second lookup by name.
        return RowCount(inspect_table(Path(f"/proc/self/fd/{fd}"), name="the file").rows)
    except ModelCIError as exc:
        return RowCount(None, f"unreadable: {exc.message}")
