"""A DVC-tracked file of a commit, read clean out of the repository's DVC cache.

The md5 comes from the commit's pointer (``data.pointers``), the bytes from the
per-repository cache that only the fetch's sandbox writes: DVC 3 keeps an
object at ``files/md5/<2>/<30>``, an output DVC 2 wrote at ``<2>/<30>``, and a
directory as a ``.dir`` manifest (a JSON list of ``{md5, relpath}``) beside
the objects of its files. Every object is read with the link-refusing reader
and its md5 checked as it is copied out, so neither a training (which never
sees the cache) nor a remote that served other bytes can change what modelci
scores on. When the cache lacks the object, ``read_tracked`` pulls that one
output in a sandboxed fetch of its own (the server's allow-list, credentials
and caps, as every fetch).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import yaml

from modelci.data.fetch import DataFetcher
from modelci.data.pointers import TrackedFile
from modelci.errors import DatasetError, OutputError
from modelci.runner.checkout import Mirror
from modelci.runner.outputs import copy_output_file, read_output_bytes
from modelci.runner.sandbox import acquire_slot
from modelci.settings import Settings

__all__ = ["copy_tracked", "object_relpath", "read_tracked"]

_MAX_MANIFEST_BYTES = 256 * 1024**2
_HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")
_NOT_A_MANIFEST = "a directory manifest DVC does not write"
_CHUNK = 1 << 20
POINTER = "modelci-scoring.dvc"  # the one output to fetch, in a work dir of its own


def object_relpath(md5: str, *, legacy: bool) -> str:
    """Where a DVC cache keeps the object ``md5`` (``<md5>.dir`` for a manifest)."""
    return f"{md5[:2]}/{md5[2:]}" if legacy else f"files/md5/{md5[:2]}/{md5[2:]}"


def _dos2unix_md5(path: Path) -> str:
    """DVC 2's md5 of a text file: of its bytes with CRLF line ends turned into LF."""
    digest, carry = hashlib.md5(usedforsecurity=False), b""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            chunk = carry + chunk
            chunk, carry = (chunk[:-1], b"\r") if chunk.endswith(b"\r") else (chunk, b"")
            digest.update(chunk.replace(b"\r\n", b"\n"))
    digest.update(carry)
    return digest.hexdigest()


def _matches(path: Path, md5: str, *, legacy: bool) -> bool:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == md5 or (legacy and _dos2unix_md5(path) == md5)


def _bad_object(
    tracked: TrackedFile, relpath: str, what: str = "other bytes than its md5 says"
) -> DatasetError:
    return DatasetError(
        f"the repository's DVC cache holds {tracked.output} (md5 {tracked.md5}, named by "
        f"{tracked.pointer}) with {what}",
        hint=f"remove {relpath} from the repository's DVC cache on the server: the next run "
        "fetches it again (and check what the remote serves)",
    )


def _inner_md5(cache: Path, tracked: TrackedFile, inner: str) -> str | None:
    """The md5 of ``inner`` in the directory output's manifest; None when the cache
    lacks the manifest."""
    relpath = object_relpath(tracked.md5, legacy=tracked.legacy)
    try:
        raw = read_output_bytes(cache, relpath, max_bytes=_MAX_MANIFEST_BYTES)
    except OutputError as exc:
        if not os.path.lexists(cache / relpath):
            return None
        raise DatasetError(
            f"cannot read the manifest of {tracked.output} out of the repository's DVC "
            f"cache: {exc.message}",
            hint=f"remove {relpath} from the repository's DVC cache on the server: the next "
            "run fetches it again",
        ) from None
    if hashlib.md5(raw, usedforsecurity=False).hexdigest() != tracked.md5.removesuffix(".dir"):
        raise _bad_object(tracked, relpath)
    try:
        entries = json.loads(raw)
    except ValueError:
        raise _bad_object(tracked, relpath, _NOT_A_MANIFEST) from None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("relpath") == inner:
            md5 = entry.get("md5")
            if isinstance(md5, str) and _HEX_MD5.match(md5):  # it becomes a path
                return md5
            raise _bad_object(tracked, relpath, _NOT_A_MANIFEST)
    raise DatasetError(
        f"{tracked.path} is not in the directory {tracked.output} as {tracked.pointer} "
        f"tracks it (md5 {tracked.md5})",
        hint=f"check the path, or add the file to {tracked.output} and `dvc add` it again",
    )


