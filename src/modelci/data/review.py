"""What a change does to a repository's params and DVC data, read from git.

Both come from the two commits without a checkout (``Mirror.read_file``): the
params files (``data.params``) and the DVC pointer files that differ
(``git diff``, then ``data.changes``), with sizes, file lists and row counts
from the repository's DVC cache, which the evaluation's fetches filled. It is
context for the report: a problem becomes a note, never a failed evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelci.data.cachefiles import DvcCacheFiles
from modelci.data.changes import NOT_CACHED, TABULAR, DataChange, DataChanges, data_changes
from modelci.data.params import ParamsDiff, diff_params
from modelci.errors import ModelCIError
from modelci.monitor.filedrift import FileDrift
from modelci.runner.checkout import Mirror

__all__ = ["DataReview", "review_data"]

_POINTERS = ("*.dvc", "dvc.lock")


MAX_DRIFT_FILES = 5  # changed tables compared base against head, per review


@dataclass(frozen=True)
class DataReview:
    params: ParamsDiff = field(default_factory=ParamsDiff)
    data: DataChanges = field(default_factory=DataChanges)
    # Changed CSV/Parquet files: the head version tested against the base's profile.
    drift: tuple[FileDrift, ...] = ()
    drift_notes: tuple[str, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        return (*self.params.notes, *self.data.notes, *self.drift_notes)

    def as_json(self) -> dict[str, Any]:
        return {
            "params_diff": [c.as_json() for c in self.params.changes],
            "data_changes": [c.as_json() for c in self.data.changes],
            "data_drift": [d.as_json() for d in self.drift],
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
    files = DvcCacheFiles(cache)
    changes = data_changes(pointers, reader(base_sha), reader(head_sha), files)
    drifts, notes = _drift(changes.changes, files)
    return DataReview(params, changes, drifts, notes)


def _modified_tables(changes: Sequence[DataChange]) -> Iterator[DataChange]:
    for change in changes:
        yield from _modified_tables(change.files)
        if (
            not change.directory
            and change.status == "modified"
            and change.path.lower().endswith(TABULAR)
            and change.old is not None
            and change.new is not None
        ):
            yield change


def _drift(
    changes: Sequence[DataChange], files: DvcCacheFiles
) -> tuple[tuple[FileDrift, ...], tuple[str, ...]]:
    """The drift of each modified table (at most MAX_DRIFT_FILES), base against head."""
    from modelci.monitor.filedrift import file_drift

    found: list[FileDrift] = []
    notes: list[str] = []
    tables = list(_modified_tables(changes))
    for change in tables[:MAX_DRIFT_FILES]:
        assert change.old is not None
        assert change.new is not None
        base = files.object_path(change.old.md5) if change.old.md5 else None
        head = files.object_path(change.new.md5) if change.new.md5 else None
        if base is None or head is None:
            notes.append(f"{change.path}: drift not computed, a version is {NOT_CACHED}")
            continue
        try:
            found.append(file_drift(change.path, base, head))
        except ModelCIError as exc:
            notes.append(f"{change.path}: drift not computed: {exc.message}")
    if len(tables) > MAX_DRIFT_FILES:
        notes.append(f"drift computed for {MAX_DRIFT_FILES} of {len(tables)} changed tables")
    return tuple(found), tuple(notes)
