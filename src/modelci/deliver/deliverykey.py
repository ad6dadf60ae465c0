"""What a registered version was delivered from, checked before anything trains.

A delivery refuses a commit that cannot deliver (no ``modelci.yaml``, no
``model:`` section) before training, and keys each registered version by the
commit, its environment, its configuration and, with ``scoring:``, the checksum
of the rows it was scored on (the MLflow version tag ``modelci.delivery_key``).
A later delivery with the same key reuses the version; a server-held dataset
replaced under the same name, or other rows behind a DVC pointer, give another
key, so the commit is trained and scored again rather than keeping old scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from modelci.errors import ConfigError
from modelci.runner.checkout import Mirror
from modelci.runner.config import CONFIG_FILE, RepoConfig, parse_config
from modelci.runner.environments import EnvironmentManager, gather_requirements

if TYPE_CHECKING:
    from modelci.scoring.plan import ScoringPlan

__all__ = ["MODEL_SECTION_HINT", "delivery_config", "delivery_key", "overlay_digest"]

# Bumped when what a delivery registers changes, so older versions are not reused.
_DELIVERY_KEY_VERSION = "1"
MODEL_SECTION_HINT = (
    "add a model: section that says where the trained model is: artifact: model.pkl (a "
    "pickle or joblib file the training writes), mlflow: true, or interface: module:Class "
    "(see 'The model: section of modelci.yaml' in the README)"
)


def delivery_config(mirror: Mirror, sha: str) -> RepoConfig:
    """The commit's configuration, refused before training when it cannot deliver."""
    text = mirror.read_file(sha, CONFIG_FILE)
    if text is None:
        raise ConfigError(
            f"commit {sha[:7]} has no {CONFIG_FILE}: delivery needs one with a model: section",
            hint=f"add {CONFIG_FILE} with train:, metrics: and a model: section (see "
            "'Writing modelci.yaml' and 'The model: section of modelci.yaml' in the README)",
        )
    config = parse_config(text)
    if config.model.source is None:
        raise ConfigError(
            f"{CONFIG_FILE} at {sha[:7]} has no model: section saying where the trained "
            "model is, so there is nothing to register (refused before training)",
            hint=MODEL_SECTION_HINT,
        )
    return config


def overlay_digest(overlay: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for path, text in sorted(overlay.items()):
        digest.update(f"{path}\0{len(text)}\0".encode())
        digest.update(text)
    return f"overlay:{digest.hexdigest()}"


def delivery_key(
    mirror: Mirror,
    sha: str,
    config: RepoConfig,
    environments: EnvironmentManager,
    scoring: ScoringPlan | None,
    overlay: Mapping[str, bytes] | None = None,
) -> str:
    """The key of (commit, environment, configuration, scored rows) a version is for;
    with ``overlay`` (refreshed DVC imports written over the commit), of those too."""

    def read(path: str) -> bytes | None:
        return mirror.read_file(sha, path)

    requirements = gather_requirements(config.install, read, uv_bin=environments.uv_bin)
    parts = [_DELIVERY_KEY_VERSION, sha, environments.key_for(requirements), config.digest()]
    if scoring is not None:  # only then: the keys of versions without scoring stay as they were
        parts.append(scoring.digest())
    if overlay:  # only then, likewise: a refreshed import is other data than the commit's
        parts.append(overlay_digest(overlay))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
