"""Read files that the repository's (untrusted) code wrote into its work dir.

The code controls every byte of the work dir, so a "metrics file" can be a
symlink to /etc/shadow, sit behind a symlinked directory, be a FIFO that
blocks a reader forever, be huge, or be JSON nested deep enough to exhaust the
parser. Reads here never follow a symbolic link anywhere below the work dir
(``openat2`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``, or a walk with
``O_NOFOLLOW`` per component where ``openat2`` is missing), accept only
regular files, and cap the size.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import errno
import functools
import json
import os
import platform
import re
import stat
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from modelci.errors import OutputError

__all__ = [
    "copy_output_file",
    "copy_output_tree",
    "read_json_output",
    "read_output_bytes",
    "write_file_atomically",
]

# openat2 has the same number on both: it was added after the tables were unified.
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(platform.machine())
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_LITERAL_MAX = 100_000  # a str(dict) of metrics is tiny; ast on big input is costly
# numpy >= 2 prints scalars in a dict as np.float64(0.9): keep just the number.
_NUMPY_SCALAR = re.compile(r"\b(?:np|numpy)\.(?:float|int|uint)(?:16|32|64)\(([^()]*)\)")
_LINK_HINT = (
    "write the file itself inside the repository directory; modelci does not follow "
    "symbolic links in outputs"
)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _NoOpenat2(Exception):
    """The kernel (or a seccomp filter) does not offer openat2."""


_use_openat2 = _SYS_OPENAT2 is not None  # turned off on the first ENOSYS


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _openat2(dirfd: int, relpath: str) -> int:
    resolve = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
    how = _OpenHow(_FILE_FLAGS, 0, resolve)
    path = ctypes.c_char_p(os.fsencode(relpath))
    number, size = ctypes.c_long(_SYS_OPENAT2 or 0), ctypes.c_size_t(ctypes.sizeof(how))
    fd = _libc().syscall(number, ctypes.c_int(dirfd), path, ctypes.byref(how), size)
    if fd < 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            raise _NoOpenat2
        raise OSError(code, os.strerror(code), relpath)
    return int(fd)


def _walk_open(dirfd: int, parts: list[str]) -> int:
    # '..' was refused up front, so descending one real directory at a time
    # without following links cannot leave dirfd's tree.
    current = dirfd
    try:
        for part in parts[:-1]:
            following = os.open(part, _DIR_FLAGS, dir_fd=current)
            if current != dirfd:
                os.close(current)
            current = following
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=current)
    finally:
        if current != dirfd:
            os.close(current)


def _parts(relpath: str) -> list[str]:
    hint = "give a path relative to the repository root, such as metrics.json"
    if not relpath or "\0" in relpath:
        raise OutputError(f"{relpath!r} is not a usable output path", hint=hint)
    path = PurePosixPath(relpath)
    if path.is_absolute():
        raise OutputError(f"output path {relpath} is absolute", hint=hint)
    if ".." in path.parts:
        raise OutputError(f"output path {relpath} leaves the repository directory", hint=hint)
    parts = [part for part in path.parts if part != "."]
    if not parts:
        raise OutputError(f"output path {relpath!r} names no file", hint=hint)
    return parts


def _open_error(exc: OSError, relpath: str, dirfd: int, parts: list[str]) -> OutputError:
    if exc.errno == errno.ENOENT:
        return OutputError(
            f"the training command did not write {relpath}",
            hint="check metrics:/predictions: in modelci.yaml (paths are relative to the "
            "repository root) and the command's output in the log",
        )
    is_link = exc.errno in (errno.ELOOP, errno.EXDEV)
    if exc.errno == errno.ENOTDIR:  # O_DIRECTORY|O_NOFOLLOW on a link says ENOTDIR
        with contextlib.suppress(OSError):
            for depth in range(1, len(parts)):
                info = os.stat("/".join(parts[:depth]), dir_fd=dirfd, follow_symlinks=False)
                if is_link := stat.S_ISLNK(info.st_mode):
                    break
    if is_link:
        return OutputError(f"{relpath} is, or is inside, a symbolic link", hint=_LINK_HINT)
    if exc.errno == errno.ENOTDIR:
        return OutputError(f"a parent of {relpath} is not a directory", hint="write a regular file")
    return OutputError(f"cannot open {relpath}: {exc.strerror}", hint="write a regular file")


def _open_regular(workdir: Path, relpath: str, max_bytes: int) -> tuple[int, OutputError]:
    """An fd on workdir/relpath, a regular file of at most max_bytes reached without links,
    and the error to raise if it turns out larger while it is read."""
    global _use_openat2
    parts = _parts(relpath)
    dirfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # ours, trusted
    try:
        try:
            if _use_openat2:
                try:
                    fd = _openat2(dirfd, "/".join(parts))
                except _NoOpenat2:
                    _use_openat2 = False
            if not _use_openat2:
                fd = _walk_open(dirfd, parts)
        except OSError as exc:
            raise _open_error(exc, relpath, dirfd, parts) from None
    finally:
        os.close(dirfd)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise OutputError(f"{relpath} is a directory", hint="point modelci.yaml at a file")
        if not stat.S_ISREG(info.st_mode):
            kind = "a FIFO, socket or device"
            raise OutputError(f"{relpath} is not a regular file ({kind})", hint="write a file")
        too_big = OutputError(
            f"{relpath} is larger than {max_bytes:,} bytes",
            hint="write only metrics (or predictions on the evaluation rows) to this file",
        )
        if info.st_size > max_bytes:
            raise too_big
    except BaseException:
        os.close(fd)
        raise
    return fd, too_big


def read_output_bytes(workdir: Path, relpath: str, *, max_bytes: int) -> bytes:
    """The bytes of workdir/relpath, a regular file of at most max_bytes reached without links."""
    fd, too_big = _open_regular(workdir, relpath, max_bytes)
    try:
        chunks, total = [], 0
        while chunk := os.read(fd, min(max_bytes + 1 - total, 1 << 20)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # it grew after fstat
                raise too_big
        return b"".join(chunks)
    finally:
        os.close(fd)


def copy_output_file(workdir: Path, relpath: str, dest: Path, *, max_bytes: int) -> int:
    """Copy workdir/relpath (read as read_output_bytes does) to dest without holding it in
    memory; returns its size."""
    fd, too_big = _open_regular(workdir, relpath, max_bytes)
    total = 0
    try:
        with open(dest, "wb") as out:
            while chunk := os.read(fd, 1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise too_big
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return total


def _plain(value: Any, depth: int = 0) -> bool:
    if depth > 50:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _python_dict(text: str) -> dict[str, Any] | None:
    """A dict printed by Python's str() (the seed tutorial's result.txt), else None."""
    text = text.strip()
    if len(text) > _LITERAL_MAX or not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        # literal_eval only builds literals: no names, calls or attribute access.
        value = ast.literal_eval(_NUMPY_SCALAR.sub(r"\1", text))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) and _plain(value) else None


def read_json_output(workdir: Path, relpath: str, *, max_bytes: int = 10_000_000) -> Any:
    """The parsed JSON of workdir/relpath (read as read_output_bytes does)."""
    raw = read_output_bytes(workdir, relpath, max_bytes=max_bytes)
    hint = "write it with json.dump(...), e.g. json.dump({'accuracy': 0.93}, open(path, 'w'))"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OutputError(f"{relpath} is not UTF-8 text (byte {exc.start})", hint=hint) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise OutputError(f"{relpath} nests too deeply to read", hint=hint) from None
    except json.JSONDecodeError as exc:
        literal = _python_dict(text)
        if literal is not None:
            return literal
        raise OutputError(
            f"{relpath} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            hint=hint,
        ) from None


def _open_dir_beneath(workdir: Path, relpath: str) -> int:
    dirfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # ours, trusted
    try:
        for part in _parts(relpath) if relpath not in ("", ".") else []:
            try:
                following = os.open(part, _DIR_FLAGS, dir_fd=dirfd)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise OutputError(
                        f"the training command did not write {relpath}",
                        hint="check the model paths in modelci.yaml and the run's log",
                    ) from None
                raise OutputError(
                    f"{relpath} is not a directory reached without symbolic links",
                    hint=_LINK_HINT,
                ) from None
            os.close(dirfd)
            dirfd = following
        return dirfd
    except BaseException:
        os.close(dirfd)
        raise


def copy_output_tree(
    workdir: Path,
    relpath: str,
    dest: Path,
    *,
    max_bytes: int,
    max_files: int = 10_000,
    suffixes: tuple[str, ...] | None = None,
    skip_unusual: bool = False,
) -> int:
    """Copy the directory workdir/relpath to dest (created), as read_output_bytes reads files.

    Only directories and regular files are copied, none reached through a link.
    Anything else (a link, FIFO, socket, device) is refused, or skipped with
    ``skip_unusual`` (for copying source code, where links are ordinary).
    ``suffixes`` keeps only files with those name endings. Returns the bytes copied.
    """
    state = {"bytes": 0, "files": 0, "seen": 0}

    def refuse(path: str, what: str) -> None:
        if not skip_unusual:
            raise OutputError(f"{path} is {what}", hint=_LINK_HINT)

    def copy_dir(dirfd: int, target: Path, where: str, depth: int) -> None:
        if depth > 64:
            raise OutputError(f"{where} nests too deeply", hint="keep the model directory flat")
        target.mkdir(parents=True, exist_ok=True)
        with os.scandir(dirfd) as entries:
            names = sorted(entry.name for entry in entries)
        # Even skipped entries cost a stat: a tree of millions must not stall the server.
        state["seen"] += len(names)
        if state["seen"] > max_files * 20:
            raise OutputError(f"{relpath} holds too many entries", hint="keep it small")
        for name in names:
            path = f"{where}/{name}"
            info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                refuse(path, "a symbolic link")
            elif stat.S_ISDIR(info.st_mode):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=dirfd)
                except OSError:
                    refuse(path, "a directory that changed while it was copied")
                    continue
                try:
                    copy_dir(child, target / name, path, depth + 1)
                finally:
                    os.close(child)
            elif not stat.S_ISREG(info.st_mode):
                refuse(path, "not a regular file (a FIFO, socket or device)")
            elif suffixes is None or name.endswith(suffixes):
                copy_file(dirfd, name, target / name, path)

    def copy_file(dirfd: int, name: str, target: Path, path: str) -> None:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dirfd)
        except OSError:
            refuse(path, "a symbolic link or a file that changed while it was copied")
            return
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                refuse(path, "not a regular file")
                return
            state["files"] += 1
            if state["files"] > max_files:
                raise OutputError(f"{relpath} holds more than {max_files} files", hint="")
            with open(target, "wb") as out:
                while chunk := os.read(fd, 1 << 20):
                    state["bytes"] += len(chunk)
                    if state["bytes"] > max_bytes:
                        raise OutputError(
                            f"{relpath} is larger than {max_bytes:,} bytes",
                            hint="keep only the model's files in that directory",
                        )
                    out.write(chunk)
        finally:
            os.close(fd)

    dirfd = _open_dir_beneath(workdir, relpath)
    try:
        copy_dir(dirfd, dest, relpath.rstrip("/") or ".", 0)
    finally:
        os.close(dirfd)
    return state["bytes"]


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` so that a reader sees the old file or all of the new one.

    The bytes go to a temporary file in the same directory, are flushed to disk,
    and the file is renamed over ``path``: a crash, a full disk or a kill midway
    leaves no empty or half-written file under that name (a stored result read
    back later must not be one).
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)
