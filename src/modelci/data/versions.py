"""A commit's data version: each DVC output's path and md5, read from git.

The pointer files (``*.dvc`` and ``dvc.lock``) of a commit say which data it
trains on; their md5 values name that data exactly, so the mapping is what a
retrain records with its run and what tells whether anything changed since
the champion was trained. Read from git (no checkout, no DVC): a commit's
pointers never change, and the training's work dir is the repository's to
rewrite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from modelci.data.changes import MAX_POINTERS, is_pointer, pointer_outs
from modelci.errors import ModelCIError
from modelci.runner.checkout import Mirror

__all__ = ["EMPTY_TREE", "data_version", "data_version_tag"]

# git's empty tree: diffing a commit against it lists every file the commit holds.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_POINTERS = ("*.dvc", "dvc.lock")


def data_version(
    mirror: Mirror, sha: str, overlay: Mapping[str, bytes] | None = None
) -> dict[str, str]:
    """DVC output path -> md5 at ``sha``; empty for a commit without DVC data.

    An output without an md5 (not yet pushed, or a pointer that is not one) is
    left out: it names no data. Unreadable pointer files are skipped, as the
    data review skips them: the version is what the commit says for sure.
    ``overlay`` (a retrain's refreshed imports: pointer path -> text) replaces
    those pointers of the commit: the version is that of the data trained on.
    """
    overlay = overlay or {}
    pointers = [p for p in mirror.changed_files(EMPTY_TREE, sha, *_POINTERS) if is_pointer(p)]
    found: dict[str, str] = {}
    for source in pointers[:MAX_POINTERS]:
        try:
            raw = overlay[source] if source in overlay else mirror.read_file(sha, source)
            outs = pointer_outs(source, raw) if raw is not None else []
        except (ValueError, ModelCIError):
            continue
        for out in outs:
            if out.md5 is not None:
                found[out.path] = out.md5
    return dict(sorted(found.items()))


def data_version_tag(version: Mapping[str, str]) -> str:
    """The data version as an MLflow tag value (tags are strings, at most 5,000 chars)."""
    text = json.dumps(dict(sorted(version.items())), separators=(",", ":"))
    return text if len(text) <= 5000 else text[:4990] + "…"
