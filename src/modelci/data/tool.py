"""DVC itself, as the sandbox runs it: modelci's pinned version, never the repository's.

DVC runs inside the sandbox (the fetch, and ``dvc repro`` in training) from a
uv environment built from ``MODELCI_PYTHON`` with exactly the versions of
``dvc`` and its remote plugins (``dvc-s3``, ``dvc-gdrive``...) installed beside
modelci. Not modelci's own interpreter: it may live where the sandbox's uid
cannot reach it (a pyenv Python under /root), and the sandbox would then see
all of modelci's packages. Built once per version set, shared by every
repository; the repository's requirements never enter it.
"""

from __future__ import annotations

from importlib import metadata
from urllib.parse import urlsplit

from modelci.errors import EnvironmentBuildError
from modelci.runner.environments import Environment, EnvironmentManager, Requirements

__all__ = ["dvc_environment", "dvc_requirements", "missing_plugin", "plugin_hint"]

# The remote plugins modelci knows; those installed beside modelci go into the environment.
PLUGINS = ("dvc-s3", "dvc-gdrive", "dvc-gs", "dvc-azure", "dvc-ssh", "dvc-webdav")
# The plugin each URL scheme needs (DVC itself reads local paths and http).
SCHEME_PLUGINS = {
    "s3": "dvc-s3",
    "gdrive": "dvc-gdrive",
    "gs": "dvc-gs",
    "azure": "dvc-azure",
    "ssh": "dvc-ssh",
    "webdav": "dvc-webdav",
    "webdavs": "dvc-webdav",
}
# modelci's extras that pin a plugin (pyproject.toml).
EXTRAS = {"dvc-s3": "s3", "dvc-gdrive": "gdrive"}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def dvc_requirements() -> Requirements:
    dvc = _version("dvc")
    if dvc is None:
        raise EnvironmentBuildError(
            "the commit tracks data with DVC and DVC is not installed beside modelci",
            hint="reinstall modelci with its dependencies (pip install modelci), which pin DVC",
        )
    pins = [f"dvc=={dvc}"]
    pins += [f"{name}=={version}" for name in PLUGINS if (version := _version(name))]
    return Requirements("\n".join(pins), "modelci's DVC (" + ", ".join(pins) + ")")


def dvc_environment(environments: EnvironmentManager) -> Environment:
    """The environment holding DVC, built on first use (uv, wheels only)."""
    return environments.ensure(dvc_requirements())


def missing_plugin(url: str) -> str | None:
    """The DVC plugin a remote URL needs when it is not installed beside modelci."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    plugin = SCHEME_PLUGINS.get(scheme)
    return plugin if plugin is not None and _version(plugin) is None else None


def plugin_hint(plugin: str) -> str:
    where = "where modelci runs (it then goes into modelci's DVC environment, built anew)"
    if (extra := EXTRAS.get(plugin)) is not None:
        return f"pip install 'modelci[{extra}]' {where}"
    return f"pip install {plugin} (a version for dvc=={_version('dvc')}) {where}"
