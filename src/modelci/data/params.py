"""Params changes between two commits, as ``dvc params diff`` shows them.

Which files hold params follows DVC (``dvc params diff`` without targets):
``params.yaml`` whole when it exists, each params file a ``dvc.yaml`` stage
declares (only the keys it names, or the whole file for ``- file.json:`` with
no keys; string entries are keys of the stage's ``params.yaml``), and the files
of the top-level ``params:`` list, whole. Each commit's own ``dvc.yaml`` says
which of its files count. Nested keys are joined with dots (``train.lr``);
lists stay values, as DVC keeps them.

Everything comes from the repository, so nothing here trusts it: files are
capped in size and in params, values are made plain (JSON-ready, bounded), and
a file that cannot be read becomes a note in the report, never an error. The
only I/O is the ``read(path) -> bytes | None`` each side is given.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import posixpath
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from modelci import safeyaml
from modelci.errors import ModelCIError

__all__ = [
    "DEFAULT_PARAMS_FILE",
    "ParamChange",
    "ParamsDiff",
    "diff_params",
    "flatten_params",
    "params_files",
]

DEFAULT_PARAMS_FILE = "params.yaml"
Read = Callable[[str], bytes | None]
Status = Literal["added", "removed", "modified"]

MAX_FILE_BYTES = 1_000_000
MAX_PARAMS = 10_000  # per file: more is not a params file a person reviews
MAX_FILES = 50
MAX_CHANGES = 1_000
_MAX_DEPTH = 32
_VALUE_NODES = 200  # per value: a longer list is shown by its length
_MAX_TEXT = 500


@dataclass(frozen=True)
class ParamChange:
    """One param that differs: ``old`` is None when added, ``new`` when removed."""

    path: str  # the params file
    key: str  # dotted
    old: Any
    new: Any
    status: Status

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "key": self.key,
            "old": self.old,
            "new": self.new,
            "status": self.status,
        }


@dataclass(frozen=True)
class ParamsDiff:
    changes: tuple[ParamChange, ...] = ()
    # What could not be compared and why (a file that is not valid YAML...), for the report.
    notes: tuple[str, ...] = ()


class _Unreadable(Exception):
    """A params file that cannot be compared; the message is the report's note."""


# Which files and keys -------------------------------------------------------------------


def _normal_path(base: str, name: str) -> str | None:
    """``name`` (relative to ``base``) as a path in the repository, or None when it leaves
    the repository, is templated (``${...}``) or is not a plain path."""
    if "${" in name or "\0" in name or name.startswith("/"):
        return None
    path = posixpath.normpath(posixpath.join(base, name))
    if path == ".." or path.startswith("../") or path == ".":
        return None
    return path


def _stage_params(stage: Mapping[Any, Any]) -> Iterator[tuple[str, str | None]]:
    """(file, key) pairs of one stage's ``params:``; key None is the whole file."""
    wdir = stage.get("wdir")
    base = wdir if isinstance(wdir, str) else "."
    entries = stage.get("params")
    if not isinstance(entries, list):
        return
    for entry in entries:
        if isinstance(entry, str):
            path = _normal_path(base, DEFAULT_PARAMS_FILE)
            if path is not None and "${" not in entry:
                yield path, entry
        elif isinstance(entry, dict):
            for name, keys in entry.items():
                path = _normal_path(base, str(name))
                if path is None:
                    continue
                if not keys:
                    yield path, None
                elif isinstance(keys, list):
                    yield from ((path, str(k)) for k in keys if "${" not in str(k))


def _stages(document: Mapping[Any, Any]) -> Iterator[Mapping[Any, Any]]:
    stages = document.get("stages")
    if not isinstance(stages, dict):
        return
    for stage in stages.values():
        if not isinstance(stage, dict):
            continue
        # foreach stages keep their definition under do:
        inner = stage.get("do")
        yield inner if "foreach" in stage and isinstance(inner, dict) else stage


def params_files(dvc_yaml: Any, *, has_default: bool) -> dict[str, tuple[str, ...] | None]:
    """Params file → the keys tracked in it (None: the whole file), from a parsed
    ``dvc.yaml`` (None without one). ``has_default``: the commit has params.yaml."""
    tracked: dict[str, list[str]] = {}
    whole: set[str] = set()
    if has_default:
        whole.add(DEFAULT_PARAMS_FILE)
    if isinstance(dvc_yaml, dict):
        top = dvc_yaml.get("params")
        for name in top if isinstance(top, list) else []:
            if isinstance(name, str) and (path := _normal_path(".", name)) is not None:
                whole.add(path)
        for stage in _stages(dvc_yaml):
            for path, key in _stage_params(stage):
                if key is None:
                    whole.add(path)
                else:
                    tracked.setdefault(path, []).append(key)
    # As DVC merges them: a file tracked whole anywhere is compared whole.
    files: dict[str, tuple[str, ...] | None] = {}
    for path in [*sorted(whole), *tracked]:
        files[path] = None if path in whole else tuple(dict.fromkeys(tracked[path]))
    return dict(list(files.items())[:MAX_FILES])


# Reading a params file ------------------------------------------------------------------


