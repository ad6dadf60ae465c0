"""What a change does to a repository's params and DVC data, read from git.

Both come from the two commits without a checkout (``Mirror.read_file``): the
params files (``data.params``) and the DVC pointer files that differ
(``git diff``, then ``data.changes``), with sizes, file lists and row counts
from the repository's DVC cache, which the evaluation's fetches filled. It is
context for the report: a problem becomes a note, never a failed evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelci.data.cachefiles import DvcCacheFiles
from modelci.data.changes import DataChanges, data_changes
from modelci.data.params import ParamsDiff, diff_params
from modelci.errors import ModelCIError
from modelci.runner.checkout import Mirror

__all__ = ["DataReview", "review_data"]

_POINTERS = ("*.dvc", "dvc.lock")


@dataclass(frozen=True)
class DataReview:
    params: ParamsDiff = field(default_factory=ParamsDiff)
    data: DataChanges = field(default_factory=DataChanges)

    @property
    def notes(self) -> tuple[str, ...]:
        return (*self.params.notes, *self.data.notes)

    def as_json(self) -> dict[str, Any]:
        return {
            "params_diff": [c.as_json() for c in self.params.changes],
            "data_changes": [c.as_json() for c in self.data.changes],
            "data_notes": list(self.notes),
        }


def review_data(mirror: Mirror, base_sha: str, head_sha: str, *, cache: Path) -> DataReview:
    """Params and DVC data that differ from base to head; ``cache`` is the repository's
    DVC cache (it need not exist)."""

    def reader(sha: str) -> Callable[[str], bytes | None]:
        return lambda path: mirror.read_file(sha, path)

    params = diff_params(reader(base_sha), reader(head_sha))
    try:
        pointers = mirror.changed_files(base_sha, head_sha, *_POINTERS)
    except ModelCIError as exc:
        return DataReview(params, DataChanges(notes=(f"data not compared: {exc.message}",)))
    if not pointers:
        return DataReview(params)
    changes = data_changes(pointers, reader(base_sha), reader(head_sha), DvcCacheFiles(cache))
    return DataReview(params, changes)
