"""What an evaluation scores on, and scoring a commit's freshly trained model.

An evaluation takes ``scoring:`` from the *base* commit when it has one (as it
does the gates): a pull request can neither loosen how it is scored nor swap
the rows, and head and base are scored on the same rows, so their predictions
pair for the bootstrap. The rows are resolved once, before anything trains,
into a private file, never read from a work dir (which the training could have
rewritten): a file committed to the repository is read from git at that
commit; a DVC-tracked file is taken from the repository's DVC cache by the md5
that commit's pointer gives (``data.pointers``, ``data.cache``; fetched on its
own when the cache lacks it), and that md5 is its checksum; a server-held
dataset is used where it is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelci.data.pointers import TrackedFile, find_tracked
from modelci.errors import DatasetError
from modelci.runner.config import ScoringConfig
from modelci.scoring.datasets import DatasetStore
from modelci.settings import Settings

if TYPE_CHECKING:
    from modelci.data.fetch import DataFetcher
    from modelci.evaluate.evaluation import TrainedCommit
    from modelci.runner.checkout import Mirror
    from modelci.scoring.scorer import Scored
    from modelci.serving.launcher import Launcher

__all__ = [
    "MAX_TRACKED_BYTES",
    "CommitFile",
    "ScoringPlan",
    "TrackedReader",
    "commit_plan",
    "open_commit_file",
    "open_plan",
    "score_on_plan",
    "score_trained",
    "tracked_reader",
]

MAX_TRACKED_BYTES = 2 * 1024**3  # a DVC-tracked scoring file, copied out of the cache

# Copies the DVC-tracked file of a commit (sha) into a private file (fetching it when
# the repository's DVC cache lacks it) and returns its md5.
TrackedReader = Callable[[str, TrackedFile, Path], str]


@dataclass(frozen=True)
class ScoringPlan:
    """A scoring section with its dataset resolved to a file modelci alone can read."""

    config: ScoringConfig
    label: str  # the dataset, in words: "data/holdout.csv at 1a2b3c4", "dataset 'holdout'"
    checksum: str  # of the rows (SHA-256; md5:<md5> for DVC's): part of the cache key
    dataset: Path

    def digest(self) -> str:
        canonical = json.dumps(
            {"scoring": self.config.model_dump(mode="json"), "rows": self.checksum},
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def metric_names(self) -> frozenset[str]:
        return frozenset(self.config.metrics)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class CommitFile:
    """A data file of a commit, copied out where only modelci reads it."""

    label: str  # "data/holdout.csv at 1a2b3c4", "... (DVC)"
    checksum: str  # SHA-256, or md5:<md5> for a DVC-tracked file
    path: Path


@contextmanager
def open_commit_file(
    file: str,
    *,
    mirror: Mirror,
    sha: str,
    settings: Settings,
    read_tracked: TrackedReader | None,
    setting: str = "scoring.file",
) -> Iterator[CommitFile]:
    """``file`` as commit ``sha`` has it (committed, or tracked by DVC), in a private
    copy removed on exit. ``setting`` names where the path came from, for errors."""
    settings.prepare_data_dir()
    private = Path(tempfile.mkdtemp(prefix="commit-file-", dir=settings.data_dir))
    try:
        dest = private / Path(file).name
        if mirror.export_file(sha, file, dest):
            yield CommitFile(f"{file} at {sha[:7]}", _sha256(dest), dest)
            return
        tracked = find_tracked(lambda path: mirror.read_file(sha, path), file, sha=sha)
        if tracked is None or read_tracked is None:
            raise DatasetError(
                f"{setting} {file} is neither in commit {sha[:7]} nor tracked by "
                f"DVC there (no {file}.dvc, .dvc file of a directory above it, or "
                "dvc.lock output)",
                hint="commit the file, track it with DVC (dvc add, then commit the .dvc "
                "file), or hold it on the server (modelci datasets add) and name it with "
                "scoring.dataset",
            )
        md5 = read_tracked(sha, tracked, dest)
        yield CommitFile(f"{file} at {sha[:7]} (DVC)", f"md5:{md5}", dest)
    finally:
        shutil.rmtree(private, ignore_errors=True)


@contextmanager
def open_plan(
    config: ScoringConfig,
    *,
    mirror: Mirror,
    sha: str,
    settings: Settings,
    read_tracked: TrackedReader | None = None,
) -> Iterator[ScoringPlan]:
    """The plan for ``config`` as the commit ``sha`` gives it; private files removed on exit.
    ``read_tracked`` reads a file the commit tracks with DVC (None: such a file is an error)."""
    if config.dataset is not None:
        info = DatasetStore(settings.datasets_dir).get(config.dataset)
        yield ScoringPlan(config, f"dataset '{config.dataset}'", info.sha256, info.path)
        return
    assert config.file is not None
    with open_commit_file(
        config.file, mirror=mirror, sha=sha, settings=settings, read_tracked=read_tracked
    ) as found:
        yield ScoringPlan(config, found.label, found.checksum, found.path)


def tracked_reader(
    *, mirror: Mirror, repo: str, settings: Settings, fetcher: DataFetcher
) -> TrackedReader:
    """Reads a DVC-tracked file of ``repo`` out of its DVC cache (the one its runs'
    fetches fill), fetched if need be."""
    from modelci.data.cache import read_tracked
    from modelci.runner.checkout import repository_name

    def tracked(sha: str, file: TrackedFile, dest: Path) -> str:
        return read_tracked(
            fetcher,
            mirror,
            sha,
            file,
            dest,
            repository=repository_name(repo),
            aliases=(repo, mirror.url),
            settings=settings,
            max_bytes=MAX_TRACKED_BYTES,
        )

    return tracked


def commit_plan(
    config: ScoringConfig,
    *,
    mirror: Mirror,
    sha: str,
    repo: str,
    settings: Settings,
    fetcher: DataFetcher,
) -> AbstractContextManager[ScoringPlan]:
    """``open_plan`` for commit ``sha`` of ``repo``: a DVC-tracked file comes out of the
    repository's DVC cache (the one its runs' fetches fill), fetched if need be."""
    tracked = tracked_reader(mirror=mirror, repo=repo, settings=settings, fetcher=fetcher)
    return open_plan(config, mirror=mirror, sha=sha, settings=settings, read_tracked=tracked)


def score_trained(
    trained: TrainedCommit,
    plan: ScoringPlan,
    launcher: Launcher,
    settings: Settings,
) -> Scored:
    """Collect the model the run trained (as delivery does) and score it on the plan's rows."""
    from modelci.deliver.modelartifacts import collect_model

    side = trained.side
    scratch = Path(tempfile.mkdtemp(prefix="scoring-model-", dir=settings.data_dir))
    try:
        model_dir = scratch / "model"
        collect_model(trained, model_dir)
        return score_on_plan(
            launcher,
            model_dir,
            plan,
            settings,
            name=f"{side.role}-{side.sha[:12]}",
            version=side.seed,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def score_on_plan(
    launcher: Launcher,
    model_dir: Path,
    plan: ScoringPlan,
    settings: Settings,
    *,
    name: str,
    version: int,
) -> Scored:
    """The model in ``model_dir`` scored by modelci on the plan's rows and metrics."""
    from modelci.scoring.scorer import score_model

    return score_model(
        launcher,
        model_dir,
        plan.config.metrics,
        dataset=plan.dataset,
        dataset_label=plan.label,
        target=plan.config.target,
        batch_rows=settings.scoring_batch_rows,
        max_rows=settings.scoring_max_rows,
        name=name,
        version=version,
    )
