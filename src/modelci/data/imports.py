"""DVC imports: the ``.dvc`` files that ``dvc import-url`` and ``dvc import`` wrote.

An import pointer names where its data comes from (its one dependency: a URL
or path for ``import-url``, a repository and a path in it for ``import``) and
what that source held when it was last imported (the output's md5). Sources
are checked against the server's allow-list (``data.remotes``: ``allowed_urls``
of the repository) before any request, as remotes are; a source given as
``remote://NAME/path`` is the remote ``NAME`` of the commit's ``.dvc/config``,
checked and given its credentials like any remote (the only way to give an
import credentials: a plain URL's source is fetched without any).

Refreshing (``DataFetcher.check_imports``) runs ``dvc update`` on copies of the
pointers in a scratch directory; what changed comes back as new pointer texts,
which a retrain writes over its checkout (``write_overlay``) before fetching.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelci import safeyaml
from modelci.data.changes import pointer_outs
from modelci.data.remotes import REMOTES_SETTING, RepositoryData, check_url
from modelci.errors import DataFetchError, ModelCIError, OutputError
from modelci.runner.outputs import read_output_bytes

__all__ = [
    "CheckedSource",
    "ImportPointer",
    "ImportRefresh",
    "check_source",
    "find_imports",
    "import_pointer",
    "is_import",
    "refreshed",
    "write_overlay",
]

_MAX_POINTER = 1_000_000
_REMOTE_PREFIX = "remote://"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class ImportPointer:
    path: str  # the .dvc file, relative to the repo root, e.g. "data/raw.csv.dvc"
    source: str  # the URL (import-url) or "<repo url>:<path>" (dvc import)
    out: str  # the output path it writes, e.g. "data/raw.csv"
    text: bytes  # the .dvc file as committed
    repo_url: str | None = None  # dvc import: the source repository
    url: str = ""  # what is checked against the allow-list: the URL, or the repository's

    def md5(self) -> str | None:
        """The output's md5 as this pointer records it (None: not downloaded)."""
        outs = pointer_outs(self.path, self.text)
        return outs[0].md5 if outs else None


@dataclass(frozen=True)
class ImportRefresh:
    changed: dict[str, bytes]  # .dvc path -> updated file text (only the changed ones)
    sources: dict[str, str]  # .dvc path -> source, for reports
    # .dvc path -> (old md5, new md5) of its output, for reports
    hashes: dict[str, tuple[str | None, str | None]] | None = None

    def __bool__(self) -> bool:
        return bool(self.changed)


@dataclass(frozen=True)
class CheckedSource:
    """An allowed source as the sandbox reaches it."""

    url: str  # as checked (a local path made absolute)
    remote: str | None  # the .dvc/config remote a remote:// source names
    local: Path | None  # a local directory to bind read-only into the sandbox


def is_import(document: Any) -> bool:
    """Whether a parsed ``.dvc`` file is an import: one with a dependency (DVC's own test)."""
    return isinstance(document, dict) and bool(document.get("deps"))


def import_pointer(relpath: str, text: bytes) -> ImportPointer | None:
    """The import a ``.dvc`` file declares; None for a plain ``dvc add`` pointer.
    DataFetchError when it is an import modelci cannot read."""
    try:
        document = safeyaml.load(text)
    except (yaml.YAMLError, RecursionError):
        raise DataFetchError(f"{relpath} is not valid YAML", hint="fix the file") from None
    if not is_import(document):
        return None
    deps, outs = document.get("deps"), document.get("outs")
    if not (isinstance(deps, list) and len(deps) == 1 and isinstance(deps[0], dict)) or not (
        isinstance(outs, list) and len(outs) == 1 and isinstance(outs[0], dict)
    ):
        raise DataFetchError(
            f"{relpath} has dependencies but is not an import (one dependency, one output)",
            hint="track data with dvc add, dvc import-url or dvc import; pipelines go in dvc.yaml",
        )
    dep, out = deps[0], outs[0]
    path, out_path = dep.get("path"), out.get("path")
    if not isinstance(path, str) or not path or not isinstance(out_path, str):
        raise DataFetchError(f"{relpath} names no source path", hint="run the import again")
    base = posixpath.dirname(relpath)
    out_rel = posixpath.normpath(posixpath.join(base, out_path))
    repo = dep.get("repo")
    if isinstance(repo, dict) and isinstance(repo.get("url"), str) and repo["url"]:
        url = repo["url"]
        return ImportPointer(relpath, f"{url}:{path}", out_rel, text, repo_url=url, url=url)
    return ImportPointer(relpath, path, out_rel, text, url=path)