def _plain(value: Any, budget: list[int], depth: int = 0) -> Any:
    """``value`` as JSON-ready data, bounded: YAML may hold aliases, recursion, dates."""
    budget[0] -= 1
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > _MAX_TEXT:
            return value[:_MAX_TEXT] + "…"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
            return f"{value:.6g}"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list | tuple | dict):
        if depth >= _MAX_DEPTH or budget[0] <= 0:
            return f"<{type(value).__name__} of {len(value)} items>"
        if isinstance(value, dict):
            return {str(k): _plain(v, budget, depth + 1) for k, v in value.items()}
        return [_plain(v, budget, depth + 1) for v in value]
    return f"<{type(value).__name__}>"


def flatten_params(document: Any) -> dict[str, Any]:
    """Nested mappings flattened with dots, as DVC does; lists and scalars are values."""
    if not isinstance(document, dict):
        raise _Unreadable(f"holds {type(document).__name__}, not a mapping of params")
    flat: dict[str, Any] = {}
    # Depth-first with an explicit stack, in the file's order; every node counts
    # toward the cap, so aliases that fan out cannot make this loop long.
    stack: list[tuple[str, Any, int]] = [("", document, 0)]
    visited = 0
    while stack:
        prefix, node, depth = stack.pop()
        visited += 1
        if visited > 4 * MAX_PARAMS or len(flat) > MAX_PARAMS:
            raise _Unreadable(f"holds more than {MAX_PARAMS:,} params")
        if isinstance(node, dict) and (depth == 0 or node) and depth < _MAX_DEPTH:
            for key, value in reversed(list(node.items())):
                name = f"{prefix}.{key}" if prefix else str(key)
                stack.append((name, value, depth + 1))
        elif not (isinstance(node, dict) and not node):  # DVC drops empty groups
            flat[prefix] = _plain(node, [_VALUE_NODES])
    return flat


def _parse(raw: bytes, path: str) -> Any:
    if len(raw) > MAX_FILE_BYTES:
        raise _Unreadable(f"is over {MAX_FILE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unreadable("is not UTF-8 text") from None
    suffix = posixpath.splitext(path)[1].lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".py":
            raise _Unreadable("is a Python params file, which modelci does not read")
        return safeyaml.load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise _Unreadable(f"is not valid YAML{line}: {problem}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _Unreadable(f"is not valid {suffix[1:].upper()}: {exc}") from None
    except RecursionError:
        raise _Unreadable("nests too deeply to be read") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python parses
        raise _Unreadable(f"cannot be parsed: {str(exc)[:200]}") from None


def _select(flat: dict[str, Any], keys: tuple[str, ...] | None) -> dict[str, Any]:
    if keys is None:
        return flat
    # A key names a param or a whole group of them (``train`` → train.lr, train.epochs).
    prefixes = tuple(f"{k}." for k in keys)
    return {k: v for k, v in flat.items() if k in keys or k.startswith(prefixes)}


@dataclass(frozen=True)
class _Side:
    role: str
    files: dict[str, tuple[str, ...] | None]
    read: Read
    notes: list[str]

    def load(self, path: str) -> dict[str, Any] | None:
        """The tracked params of ``path`` ({} when the commit lacks the file), None when
        it is unreadable (a note says why)."""
        if path not in self.files:  # tracked by the other commit only
            return {}
        keys = self.files[path]
        try:
            raw = self.read(path)
            if raw is None:
                if path != DEFAULT_PARAMS_FILE:
                    self.notes.append(f"{path}, which dvc.yaml names, is missing at {self.role}")
                return {}
            return _select(flatten_params(_parse(raw, path)), keys)
        except _Unreadable as exc:
            self.notes.append(f"{path} at {self.role} {exc}: its params are not compared")
        except ModelCIError as exc:  # the read itself refused (over git's size cap)
            self.notes.append(f"{path} at {self.role} could not be read: {exc.message}")
        return None


def _side(role: str, read: Read, notes: list[str]) -> _Side:
    document: Any = None
    only = "only params.yaml is compared"
    try:
        raw = read("dvc.yaml")
    except ModelCIError as exc:
        notes.append(f"dvc.yaml at {role} could not be read ({exc.message}): {only}")
        raw = None
    if raw is not None:
        try:
            document = safeyaml.load(raw[:MAX_FILE_BYTES])
        except (yaml.YAMLError, RecursionError, ValueError):
            notes.append(f"dvc.yaml at {role} is not valid YAML: {only}")
    try:
        has_default = read(DEFAULT_PARAMS_FILE) is not None
    except ModelCIError:
        has_default = True  # reading it again says why it cannot be read
    return _Side(role, params_files(document, has_default=has_default), read, notes)


def diff_params(read_base: Read, read_head: Read) -> ParamsDiff:
    """The params that differ between base and head (both read with their ``read``)."""
    notes: list[str] = []
    base, head = _side("base", read_base, notes), _side("head", read_head, notes)
    changes: list[ParamChange] = []
    for path in dict.fromkeys([*head.files, *base.files]):
        old, new = base.load(path), head.load(path)
        if old is None or new is None:
            continue
        for key, value in new.items():
            if key not in old:
                changes.append(ParamChange(path, key, None, value, "added"))
            elif old[key] != value:
                changes.append(ParamChange(path, key, old[key], value, "modified"))
        changes += [
            ParamChange(path, k, v, None, "removed") for k, v in old.items() if k not in new
        ]
    if len(changes) > MAX_CHANGES:
        notes.append(f"{len(changes) - MAX_CHANGES:,} more params changed than are listed")
    return ParamsDiff(tuple(changes[:MAX_CHANGES]), tuple(dict.fromkeys(notes)))
