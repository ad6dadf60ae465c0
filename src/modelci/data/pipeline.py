"""A DVC pipeline as the configuration of a repository without ``modelci.yaml``.

``dvc repro --force`` runs every stage of ``dvc.yaml`` (forced: a pull request
that commits its own ``dvc.lock`` must not skip the training it is judged by;
a stage marked ``frozen: true`` still does not run), and the metrics are those
of every metrics file ``dvc.yaml`` declares (top-level ``metrics:`` and each
stage's ``metrics:`` outputs; JSON or YAML, as DVC reads them), merged by
``evaluate.metricfiles`` (a name in two files is kept from each, prefixed with
its file). The pipeline runs in the training sandbox, without network, on the
data the fetch checked out.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import ValidationError

from modelci import safeyaml
from modelci.errors import ConfigError
from modelci.runner.config import RepoConfig

__all__ = ["PIPELINE_COMMAND", "pipeline_config", "pipeline_metrics"]

PIPELINE_COMMAND = "dvc repro --force"


def _paths(entries: Any) -> list[str]:
    paths: list[str] = []
    for entry in entries or []:
        if isinstance(entry, str):
            paths.append(entry)
        elif isinstance(entry, dict):
            paths += [str(key) for key in entry]
    return paths


def pipeline_metrics(document: Any) -> list[str]:
    """The metrics files a parsed ``dvc.yaml`` declares, in order."""
    if not isinstance(document, dict):
        return []
    paths = _paths(document.get("metrics"))
    for stage in (document.get("stages") or {}).values():
        if isinstance(stage, dict):
            # A stage's paths are relative to its wdir (the root unless it says otherwise).
            wdir = str(stage.get("wdir") or ".")
            paths += [
                posixpath.normpath(posixpath.join(wdir, p)) for p in _paths(stage.get("metrics"))
            ]
    return list(dict.fromkeys(paths))


def pipeline_config(read: Callable[[str], bytes | None]) -> RepoConfig | None:
    """The configuration ``dvc.yaml`` implies, or None when the commit has none."""
    raw = read("dvc.yaml")
    if raw is None:
        return None
    try:
        document = safeyaml.load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"dvc.yaml is not valid YAML: {exc}", hint="fix dvc.yaml") from None
    metrics = pipeline_metrics(document)
    if not metrics:
        raise ConfigError(
            "dvc.yaml declares no metrics file, and the commit has no modelci.yaml",
            hint="declare one under a stage's metrics: (e.g. - metrics.json: {cache: false}), "
            "or add a modelci.yaml naming the metrics file",
        )
    try:
        return RepoConfig(train=PIPELINE_COMMAND, metrics=metrics, repeats=1)
    except ValidationError:
        raise ConfigError(
            f"dvc.yaml declares metrics files outside the repository ({', '.join(metrics)})",
            hint="declare metrics files by paths inside the repository, relative to dvc.yaml",
        ) from None
