"""Which DVC output of a commit holds a given file, and its md5, read from git.

The answer comes from the commit's own pointers, never from a work dir: the
``.dvc`` file that ``dvc add`` writes beside a file or a directory above it
(``data/holdout.csv.dvc``, ``data.dvc``), else a ``dvc.lock`` stage output.
modelci then takes the bytes from the repository's DVC cache by that md5
(``data.cache``), so nothing a training writes can change what they are.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from modelci.errors import DatasetError

__all__ = ["TrackedFile", "find_tracked"]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
LOCK_FILE = "dvc.lock"


@dataclass(frozen=True)
class TrackedFile:
    """A file a commit tracks with DVC: the output that holds it and how to find its bytes."""

    path: str  # the file, relative to the repository root
    pointer: str  # the .dvc file or dvc.lock that names it
    output: str  # the output's path from the root: the file, or a directory above it
    md5: str  # the output's md5; ``<md5>.dir`` for a directory
    legacy: bool  # an output DVC 2 wrote (no ``hash: md5``): the cache's old layout
    size: int | None = None
    remote: str | None = None  # the output's own remote, when it names one

    @property
    def inner(self) -> str | None:
        """The file's path inside the tracked directory; None when the output is the file."""
        if self.output == self.path:
            return None
        return posixpath.relpath(self.path, self.output)

    def pointer_entry(self) -> dict[str, Any]:
        """The output as a ``.dvc`` file at the repository root declares it."""
        entry: dict[str, Any] = {"md5": self.md5, "path": self.output}
        if not self.legacy:
            entry["hash"] = "md5"
        if self.size is not None:
            entry["size"] = self.size
        if self.remote is not None:
            entry["remote"] = self.remote
        return entry


def _ancestors(path: str) -> Iterator[str]:
    """``path`` and each directory above it, nearest first."""
    while path and path != ".":
        yield path
        path = posixpath.dirname(path)


def _document(read: Callable[[str], bytes | None], name: str, sha: str) -> Any:
    raw = read(name)
    if raw is None:
        return None
    try:
        return yaml.load(raw, Loader=_Loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise DatasetError(
            f"{name} at {sha[:7]} is not valid YAML ({exc})", hint=f"fix {name}"
        ) from None


def _entry(out: Any, base: str, path: str, pointer: str, sha: str) -> TrackedFile | None:
    """The output ``out`` (paths relative to ``base``) when it holds ``path``."""
    if not isinstance(out, dict) or not isinstance(out.get("path"), str):
        return None
    output = posixpath.normpath(posixpath.join(base, out["path"]))
    if output not in set(_ancestors(path)):
        return None
    md5 = out.get("md5")
    if not isinstance(md5, str) or not _MD5.match(md5):
        raise DatasetError(
            f"{pointer} at {sha[:7]} tracks {output} without an md5 DVC could have written",
            hint=f"track it again with `dvc add {output}` (or `dvc commit`) and commit {pointer}",
        )
    size, remote = out.get("size"), out.get("remote")
    return TrackedFile(
        path=path,
        pointer=pointer,
        output=output,
        md5=md5,
        legacy=out.get("hash") != "md5",
        size=size if isinstance(size, int) and size >= 0 else None,
        remote=str(remote) if remote else None,
    )


def find_tracked(read: Callable[[str], bytes | None], path: str, *, sha: str) -> TrackedFile | None:
    """The DVC output of the commit (``read`` gives its files) that holds ``path``;
    None when no pointer of the commit tracks it."""
    path = posixpath.normpath(path)
    for candidate in _ancestors(path):
        pointer = f"{candidate}.dvc"
        document = _document(read, pointer, sha)
        if not isinstance(document, dict):
            continue
        base = posixpath.dirname(pointer)
        for out in document.get("outs") or []:
            if (found := _entry(out, base, path, pointer, sha)) is not None:
                return found
    lock = _document(read, LOCK_FILE, sha)
    stages = lock.get("stages") if isinstance(lock, dict) else None
    for stage in (stages or {}).values() if isinstance(stages, dict) else ():
        for out in (stage.get("outs") or []) if isinstance(stage, dict) else ():
            if (found := _entry(out, "", path, LOCK_FILE, sha)) is not None:
                return found
    return None
