"""A commit's DVC data copied straight from the repository's DVC cache, without DVC.

When every object a commit's ``.dvc`` files point to is already in the
repository's cache (a second commit with the same data, the base and head of a
pull request that did not change it), running DVC costs seconds for nothing:
a sandbox, importing DVC, its status over every file, its checkout. modelci
copies the objects itself instead, from DVC 3's cache layout
(``files/md5/<2 hex>/<30 hex>``; a directory is a ``.dir`` object, a JSON list
of ``md5`` and ``relpath`` entries). It does so outside the sandbox, which is
safe because it only reads the cache and only writes the work dir, before any
repository code has run in it:

- every path is checked before anything is written: relative, no ``..``, no
  existing component that is not a real directory, no output already there;
- no link is followed on either side: the cache is read and the work dir
  written through directory fds opened with ``O_NOFOLLOW`` (a sandboxed fetch
  could leave a symlink in the cache, a commit can hold one in the work dir),
  files are created with ``O_EXCL``;
- data is reflinked where the file system can, else copied in the kernel;
  never linked, so a training that writes into its data cannot reach the cache.

Anything it cannot vouch for declines (``None``), and DVC runs in the sandbox
as before: a pipeline's ``dvc.lock``, DVC 2 hashes, an object missing, a path
through a symlink, a manifest naming a path outside its directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from modelci.data.dvcrepo import DvcLayout, dvc_file_outs
from modelci.errors import DataFetchError

__all__ = ["CacheCopy", "CachedFile", "copyable", "plan_cache_copy"]

MB = 1024 * 1024
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int), what cp --reflink uses
_MD5 = re.compile(r"[0-9a-f]{32}")
_MAX_MANIFEST = 128 * MB  # about 1.5 million entries
_NO_CLONE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class CachedFile:
    target: tuple[str, ...]  # path parts under the work dir
    digest: str  # the content's md5: the object files/md5/<digest[:2]>/<digest[2:]>
    size: int
    executable: bool = False


@dataclass(frozen=True)
class CacheCopy:
    """Everything a commit's .dvc files put in the work dir, all of it in the cache."""

    files: tuple[CachedFile, ...]
    folders: tuple[tuple[str, ...], ...]  # directory outputs, made even when empty

    @property
    def bytes(self) -> int:
        return sum(file.size for file in self.files)

    def copy(self, workdir: Path, cache: Path) -> bool:
        """Write the files into workdir; True when every one was reflinked, not copied."""
        clone, copied, where = True, 0, "the DVC data"
        try:
            with _Objects(cache) as objects, _Tree(workdir) as tree:
                for folder in self.folders:
                    where = "/".join(folder)
                    tree.folder(folder)
                for file in sorted(self.files, key=lambda f: f.target):
                    where = "/".join(file.target)
                    if not _copy_one(objects, tree, file, clone) and file.size:
                        clone, copied = False, copied + 1  # no reflinks here: stop trying
        except OSError as exc:
            raise DataFetchError(
                f"could not copy {where} from the repository's DVC cache into the work dir: "
                f"{exc.strerror or exc}",
                hint="check the free space under modelci's data dir (df -h)",
            ) from None
        return not copied and self.bytes > 0


def _parts(path: str) -> tuple[str, ...] | None:
    """A relative path's parts, or None for one that is absolute, empty or climbs."""
    if not path or "\0" in path or path.startswith("/"):
        return None
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    return parts if parts and ".." not in parts else None


def _outputs(workdir: Path, layout: DvcLayout) -> list[tuple[tuple[str, ...], str, bool]] | None:
    """(parts, md5, executable) of each cached output of the .dvc files, or None
    when DVC should check them out itself."""
    if layout.has_lock:  # pipelines: stage outputs may be missing, DVC decides
        return None
    found = []
    for relpath in layout.dvc_files:
        for out in dvc_file_outs(workdir, relpath):
            if out.get("cache", True) is False:  # DVC does not pull those either
                continue
            md5, path = out.get("md5"), out.get("path")
            if out.get("hash") != "md5" or not isinstance(md5, str) or not isinstance(path, str):
                return None  # DVC 2's md5 (text normalised) or something newer
            parts = _parts(posixpath.normpath(posixpath.join(posixpath.dirname(relpath), path)))
            if (
                parts is None
                or parts[0] in (".dvc", ".git")
                or not _MD5.fullmatch(md5.removesuffix(".dir"))
            ):
                return None
            found.append((parts, md5, out.get("isexec") is True))
    return found


def _is_free(workdir: Path, parts: tuple[str, ...]) -> bool:
    """Nothing at the path yet, and every existing folder on the way a real directory."""
    path = workdir
    for index, part in enumerate(parts):
        path = path / part
        try:
            info = path.lstat()
        except FileNotFoundError:
            return True
        if index == len(parts) - 1 or not stat.S_ISDIR(info.st_mode):
            return False
    return False


def _clash(targets: list[tuple[str, ...]]) -> bool:
    """Whether a path repeats or is a folder of another (sorted input)."""
    return any(b[: len(a)] == a for a, b in itertools.pairwise(targets))


def copyable(workdir: Path, layout: DvcLayout) -> bool:
    """Whether modelci can copy the commit's DVC data itself once the cache holds it."""
    outputs = _outputs(workdir, layout)
    return outputs is not None and bool(outputs) and _placeable(workdir, outputs)


def _placeable(workdir: Path, outputs: list[tuple[tuple[str, ...], str, bool]]) -> bool:
    targets = sorted(parts for parts, _, _ in outputs)
    return not _clash(targets) and all(_is_free(workdir, parts) for parts in targets)


