"""What an evaluation is asked and what it produced: the request, each side's result,
the evaluation's result and its JSON summary (pure data; ``evaluation`` does the work).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modelci.errors import ModelCIError, RunFailed
from modelci.runner.config import Overrides, RepoConfig
from modelci.runner.environments import _COMPLETE as _ENV_COMPLETE
from modelci.runner.environments import Environment

if TYPE_CHECKING:
    from modelci.data.review import DataReview
    from modelci.evaluate.compare import Comparison, Predictions, ScoredRows
    from modelci.evaluate.noise import SeedRun, UnstableMetric
    from modelci.scoring.plan import ScoringPlan

__all__ = [
    "EvaluationRequest",
    "EvaluationResult",
    "Reporter",
    "SideResult",
    "Silent",
    "TrainedCommit",
    "summary_json",
]


class Reporter(Protocol):
    """Receives progress; the CLI shows it, the server will store it."""

    def update(self, role: str, message: str) -> None: ...


class Silent:
    """A reporter that drops progress (the default)."""

    def update(self, role: str, message: str) -> None:
        return None


@dataclass(frozen=True)
class EvaluationRequest:
    repo: str
    base: str
    head: str
    overrides: Overrides = field(default_factory=Overrides)
    merge_base: bool = False
    # Credentials for git fetch (e.g. an installation token header); never shown.
    git_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    job_id: int | None = None
    # False for a server job not taken from the gpu queue: a commit that sets
    # limits.gpu then raises NeedsGpuWorker, before anything runs.
    gpu_allowed: bool = True


@dataclass
class SideResult:
    """What one commit's run produced (or why it produced nothing)."""

    role: str
    ref: str
    sha: str = ""
    # MODELCI_SEED of this run: 0 for a commit's first run, 1, 2, ... for its repeats.
    seed: int = 0
    run_id: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    predictions: Predictions | None = None
    error: str | None = None
    # The error without what only makes sense on this machine (the log's path):
    # for the pull request; None when it is the same as ``error``.
    public_error: str | None = None
    # The end of a failed run's log, cleaned (evaluate.logtail): why it failed.
    log_tail: str | None = None
    log_path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reused_from: int | None = None
    config: RepoConfig | None = None
    env_key: str | None = None
    cache_key: str | None = None
    ref_repo: str = ""
    timeout_from_cli: bool = False  # --timeout, not modelci.yaml, set the run's limit
    # Why this side did not run (the base of a change that adds modelci.yaml).
    skipped: str | None = None
    # Why a stored result was not reused although the cache key matched.
    cache_miss: str | None = None
    # The same commit trained again with seeds 1, 2, ... (repeats), each its own run.
    repeats: list[SideResult] = field(default_factory=list)
    # Why this commit was trained more than once, for the report.
    repeats_reason: str | None = None
    # What modelci scores the trained model on (scoring: in modelci.yaml), the metrics
    # it computed itself (they replace the run's own of the same name) and the rows it
    # computed them from; ``predictions`` stay the run's own, for its other metrics.
    scoring: ScoringPlan | None = None
    scored: tuple[str, ...] = ()
    scored_predictions: Predictions | None = None
    # Pointer files written over the checkout before its data is fetched (a retrain's
    # refreshed DVC imports: data.imports.write_overlay): .dvc path -> text.
    overlay: Mapping[str, bytes] = field(default_factory=dict)
    # The stored evaluation this run belongs to, while it runs (a server's job): its
    # log's path is recorded there as soon as it is known, for the live log.
    evaluation_id: int | None = None

    def again(self, seed: int) -> SideResult:
        """A run of the same commit with another seed, kept in ``repeats``."""
        other = SideResult(self.role, self.ref, self.sha, seed=seed, ref_repo=self.ref_repo)
        other.scoring, other.overlay = self.scoring, self.overlay
        self.repeats.append(other)
        return other

    def seed_runs(self) -> list[SeedRun]:
        from modelci.evaluate.noise import SeedRun

        return [
            SeedRun(s.seed, s.metrics, s.predictions, s.scored_predictions, frozenset(s.scored))
            for s in (self, *self.repeats)
        ]

    def scored_rows(self, other: SideResult) -> ScoredRows | None:
        """The rows modelci scored this side and ``other`` on, for ``compare``."""
        from modelci.evaluate.compare import ScoredRows

        if self.scored_predictions is None or other.scored_predictions is None:
            return None
        names = frozenset(self.scored) & frozenset(other.scored)
        return ScoredRows(names, self.scored_predictions, other.scored_predictions)

    @property
    def ok(self) -> bool:
        return self.error is None

    def fail(self, exc: ModelCIError, *, data_dir: Path | None = None) -> None:
        """Record ``exc`` as this side's failure; ``data_dir`` is kept out of the public text
        (a tool's own message, such as uv's, can name a path under it)."""
        self.error, self.public_error = str(exc), exc.public
        if data_dir is not None:
            self.public_error = self.public_error.replace(str(data_dir), "<data dir>")
        if isinstance(exc, RunFailed):
            self.log_tail = exc.log_tail