def copy_tracked(cache: Path, tracked: TrackedFile, dest: Path, *, max_bytes: int) -> str | None:
    """Copy the tracked file out of ``cache`` into ``dest``, its md5 checked; the md5,
    or None when the cache does not hold it (yet)."""
    if not cache.is_dir():
        return None  # the repository's first fetch has yet to make it
    inner = tracked.inner
    if inner is None and tracked.md5.endswith(".dir"):
        raise DatasetError(
            f"{tracked.path} is a directory DVC tracks ({tracked.pointer}), not a file",
            hint="name one CSV or Parquet file in it",
        )
    md5 = tracked.md5 if inner is None else _inner_md5(cache, tracked, inner)
    if md5 is None:
        return None
    relpath = object_relpath(md5, legacy=tracked.legacy)
    try:
        copy_output_file(cache, relpath, dest, max_bytes=max_bytes)
    except OutputError as exc:
        if not os.path.lexists(cache / relpath):
            return None
        raise DatasetError(
            f"cannot read {tracked.path} out of the repository's DVC cache: {exc.message}",
            hint=f"keep scoring data under {max_bytes // 1024**2} MB, or hold it on the "
            "server (modelci datasets add) and name it with scoring.dataset",
        ) from None
    if not _matches(dest, md5, legacy=tracked.legacy):
        dest.unlink(missing_ok=True)
        raise _bad_object(tracked, relpath)
    return md5


def read_tracked(
    fetcher: DataFetcher,
    mirror: Mirror,
    sha: str,
    tracked: TrackedFile,
    dest: Path,
    *,
    repository: str,
    aliases: tuple[str, ...],
    settings: Settings,
    max_bytes: int,
    cancel: threading.Event | None = None,
) -> str:
    """The tracked file of commit ``sha`` copied into ``dest`` from the repository's DVC
    cache (the one the runs' fetches use: keyed by the mirror's URL), fetched first
    when the cache lacks it; its md5."""
    cache = fetcher.cache_dir(mirror.url)
    md5 = copy_tracked(cache, tracked, dest, max_bytes=max_bytes)
    if md5 is None:
        _fetch_output(
            fetcher, mirror, sha, tracked, repository=repository, aliases=aliases,
            settings=settings, cancel=cancel,
        )  # fmt: skip
        md5 = copy_tracked(cache, tracked, dest, max_bytes=max_bytes)
    if md5 is None:
        raise DatasetError(
            f"the DVC remote did not provide {tracked.path} ({tracked.output}, md5 "
            f"{tracked.md5}, as {tracked.pointer} at {sha[:7]} names it)",
            hint="dvc push the data the commit points to",
        )
    return md5


def _fetch_output(
    fetcher: DataFetcher,
    mirror: Mirror,
    sha: str,
    tracked: TrackedFile,
    *,
    repository: str,
    aliases: tuple[str, ...],
    settings: Settings,
    cancel: threading.Event | None,
) -> None:
    """Pull the one output that holds ``tracked`` into the repository's DVC cache, from
    the remotes the commit's ``.dvc/config`` names (checked as every fetch is)."""
    runs_dir = settings.runs_dir
    runs_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{sha[:12]}-scoring-", dir=runs_dir))
    try:
        (workdir / ".dvc").mkdir()
        config = mirror.read_file(sha, ".dvc/config")
        if config is not None:
            (workdir / ".dvc" / "config").write_bytes(config)
        pointer = {"outs": [tracked.pointer_entry()]}
        (workdir / POINTER).write_text(yaml.safe_dump(pointer, sort_keys=False))
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        log_path = settings.logs_dir / f"{stamp}-scoring-{sha[:12]}.fetch.log"
        with acquire_slot(settings.slots_dir, settings.max_parallel_runs) as slot:
            fetcher.fetch(
                workdir,
                repository=repository,
                aliases=aliases,
                cache_key=mirror.url,
                slot=slot,
                log_path=log_path,
                cancel=cancel,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