def plan_cache_copy(workdir: Path, layout: DvcLayout, cache: Path) -> CacheCopy | None:
    """The copy that puts the commit's DVC data in workdir, if the cache holds all of
    it and nothing about it needs DVC; None otherwise (DVC runs instead)."""
    outputs = _outputs(workdir, layout)
    if not outputs or not _placeable(workdir, outputs):
        return None
    files: list[CachedFile] = []
    folders = []
    try:
        with _Objects(cache) as objects:
            for parts, md5, executable in outputs:
                if not md5.endswith(".dir"):
                    entries = [(parts, md5, executable)]
                elif (listed := _manifest(objects, md5)) is not None:
                    entries = [(parts + rel, digest, exe) for rel, digest, exe in listed]
                    folders.append(parts)
                else:
                    return None
                for target, digest, exe in entries:
                    if (size := objects.size(digest)) is None:
                        return None
                    files.append(CachedFile(target, digest, size, exe))
    except OSError:  # the cache's folders are missing or not directories
        return None
    if _clash(sorted(file.target for file in files)):
        return None
    return CacheCopy(tuple(files), tuple(folders))


def _manifest(objects: _Objects, md5: str) -> list[tuple[tuple[str, ...], str, bool]] | None:
    """A directory object's entries, or None when it is missing or not what DVC writes."""
    data = objects.read(md5, _MAX_MANIFEST)
    if data is None:
        return None
    try:
        document: Any = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, list):
        return None
    entries = []
    for entry in document:
        if not isinstance(entry, dict):
            return None
        digest, relpath = entry.get("md5"), entry.get("relpath")
        if not isinstance(digest, str) or not _MD5.fullmatch(digest):
            return None
        if not isinstance(relpath, str) or (parts := _parts(relpath)) is None:
            return None
        entries.append((parts, digest, entry.get("isexec") is True))
    return entries


class _Objects:
    """The cache's objects, reached through directory fds without following a link."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.fds: list[int] = []
        self.folders: dict[str, int | None] = {}
        self.md5 = -1

    def __enter__(self) -> _Objects:
        try:
            self.fds.append(os.open(self.cache, _DIR))
            self.fds.append(os.open("files", _DIR, dir_fd=self.fds[-1]))
            self.fds.append(os.open("md5", _DIR, dir_fd=self.fds[-1]))
        except OSError:
            self.__exit__(None, None, None)
            raise
        self.md5 = self.fds[-1]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for fd in [*self.fds, *(fd for fd in self.folders.values() if fd is not None)]:
            os.close(fd)
        self.fds, self.folders = [], {}

    def _folder(self, digest: str) -> int | None:
        prefix = digest[:2]
        if prefix not in self.folders:
            try:
                self.folders[prefix] = os.open(prefix, _DIR, dir_fd=self.md5)
            except OSError:
                self.folders[prefix] = None
        return self.folders[prefix]

    def size(self, digest: str) -> int | None:
        """The object's size; None unless it is there as a regular file."""
        folder = self._folder(digest)
        if folder is None:
            return None
        try:
            info = os.stat(digest[2:], dir_fd=folder, follow_symlinks=False)
        except OSError:
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def open(self, digest: str) -> int:
        folder = self._folder(digest)
        if folder is None:
            raise FileNotFoundError(errno.ENOENT, "not in the cache", digest)
        fd = os.open(digest[2:], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", digest)
        return fd

    def read(self, digest: str, limit: int) -> bytes | None:
        try:
            fd = self.open(digest)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limit + 1)
        return data if len(data) <= limit else None


class _Tree:
    """Folders of the work dir, made and entered through fds without following a link;
    only the fds of the current folder's ancestors stay open."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path: list[str] = []
        self.fds: list[int] = []

    def __enter__(self) -> _Tree:
        self.fds = [os.open(self.root, _DIR)]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds, self.path = [], []

    def folder(self, parts: tuple[str, ...]) -> int:
        keep = 0
        while keep < min(len(parts), len(self.path)) and parts[keep] == self.path[keep]:
            keep += 1
        while len(self.path) > keep:
            self.path.pop()
            os.close(self.fds.pop())
        for part in parts[keep:]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=self.fds[-1])
            self.fds.append(os.open(part, _DIR, dir_fd=self.fds[-1]))
            self.path.append(part)
        return self.fds[-1]


def _copy_one(objects: _Objects, tree: _Tree, file: CachedFile, clone: bool) -> bool:
    """Copy one object to its target (a reflink when ``clone``); whether it was one."""
    folder = tree.folder(file.target[:-1])
    source = objects.open(file.digest)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        target = os.open(file.target[-1], flags, 0o777 if file.executable else 0o666, dir_fd=folder)
        try:
            return _copy_data(source, target, file.size, clone)
        finally:
            os.close(target)
    finally:
        os.close(source)


def _copy_data(source: int, target: int, size: int, clone: bool) -> bool:
    if clone and size:
        try:
            fcntl.ioctl(target, FICLONE, source)
            return True
        except OSError as exc:
            if exc.errno not in _NO_CLONE:
                raise
    copied = 0
    try:
        while copied < size:
            step = os.copy_file_range(source, target, size - copied)
            if step == 0:
                break
            copied += step
    except OSError as exc:  # across file systems on older kernels
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL) or copied:
            raise
        while copied < size and (step := os.sendfile(target, source, None, size - copied)):
            copied += step
    if copied != size:
        raise OSError(errno.EIO, "the cached object is shorter than it was")
    return False
