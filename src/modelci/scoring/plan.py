"""What an evaluation scores on, and scoring a commit's freshly trained model.

An evaluation takes ``scoring:`` from the *base* commit when it has one (as it
does the gates): a pull request can neither loosen how it is scored nor swap
the rows, and head and base are scored on the same rows, so their predictions
pair for the bootstrap. A dataset file in the repository is read from git at
that commit (never from a work dir, which the training could have rewritten)
into a private file; a server-held dataset is used where it is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelci.errors import DatasetError, OutputError
from modelci.runner.config import ScoringConfig
from modelci.runner.outputs import copy_output_file
from modelci.scoring.datasets import DatasetStore
from modelci.settings import Settings

if TYPE_CHECKING:
    from modelci.evaluate.evaluation import TrainedCommit
    from modelci.runner.checkout import Mirror
    from modelci.scoring.scorer import Scored
    from modelci.serving.launcher import Launcher

__all__ = ["ScoringPlan", "open_plan", "score_trained"]

_MAX_WORKDIR_DATASET_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ScoringPlan:
    """A scoring section with its dataset resolved to a file modelci alone can read."""

    config: ScoringConfig
    label: str  # the dataset, in words: "data/holdout.csv at 1a2b3c4", "dataset 'holdout'"
    checksum: str  # SHA-256 of the rows: part of the cache key
    dataset: Path | None  # None: read from each run's work dir (DVC-tracked data)

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


@contextmanager
def open_plan(
    config: ScoringConfig, *, mirror: Mirror, sha: str, settings: Settings
) -> Iterator[ScoringPlan]:
    """The plan for ``config`` as the commit ``sha`` gives it; private files removed on exit."""
    if config.dataset is not None:
        info = DatasetStore(settings.datasets_dir).get(config.dataset)
        yield ScoringPlan(config, f"dataset '{config.dataset}'", info.sha256, info.path)
        return
    assert config.file is not None
    settings.prepare_data_dir()
    private = Path(tempfile.mkdtemp(prefix="scoring-", dir=settings.data_dir))
    try:
        dest = private / Path(config.file).name
        if mirror.export_file(sha, config.file, dest):
            yield ScoringPlan(config, f"{config.file} at {sha[:7]}", _sha256(dest), dest)
        else:
            # Not committed: a DVC-tracked file, which the fetch puts in each run's work
            # dir before training. Read from there after training (see score_trained).
            yield ScoringPlan(config, f"{config.file} (fetched data)", f"workdir:{sha}", None)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def score_trained(
    trained: TrainedCommit,
    plan: ScoringPlan,
    launcher: Launcher,
    settings: Settings,
) -> Scored:
    """Collect the model the run trained (as delivery does) and score it on the plan's rows."""
    from modelci.deliver.modelartifacts import collect_model
    from modelci.scoring.scorer import score_model

    side = trained.side
    scratch = Path(tempfile.mkdtemp(prefix="scoring-model-", dir=settings.data_dir))
    try:
        model_dir = scratch / "model"
        collect_model(trained, model_dir)
        dataset = plan.dataset
        if dataset is None:
            # The hook for data that is not in git (DVC): the work dir's copy, read with
            # the link-refusing reader into a private file.
            file = plan.config.file or ""
            dataset = scratch / Path(file).name
            try:
                copy_output_file(
                    trained.workdir, file, dataset, max_bytes=_MAX_WORKDIR_DATASET_BYTES
                )
            except OutputError as exc:
                raise DatasetError(
                    f"scoring.file {file} is neither in commit {side.sha[:7]} nor in its "
                    f"fetched data ({exc})",
                    hint="commit the file, track it with DVC, or hold it on the server "
                    "(modelci datasets add) and name it with scoring.dataset",
                ) from None
        return score_model(
            launcher,
            model_dir,
            plan.config.metrics,
            dataset=dataset,
            dataset_label=plan.label,
            target=plan.config.target,
            batch_rows=settings.scoring_batch_rows,
            max_rows=settings.scoring_max_rows,
            name=f"{side.role}-{side.sha[:12]}",
            version=side.seed,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
