"""Which DVC-tracked data a change replaces: the outputs its pointer files move.

The pointers are the ``*.dvc`` files and ``dvc.lock`` that differ between the
two commits (an output's ``md5``, ``size``, ``nfiles``); an output whose hash
and size are the same on both sides did not change. A directory output
(``md5`` ending ``.dir``) lists the files inside that differ, from the two
``.dir`` manifests (a JSON list of ``{md5, relpath}``) in the repository's DVC
cache, at most ``MAX_FILES_LISTED`` of them. Row counts of CSV and Parquet files
come from the cached objects; the ``CacheReader`` does that I/O, so this module
only parses and compares what it is given. Pointer files come from the
repository: anything unreadable becomes a note in the report.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import yaml

from modelci import safeyaml
from modelci.errors import ModelCIError

__all__ = [
    "NOT_CACHED",
    "TABULAR",
    "CacheReader",
    "DataChange",
    "DataChanges",
    "FileVersion",
    "RowCount",
    "data_changes",
    "is_pointer",
    "pointer_outs",
]

Read = Callable[[str], bytes | None]
Status = Literal["added", "removed", "modified"]

MAX_FILES_LISTED = 20  # per directory output
MAX_CHANGES = 200
MAX_POINTERS = 500  # each is two git reads (about 4 ms each)
MAX_MANIFEST_ENTRIES = 1_000_000
_MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
TABULAR = (".csv", ".tsv", ".parquet", ".pq")
NOT_CACHED = "not in modelci's DVC cache"


@dataclass(frozen=True)
class RowCount:
    rows: int | None
    unknown: str | None = None  # why rows is None


class CacheReader(Protocol):
    """The repository's DVC cache, read by md5 (only valid md5 values are passed)."""

    def manifest(self, md5: str) -> bytes | None:
        """A directory's ``.dir`` manifest, None when it is not cached; ValueError saying
        why when it is cached and cannot be read."""
        ...

    def size(self, md5: str) -> int | None:
        """A cached file's size, None when it is not cached."""
        ...

    def rows(self, md5: str, relpath: str) -> RowCount:
        """Rows of a cached CSV or Parquet file (``relpath`` says which it should be)."""
        ...


@dataclass(frozen=True)
class FileVersion:
    """One side of a changed file or directory."""

    md5: str | None
    size: int | None = None
    nfiles: int | None = None  # directories
    rows: RowCount | None = None  # CSV and Parquet files only

    def as_json(self) -> dict[str, Any]:
        return {
            "md5": self.md5,
            "size": self.size,
            "nfiles": self.nfiles,
            "rows": self.rows.rows if self.rows else None,
            "rows_unknown": self.rows.unknown if self.rows else None,
        }


@dataclass(frozen=True)
class DataChange:
    path: str
    status: Status
    old: FileVersion | None
    new: FileVersion | None
    source: str = ""  # the pointer file (a file inside a directory: empty)
    directory: bool = False
    files: tuple[DataChange, ...] = ()  # a directory's changed files, at most MAX_FILES_LISTED
    more_files: int = 0  # changed files beyond those
    note: str | None = None  # e.g. a manifest that is not cached

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "kind": "directory" if self.directory else "file",
            "source": self.source or None,
            "old": self.old.as_json() if self.old else None,
            "new": self.new.as_json() if self.new else None,
            "files": [f.as_json() for f in self.files],
            "more_files": self.more_files,
            "note": self.note,
        }


