"""Drift between two versions of a data file: what a pull request that changes
DVC-tracked data does to its distribution.

The base version is profiled and the head version tested against it with the
same tests and thresholds as served traffic (``monitor.verdicts``), so "the new
training data drifts on ``age`` and ``income``" reads the same in a pull
request comment as in a drift alert. What the tutorials do with Evidently by
hand on old and new data, here for each changed CSV or Parquet file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FileDrift", "file_drift"]

MAX_BYTES = 256 << 20  # per side: bigger files are named in a note, not compared
MAX_ROWS = 5_000_000


@dataclass(frozen=True)
class FileDrift:
    path: str
    drifted: bool
    share_drifted: float
    drifted_columns: tuple[str, ...]
    columns: int
    base_rows: int
    head_rows: int

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "drifted": self.drifted,
            "share_drifted": self.share_drifted,
            "drifted_columns": list(self.drifted_columns),
            "columns": self.columns,
            "base_rows": self.base_rows,
            "head_rows": self.head_rows,
        }


def file_drift(path: str, base: Path, head: Path) -> FileDrift:
    """The head file tested against the base file's profile (DatasetError when either
    cannot be read as a table, or they share no column)."""
    from modelci.errors import DatasetError
    from modelci.monitor.profile import profile_table
    from modelci.monitor.tables import TableCaps, read_table
    from modelci.monitor.verdicts import drift

    caps = TableCaps(max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
    old = read_table(base, caps=caps, name=f"{path} at base")
    new = read_table(head, caps=caps, name=f"{path} at head")
    shared = [name for name in old.column_names if name in new.column_names]
    if not shared:
        raise DatasetError(
            f"{path} has no column in common between base and head",
            hint="a renamed header is a new dataset: nothing to compare",
        )
    report = drift(profile_table(old, columns=shared), new.select(shared))
    return FileDrift(
        path=path,
        drifted=report.dataset_drifted,
        share_drifted=report.share_drifted,
        drifted_columns=tuple(report.drifted_columns),
        columns=len(report.columns),
        base_rows=old.num_rows,
        head_rows=new.num_rows,
    )
