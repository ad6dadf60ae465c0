"""A checked-out commit's DVC layout, read by modelci before any of its code runs.

Which remotes the commit's data comes from (``.dvc/config``: ``core.remote`` and
each ``remote "NAME"`` section's ``url``, nothing else of it is used), the
``.dvc`` files and ``dvc.lock`` that point at the data, and the sizes they
declare. Every file is read with ``runner.outputs`` (no symlink is followed, a
size cap), since the repository chose them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelci import safeyaml
from modelci.data.imports import is_import
from modelci.errors import DataFetchError, OutputError
from modelci.runner.outputs import read_output_bytes

__all__ = ["DvcLayout", "dvc_file_outs", "find_dvc", "parse_dvc_config"]

_MAX_FILE = 5_000_000
_MAX_DVC_FILES = 10_000
_SECTION = re.compile(r"""^\[\s*(?P<q>'?)(?P<name>[^\]]*?)(?P=q)\s*\]$""")
_REMOTE_SECTION = re.compile(r"""^remote\s+"(?P<name>[^"]+)"$""")


@dataclass(frozen=True)
class DvcLayout:
    """What a commit tracks with DVC and where it says the data is."""

    dvc_files: tuple[str, ...]  # relative paths of the *.dvc files
    has_lock: bool
    default_remote: str | None
    remote_urls: dict[str, str]  # name → url, as the repository wrote it
    output_remotes: frozenset[str] = field(default_factory=frozenset)  # outs' own `remote:`
    declared_bytes: int = 0  # the outputs' `size` fields, summed
    imports: tuple[str, ...] = ()  # the .dvc files that are imports (data.imports)

    def remotes_used(self) -> list[str]:
        """The remotes a pull of this commit reads from."""
        names = set(self.output_remotes)
        if self.default_remote:
            names.add(self.default_remote)
        return sorted(names)


def parse_dvc_config(text: str) -> tuple[str | None, dict[str, str]]:
    """``core.remote`` and each remote's url from a ``.dvc/config`` (configobj's INI)."""
    # Only these values are taken, checked, and written into a config of modelci's:
    # where this reads the file differently from DVC, a fetch fails, never widens.
    section, default, urls = "", None, dict[str, str]()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if match := _SECTION.match(line):
            section = match.group("name").strip()
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip().strip("'\"")
        if section == "core" and key == "remote":
            default = value
        elif (remote := _REMOTE_SECTION.match(section)) and key == "url":
            urls[remote.group("name")] = value
    return default, urls


def _read(workdir: Path, relpath: str) -> str:
    try:
        return read_output_bytes(workdir, relpath, max_bytes=_MAX_FILE).decode("utf-8", "replace")
    except OutputError as exc:
        raise DataFetchError(
            f"cannot read {relpath}: {exc.message}",
            hint="DVC's files must be regular files in the repository",
        ) from None


def _yaml(workdir: Path, relpath: str) -> Any:
    try:
        return safeyaml.load(_read(workdir, relpath))
    except yaml.YAMLError as exc:
        raise DataFetchError(f"{relpath} is not valid YAML: {exc}", hint="fix the file") from None


def _dvc_files(workdir: Path) -> list[str]:
    found: list[str] = []
    for root, dirs, files in os.walk(workdir):
        dirs[:] = [d for d in dirs if d not in (".git", ".dvc")]
        for name in files:
            path = Path(root, name)
            if name.endswith(".dvc") and path.is_file() and not path.is_symlink():
                found.append(str(path.relative_to(workdir)))
                if len(found) > _MAX_DVC_FILES:
                    raise DataFetchError(
                        f"the commit has more than {_MAX_DVC_FILES} .dvc files",
                        hint="track directories rather than single files with dvc add",
                    )
    return sorted(found)


def _outs(document: Any, relpath: str) -> list[dict[str, Any]]:
    """The outputs a .dvc file or dvc.lock declares. A .dvc file may be an import
    (``data.imports`` checks its source); a pipeline stage's dependency outside the
    repository is refused."""
    if not isinstance(document, dict):
        raise DataFetchError(f"{relpath} is not a DVC file", hint="fix or remove it")
    holders = [document] if relpath != "dvc.lock" else list((document.get("stages") or {}).values())
    outs: list[dict[str, Any]] = []
    for holder in holders:
        if not isinstance(holder, dict):
            continue
        for dep in holder.get("deps") or [] if relpath == "dvc.lock" else []:
            if isinstance(dep, dict) and ("repo" in dep or "://" in str(dep.get("path", ""))):
                raise DataFetchError(
                    f"{relpath} has a stage that reads data from outside the repository, "
                    "which modelci does not fetch: it reaches past the remotes the server "
                    "allows",
                    hint="bring the data in with dvc import-url (a .dvc file modelci checks "
                    "against the server's allow-list) and make the stage depend on it",
                )
        outs += [out for out in holder.get("outs") or [] if isinstance(out, dict)]
    return outs


def dvc_file_outs(workdir: Path, relpath: str) -> list[dict[str, Any]]:
    """The outputs one ``.dvc`` file declares, as written (read safely)."""
    return _outs(_yaml(workdir, relpath), relpath)


def find_dvc(workdir: Path) -> DvcLayout | None:
    """The commit's DVC layout, or None when it tracks nothing with DVC."""
    if not (workdir / ".dvc").is_dir() or (workdir / ".dvc").is_symlink():
        return None
    dvc_files = _dvc_files(workdir)
    lock = workdir / "dvc.lock"
    has_lock = lock.is_file() and not lock.is_symlink()
    if not dvc_files and not has_lock:
        return None
    default: str | None = None
    urls: dict[str, str] = {}
    config = workdir / ".dvc" / "config"
    if config.exists() or config.is_symlink():
        default, urls = parse_dvc_config(_read(workdir, ".dvc/config"))
    documents = {f: _yaml(workdir, f) for f in dvc_files}
    outs = [out for f in dvc_files for out in _outs(documents[f], f)]
    if has_lock:
        outs += _outs(_yaml(workdir, "dvc.lock"), "dvc.lock")
    sizes = [out.get("size") for out in outs]
    return DvcLayout(
        dvc_files=tuple(dvc_files),
        has_lock=has_lock,
        default_remote=default,
        remote_urls=urls,
        output_remotes=frozenset(str(out["remote"]) for out in outs if out.get("remote")),
        declared_bytes=sum(size for size in sizes if isinstance(size, int) and size > 0),
        imports=tuple(f for f in dvc_files if is_import(documents[f])),
    )
