"""A retrain's first step: refresh the commit's DVC imports to their sources' latest.

The pointers are read from git first (a commit without imports is not checked
out); otherwise a scratch checkout is handed to ``DataFetcher.check_imports``,
which runs ``dvc update`` in the fetch sandbox. What changed comes back as new
pointer texts: the retrain trains with them written over its checkout, and the
new-data check (``service.imports``) compares the data version they give.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

from modelci.data.imports import ImportPointer, ImportRefresh, commit_imports
from modelci.data.versions import EMPTY_TREE
from modelci.evaluate.evaluation import Evaluator, prepare_dirs
from modelci.runner.cgroups import acquire_slot
from modelci.runner.checkout import Mirror, repository_name

__all__ = ["imports_at", "refresh_imports"]


def imports_at(mirror: Mirror, sha: str) -> list[ImportPointer]:
    """The commit's import pointers, read from git."""
    paths = mirror.changed_files(EMPTY_TREE, sha, "*.dvc")
    return commit_imports(lambda path: mirror.read_file(sha, path), paths)


def refresh_imports(
    evaluator: Evaluator,
    mirror: Mirror,
    sha: str,
    *,
    repo: str,
    cancel: threading.Event | None = None,
) -> ImportRefresh:
    """Which of the commit's imports changed at their source (nothing when it has none)."""
    if not imports_at(mirror, sha):
        return ImportRefresh({}, {}, {})
    settings = evaluator.settings
    prepare_dirs(settings)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    log_path = settings.logs_dir / f"{stamp}-imports-{sha[:12]}-{uuid.uuid4().hex[:6]}.log"
    with (
        acquire_slot(settings.slots_dir, settings.max_parallel_runs) as slot,
        mirror.checkout(sha, settings.runs_dir) as workdir,
    ):
        return evaluator.data_fetcher().check_imports(
            workdir,
            repository=repository_name(repo),
            aliases=(repo, mirror.url),
            cache_key=mirror.url,
            slot=slot,
            log_path=log_path,
            cancel=cancel,
        )
