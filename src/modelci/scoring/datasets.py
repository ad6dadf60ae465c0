"""Datasets the server holds for scoring: ``modelci datasets add NAME FILE``.

They live in the data dir's ``datasets/`` (0700, owned by modelci's own user),
which no sandbox binds: training never sees them, and a pull request can
neither read nor change the rows it is scored on. A repository names one in
``scoring.dataset``. Each is kept as a copy with its SHA-256, format, columns
and row count in ``index.json``; the checksum enters the evaluation's cache
key, so replacing a dataset re-scores instead of reusing an old result.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelci.errors import DatasetError
from modelci.runner.outputs import write_file_atomically
from modelci.scoring.tables import inspect_table

__all__ = ["DatasetInfo", "DatasetStore"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_INDEX = "index.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetInfo:
    """One held dataset, as ``datasets list`` shows it."""

    name: str
    format: str  # csv or parquet
    sha256: str
    bytes: int
    rows: int
    columns: dict[str, str]  # name → type
    added_at: str  # ISO 8601, UTC
    source: str  # the file it was added from, for the person who reads the list
    path: Path  # the stored copy

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DatasetStore:
    """The held datasets in one directory (``Settings.datasets_dir``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)

    def _index(self) -> dict[str, dict[str, Any]]:
        path = self.root / _INDEX
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DatasetError(
                f"the datasets index {path} is unreadable ({exc})",
                hint="restore it from a backup, or remove it and add the datasets again",
            ) from None
        return data if isinstance(data, dict) else {}

    def _write_index(self, index: dict[str, dict[str, Any]]) -> None:
        write_file_atomically(self.root / _INDEX, json.dumps(index, indent=2).encode())

    def _info(self, name: str, entry: dict[str, Any]) -> DatasetInfo:
        return DatasetInfo(
            name=name,
            format=str(entry["format"]),
            sha256=str(entry["sha256"]),
            bytes=int(entry["bytes"]),
            rows=int(entry["rows"]),
            columns={str(k): str(v) for k, v in dict(entry["columns"]).items()},
            added_at=str(entry["added_at"]),
            source=str(entry.get("source", "")),
            path=self.root / str(entry["file"]),
        )

    def list(self) -> list[DatasetInfo]:
        return [self._info(name, entry) for name, entry in sorted(self._index().items())]

    def get(self, name: str) -> DatasetInfo:
        """The dataset called ``name``; DatasetError naming the ones held if none is."""
        entry = self._index().get(name)
        if entry is None:
            raise self._missing(name)
        info = self._info(name, entry)
        if not info.path.is_file():
            raise DatasetError(
                f"dataset '{name}' is listed but its file {info.path} is gone",
                hint=f"add it again: modelci datasets remove {name}, then datasets add",
            )
        return info

    def add(self, name: str, source: Path) -> DatasetInfo:
        """Copy ``source`` (CSV or Parquet) in as ``name``; refuses a name already held."""
        if not _NAME.match(name):
            raise DatasetError(
                f"'{name}' is not a usable dataset name",
                hint="use letters, digits, '_', '.' and '-' (up to 64), starting with a "
                "letter or digit",
            )
        if not source.is_file():
            what = "does not exist" if not source.exists() else "is not a file"
            raise DatasetError(f"{source} {what}", hint="give the path of a CSV or Parquet file")
        self._prepare()
        if name in self._index():
            raise DatasetError(
                f"the server already holds a dataset called '{name}'",
                hint=f"remove it first (modelci datasets remove {name}) or pick another name",
            )
        # Copied first, then checked: the stored bytes are the ones inspected and summed.
        fd, temp = tempfile.mkstemp(prefix=".adding-", dir=self.root)
        os.close(fd)
        staged = Path(temp)
        try:
            shutil.copyfile(source, staged)
            table = inspect_table(staged, name=str(source))
            if table.rows == 0:
                raise DatasetError(f"{source} has no rows", hint="give a file with data rows")
            checksum = _sha256(staged)
            stored = f"{name}.{table.format}"
            staged.chmod(0o600)
            staged.replace(self.root / stored)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        index = self._index()
        index[name] = {
            "file": stored,
            "format": table.format,
            "sha256": checksum,
            "bytes": (self.root / stored).stat().st_size,
            "rows": table.rows,
            "columns": table.columns,
            "added_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": str(source.resolve()),
        }
        self._write_index(index)
        return self._info(name, index[name])

    def _missing(self, name: str) -> DatasetError:
        held = ", ".join(sorted(self._index())) or "none"
        return DatasetError(
            f"the server holds no dataset called '{name}' (held: {held})",
            hint=f"add it on the server: modelci datasets add {name} FILE.csv",
        )

    def remove(self, name: str) -> DatasetInfo:
        index = self._index()
        entry = index.pop(name, None)
        if entry is None:
            raise self._missing(name)
        info = self._info(name, entry)
        self._write_index(index)
        info.path.unlink(missing_ok=True)
        return info
