"""A run's metrics files, read from its work dir and merged into one set of metrics.

A file is JSON unless its name ends in ``.yaml`` or ``.yml`` (DVC's metrics files
may be either). Every file is read with the link-refusing reader and flattened
(``flatten_metrics``). Names are merged as they are; a name that two files both
give is kept once per file, prefixed with the file's path (``eval.json:accuracy``),
and a note says so: keeping either value alone would silently hide the other,
and a gate on the bare name then finds it missing rather than judging the wrong
number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelci.errors import OutputError
from modelci.evaluate.metrics import flatten_metrics
from modelci.runner.outputs import read_json_output, read_output_bytes

__all__ = ["MetricsRead", "read_metrics"]

# libyaml's parser when PyYAML was built with it; both are the safe loaders.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_NOTES = 10
_YAML_HINT = "write it with yaml.safe_dump({'accuracy': 0.93}, open(path, 'w'))"


@dataclass(frozen=True)
class MetricsRead:
    metrics: dict[str, float]
    # What the merge did that a reader should know (names prefixed after a clash).
    notes: tuple[str, ...] = field(default_factory=tuple)


def is_yaml(path: str) -> bool:
    return path.lower().endswith((".yaml", ".yml"))


def _read_yaml(workdir: Path, relpath: str, max_bytes: int) -> Any:
    raw = read_output_bytes(workdir, relpath, max_bytes=max_bytes)
    try:
        return yaml.load(raw.decode("utf-8-sig"), Loader=_Loader)  # noqa: S506 (a safe loader)
    except UnicodeDecodeError as exc:
        raise OutputError(
            f"{relpath} is not UTF-8 text (byte {exc.start})", hint=_YAML_HINT
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise OutputError(f"{relpath} is not valid YAML ({exc})", hint=_YAML_HINT) from None


def _read_one(workdir: Path, relpath: str, max_bytes: int) -> dict[str, float]:
    if is_yaml(relpath):
        document = _read_yaml(workdir, relpath, max_bytes)
    else:
        document = read_json_output(workdir, relpath, max_bytes=max_bytes)
    return flatten_metrics(document, source=relpath)


def read_metrics(workdir: Path, files: Sequence[str], *, max_bytes: int) -> MetricsRead:
    """The merged metrics of ``files`` (in order); OutputError naming a file that is
    missing, unreadable or holds something other than numbers."""
    per_file = [(path, _read_one(workdir, path, max_bytes)) for path in files]
    owners: dict[str, list[str]] = {}
    for path, metrics in per_file:
        for name in metrics:
            owners.setdefault(name, []).append(path)
    merged: dict[str, float] = {}
    for path, metrics in per_file:
        for name, value in metrics.items():
            merged[name if len(owners[name]) == 1 else f"{path}:{name}"] = value
    clashes = sorted((name, paths) for name, paths in owners.items() if len(paths) > 1)
    notes = [
        f"{name} is in {' and '.join(paths)}: kept as "
        f"{', '.join(f'{path}:{name}' for path in paths)}"
        for name, paths in clashes[:_MAX_NOTES]
    ]
    if len(clashes) > _MAX_NOTES:
        notes.append(f"{len(clashes) - _MAX_NOTES} more names are in several metrics files")
    return MetricsRead(merged, tuple(notes))