def _dvc_files(workdir: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(workdir):
        dirs[:] = sorted(d for d in dirs if d not in (".git", ".dvc"))
        for name in sorted(files):
            path = Path(root, name)
            if name.endswith(".dvc") and path.is_file() and not path.is_symlink():
                found.append(str(path.relative_to(workdir)))
    return found


def find_imports(workdir: Path) -> list[ImportPointer]:
    """The import pointers of a checked-out commit (read safely: no symlink followed)."""
    pointers = []
    for relpath in _dvc_files(workdir):
        try:
            text = read_output_bytes(workdir, relpath, max_bytes=_MAX_POINTER)
        except OutputError as exc:
            raise DataFetchError(f"cannot read {relpath}: {exc.message}") from None
        if (pointer := import_pointer(relpath, text)) is not None:
            pointers.append(pointer)
    return pointers


def commit_imports(
    read: Callable[[str], bytes | None], paths: Iterable[str]
) -> list[ImportPointer]:
    """The import pointers among a commit's ``.dvc`` files, read from git; a file that is
    not a readable pointer is left out (the fetch names it)."""
    pointers = []
    for path in paths:
        if not path.endswith(".dvc"):
            continue
        try:
            text = read(path)
            pointer = import_pointer(path, text) if text is not None else None
        except ModelCIError:
            continue
        if pointer is not None:
            pointers.append(pointer)
    return pointers


def check_source(
    pointer: ImportPointer,
    data: RepositoryData,
    *,
    workdir: Path,
    remote_urls: Mapping[str, str],
) -> CheckedSource:
    """Where the import's data comes from, if the server allows it for this repository;
    else DataFetchError naming the setting, before any request."""
    url, remote = pointer.url, None
    where = f"the import {pointer.path}"
    if pointer.repo_url is None and url.startswith(_REMOTE_PREFIX):
        remote, _, rest = url.removeprefix(_REMOTE_PREFIX).partition("/")
        base = remote_urls.get(remote)
        if base is None:
            raise DataFetchError(
                f"{where} reads from {url}, but .dvc/config defines no remote {remote!r}",
                hint=f"add it with `dvc remote add {remote} URL` and commit .dvc/config",
            )
        url = f"{base.rstrip('/')}/{rest}" if rest else base
    config_dir = workdir / posixpath.dirname(pointer.path)
    try:
        checked = check_url(url, data, remote=remote or pointer.path, config_dir=config_dir)
    except DataFetchError:
        raise DataFetchError(
            f"{where} reads from {pointer.source}, which this server does not allow for {data.key}",
            hint=f'add a prefix of {url} to allowed_urls under [repositories."{data.key}"] in '
            f"{data.source} ({REMOTES_SETTING}) if the repository may import from there",
        ) from None
    local = Path(checked) if checked.startswith("/") else None
    if local is not None and not local.exists():
        raise DataFetchError(
            f"{where} reads from {checked}, which does not exist on this server",
            hint="create it or import from another path",
        )
    if local is not None and not local.is_dir():
        # The sandbox binds directories: a file's own (read-only, DVC alone runs there).
        local = local.parent
    return CheckedSource(checked, remote, local)


def refreshed(pointers: Iterable[ImportPointer], read: Callable[[str], bytes]) -> ImportRefresh:
    """The pointers whose output changed, as ``dvc update`` rewrote them (read back with
    ``read``). A pointer DVC only reformatted, or whose source's own hash moved while
    its content did not (an etag), is not a change: the data is the same."""
    changed: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    hashes: dict[str, tuple[str | None, str | None]] = {}
    for pointer in pointers:
        text = read(pointer.path)
        new = ImportPointer(pointer.path, pointer.source, pointer.out, text)
        old_md5, new_md5 = pointer.md5(), new.md5()
        if new_md5 is not None and new_md5 != old_md5:
            changed[pointer.path] = text
            sources[pointer.path] = pointer.source
            hashes[pointer.path] = (old_md5, new_md5)
    return ImportRefresh(changed, sources, hashes)


def _checked_relpath(relpath: str) -> list[str]:
    parts = relpath.split("/")
    if (
        not relpath.endswith(".dvc")
        or relpath.startswith("/")
        or any(p in ("", ".", "..", ".git") for p in parts)
        or "\0" in relpath
    ):
        raise DataFetchError(
            f"cannot overlay {relpath!r}: only .dvc files inside the repository",
            hint="this is a bug in modelci's import refresh",
        )
    return parts


def write_overlay(workdir: Path, overlay: Mapping[str, bytes]) -> None:
    """Write refreshed pointers over a fresh checkout, never through a symlink: each
    directory is opened with O_NOFOLLOW below the work dir."""
    for relpath, text in sorted(overlay.items()):
        parts = _checked_relpath(relpath)
        fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise DataFetchError(
                        f"cannot write the refreshed {relpath}: {part} is not a directory "
                        f"({exc.strerror})",
                        hint="the commit's layout must hold the .dvc file it imports with",
                    ) from None
                os.close(fd)
                fd = next_fd
            name = parts[-1]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(name, flags, 0o644, dir_fd=fd)
            with os.fdopen(out, "wb") as handle:
                handle.write(text)
        finally:
            os.close(fd)