@dataclass(frozen=True)
class TrainedCommit:
    """A commit's finished run, while its work dir exists (see Evaluator.train_commit)."""

    side: SideResult
    workdir: Path
    config: RepoConfig
    environment: Environment

    def resolved_requirements(self) -> tuple[str, ...]:
        """The pinned requirements the run's environment was built from."""
        text = (self.environment.path / _ENV_COMPLETE).read_text()
        return tuple(line.strip() for line in text.splitlines() if line.strip())


@dataclass
class EvaluationResult:
    repo: str
    head: SideResult
    base: SideResult
    comparison: Comparison | None
    evaluation_id: int | None = None
    seconds: float = 0.0
    # Gated metrics that move between a commit's seeds by more than their tolerance.
    unstable: list[UnstableMetric] = field(default_factory=list)
    # What modelci scored both sides on (scoring: in modelci.yaml), in words.
    scored_on: str | None = None
    # Params and DVC data that differ from base to head (data.review).
    data: DataReview | None = None

    @property
    def error(self) -> str | None:
        problems = [
            f"{s.role} ({s.sha[:7] or s.ref}): {s.error}" for s in (self.head, self.base) if s.error
        ]
        return "\n".join(problems) or None

    def repeats_markdown(self) -> str:
        """Runs per side, why, and the unstable metrics (empty for one run each)."""
        from modelci.evaluate.report import repeats_markdown

        return repeats_markdown(
            head_runs=1 + len(self.head.repeats),
            base_runs=0 if self.base.skipped else 1 + len(self.base.repeats),
            reason=self.head.repeats_reason or self.base.repeats_reason,
            unstable=[u.message for u in self.unstable],
        )

    @property
    def public_error(self) -> str | None:
        """``error`` for the pull request: no log paths, no log tails (shown apart)."""
        problems = [
            f"{s.role} ({s.sha[:7] or s.ref}): {s.public_error or s.error}"
            for s in (self.head, self.base)
            if s.error
        ]
        return "\n".join(problems) or None

    @property
    def passed(self) -> bool:
        return self.comparison is not None and self.comparison.passed


def _no_review() -> DataReview:
    from modelci.data.review import DataReview

    return DataReview()


def summary_json(result: EvaluationResult) -> dict[str, Any]:
    """Context for reports: shas, timings and errors of both sides."""
    return {
        "repository": result.repo,
        "evaluation_id": result.evaluation_id,
        "seconds": round(result.seconds, 3),
        "head_only": result.base.skipped is not None,
        "error": result.error,
        "sides": {
            side.role: {
                "ref": side.ref,
                "sha": side.sha,
                "run_id": side.run_id,
                "reused_from": side.reused_from,
                "skipped": side.skipped,
                "cache_miss": side.cache_miss,
                "error": side.error,
                "log_tail": side.log_tail,
                "log": str(side.log_path) if side.log_path else None,
                "timings": {k: round(v, 3) for k, v in side.timings.items()},
                "runs": 0 if side.skipped else 1 + len(side.repeats),
                "repeats_reason": side.repeats_reason,
            }
            for side in (result.head, result.base)
        },
        "unstable": [u.as_json() for u in result.unstable],
        "scored_on": result.scored_on,
        **(result.data or _no_review()).as_json(),
    }