@dataclass(frozen=True)
class DataChanges:
    changes: tuple[DataChange, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Out:
    path: str
    md5: str | None
    size: int | None
    nfiles: int | None
    source: str


def is_pointer(path: str) -> bool:
    """Whether a repository path is a DVC pointer file this module reads."""
    return path.endswith(".dvc") or path == "dvc.lock"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _md5(value: Any) -> str | None:
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return text if _MD5.match(text) else None


def pointer_outs(source: str, raw: bytes) -> list[_Out]:
    """The outputs a ``.dvc`` file or ``dvc.lock`` declares; ValueError when it is not one."""
    try:
        document = safeyaml.load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ValueError(f"is not valid YAML: {problem}") from None
    except RecursionError:
        raise ValueError("nests too deeply") from None
    if not isinstance(document, dict):
        raise ValueError("is not a DVC file")
    if source == "dvc.lock":
        stages = document.get("stages")
        holders = list(stages.values()) if isinstance(stages, dict) else []
        base = "."
    else:
        holders, base = [document], posixpath.dirname(source) or "."
    outs = []
    for holder in holders:
        entries = holder.get("outs") if isinstance(holder, dict) else None
        for out in entries if isinstance(entries, list) else []:
            if not isinstance(out, dict) or not isinstance(out.get("path"), str):
                continue
            path = posixpath.normpath(posixpath.join(base, out["path"]))
            if path.startswith(("../", "/")) or path == "..":
                continue
            md5 = _md5(out.get("md5"))
            outs.append(_Out(path, md5, _count(out.get("size")), _count(out.get("nfiles")), source))
    return outs


def _manifest(raw: bytes) -> dict[str, str]:
    """relpath → md5 of a ``.dir`` manifest; ValueError when it is not one."""
    try:
        entries = json.loads(raw)
    except (ValueError, RecursionError):
        entries = None
    if not isinstance(entries, list):
        raise ValueError("is not a DVC file list")
    files = {}
    for entry in entries[:MAX_MANIFEST_ENTRIES]:
        if isinstance(entry, dict) and isinstance(entry.get("relpath"), str):
            files[entry["relpath"]] = _md5(entry.get("md5")) or ""
    return files


def _tabular(path: str) -> bool:
    return path.lower().endswith(TABULAR)


def _rows(cache: CacheReader, md5: str | None, path: str) -> RowCount | None:
    if not _tabular(path):
        return None
    if md5 is None:
        return RowCount(None, "no md5 in the pointer file")
    return cache.rows(md5, path)


def _status(old: object | None, new: object | None) -> Status:
    return "added" if old is None else "removed" if new is None else "modified"


def _inner_version(md5: str | None, relpath: str, cache: CacheReader) -> FileVersion | None:
    """A file inside a directory ("" for an entry without a valid md5)."""
    if md5 is None:
        return None
    if not md5:
        return FileVersion(None)
    return FileVersion(md5, cache.size(md5), rows=_rows(cache, md5, relpath))


def _inner(
    out: str, old: dict[str, str], new: dict[str, str], cache: CacheReader
) -> tuple[list[DataChange], int]:
    """The files of a directory output that differ, listed up to the cap, and how many more."""
    changed = sorted(p for p in {*old, *new} if old.get(p) != new.get(p))
    listed = []
    for relpath in changed[:MAX_FILES_LISTED]:
        path = posixpath.join(out, relpath)
        versions = [
            _inner_version(md5, relpath, cache) for md5 in (old.get(relpath), new.get(relpath))
        ]
        listed.append(DataChange(path, _status(*versions), versions[0], versions[1]))
    return listed, max(0, len(changed) - MAX_FILES_LISTED)


def _dir_md5(out: _Out | None) -> str | None:
    """The manifest's md5 of a directory output, None for a file or no output."""
    return out.md5 if out is not None and out.md5 and out.md5.endswith(".dir") else None


def _version(out: _Out | None, cache: CacheReader) -> FileVersion | None:
    if out is None:
        return None
    rows = None if _dir_md5(out) else _rows(cache, out.md5, out.path)
    return FileVersion(out.md5, out.size, out.nfiles, rows)


def _change(path: str, old: _Out | None, new: _Out | None, cache: CacheReader) -> DataChange:
    change = DataChange(
        path,
        _status(old, new),
        _version(old, cache),
        _version(new, cache),
        source=next(o.source for o in (new, old) if o is not None),
        directory=bool(_dir_md5(old) or _dir_md5(new)),
    )
    if not change.directory:
        return change
    listings: list[dict[str, str]] = []
    problems = []
    for side, out in (("base", old), ("head", new)):
        md5 = _dir_md5(out)
        try:
            raw = cache.manifest(md5) if md5 else b"[]"  # a file or nothing: no files inside
            if raw is None:
                raise ValueError(f"is {NOT_CACHED}")
            listings.append(_manifest(raw))
        except ValueError as exc:
            problems.append(f"the file list of {side} {exc}")
    if problems:
        return replace(change, note="; ".join(problems))
    files, more = _inner(path, listings[0], listings[1], cache)
    return replace(change, files=tuple(files), more_files=more)


def _outs(
    role: str, read: Read, pointers: Sequence[str], notes: list[str]
) -> Iterator[tuple[str, _Out]]:
    for source in pointers:
        try:
            raw = read(source)
            if raw is not None:
                yield from ((out.path, out) for out in pointer_outs(source, raw))
        except ValueError as exc:
            notes.append(f"{source} at {role} {exc}: its data is not compared")
        except ModelCIError as exc:  # over git's size cap
            notes.append(f"{source} at {role} could not be read: {exc.message}")


def data_changes(
    pointers: Sequence[str], read_base: Read, read_head: Read, cache: CacheReader
) -> DataChanges:
    """The data outputs that differ between base and head, given the pointer files that
    differ (``pointers``) and each side's ``read``."""
    notes: list[str] = []
    pointers = [p for p in pointers if is_pointer(p)]
    if len(pointers) > MAX_POINTERS:
        notes.append(f"{len(pointers) - MAX_POINTERS:,} more DVC files changed than are read")
        pointers = pointers[:MAX_POINTERS]
    old: Mapping[str, _Out] = dict(_outs("base", read_base, pointers, notes))
    new: Mapping[str, _Out] = dict(_outs("head", read_head, pointers, notes))
    changes: list[DataChange] = []
    for path in sorted({*old, *new}):
        a, b = old.get(path), new.get(path)
        if a is not None and b is not None and (a.md5, a.size) == (b.md5, b.size):
            continue  # the pointer file changed around it (a comment, another output)
        if len(changes) == MAX_CHANGES:
            notes.append("more data changed than is listed")
            break
        changes.append(_change(path, a, b, cache))
    return DataChanges(tuple(changes), tuple(notes))
