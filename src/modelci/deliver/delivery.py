"""Deliver a commit: train it, register the model in MLflow, promote it if it passes.

``Deliverer.deliver`` trains the commit in the sandbox (through
``Evaluator.train_commit``), collects the model from the work dir with the
link-refusing readers of ``outputs`` (the repository's code wrote that
directory), builds an MLflow model directory with ``modelci-serving.json``,
registers it as a new version, and moves the ``champion`` alias only if the
gates against the current champion and the floors pass. Every step that
changes the champion is a model event with who and why.

The gates are the delivered commit's own: it was reviewed and merged, and its
pull request was already judged by the base's gates.
"""

from __future__ import annotations

import difflib
import fcntl
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelci.data.versions import data_version, data_version_tag
from modelci.deliver.deliverykey import delivery_config, delivery_key
from modelci.deliver.gates import decide
from modelci.deliver.history import ChampionChange, champion_changes, describe_event
from modelci.deliver.modelartifacts import collect_model, mlflow_env
from modelci.deliver.modelspec import DATA_VERSION_TAG, TRIGGER_TAG, ModelVersion
from modelci.deliver.result import DeliveryResult
from modelci.errors import (
    ConfigError,
    ModelCIError,
    ModelNotFound,
    NeedsGpuWorker,
)
from modelci.evaluate.evaluation import Evaluator, Reporter, SideResult
from modelci.runner.checkout import Mirror, open_mirror, repository_name
from modelci.runner.config import RepoConfig
from modelci.settings import Settings

if TYPE_CHECKING:
    from modelci.deliver.tracking import Registry
    from modelci.scoring.plan import ScoringPlan
    from modelci.store.db import Database

__all__ = ["Deliverer", "DeliveryResult", "deliver_commit", "deliverer_for", "model_name_for"]

ROLE = "deliver"


def model_name_for(repo: str, config: RepoConfig) -> str:
    """The registered model's name: model.name, else the repository's name."""
    if config.model.name:
        return config.model.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", repository_name(repo)).strip("-") or "model"


@dataclass(frozen=True)
class _How:
    """How a delivery registers: a merge promotes and reuses; a retrain does neither."""

    promote: bool
    reuse: bool
    trigger: str
    scoring: ScoringPlan | None  # the caller's, already open (a retrain scores with it too)
    overlay: Mapping[str, bytes]  # refreshed DVC import pointers written over the commit


class Deliverer:
    """Trains, registers and promotes; one instance serves many deliveries."""

    def __init__(
        self,
        *,
        settings: Settings,
        database: Callable[[], Database],
        evaluator: Evaluator,
        registry: Callable[[], Registry],
    ) -> None:
        self.settings = settings
        self._database = database
        self.evaluator = evaluator
        self._registry = registry

    @classmethod
    def from_evaluator(cls, evaluator: Evaluator) -> Deliverer:
        """A deliverer on the evaluator's store, its MLflow registry opened on first use."""
        from modelci.deliver.tracking import Registry

        registries: list[Registry] = []

        def registry() -> Registry:
            if not registries:
                url = evaluator.database().url
                registries.append(Registry.from_settings(evaluator.settings, url))
            return registries[0]

        return cls(
            settings=evaluator.settings,
            database=evaluator.database,
            evaluator=evaluator,
            registry=registry,
        )

    @property
    def registry(self) -> Registry:
        return self._registry()

    def deliver(
        self,
        repo: str,
        ref: str,
        *,
        actor: str,
        cancel: threading.Event | None = None,
        git_env: Mapping[str, str] | None = None,
        reporter: Reporter | None = None,
        gpu_allowed: bool = True,
        promote: bool = True,
        reuse: bool = True,
        trigger: str = "merge",
        scoring: ScoringPlan | None = None,
        overlay: Mapping[str, bytes] | None = None,
    ) -> DeliveryResult:
        """Train ``ref`` of ``repo``, register it and promote it if it passes the gates.

        Errors of the commit (a failed run, a bad config, a hostile artifact)
        come back in ``DeliveryResult.error``; the result is never raised.

        A retrain passes ``promote=False`` (it judges the new version itself, on
        rows it scores both models on), ``reuse=False`` (it trains even a commit
        registered before: the data may have moved), its ``trigger``, and the
        ``scoring`` plan it opened for this commit (read once, not twice), and the
        ``overlay`` of its refreshed DVC imports (``data.imports``): written over the
        checkout before the data is fetched, part of the key and the data version.
        """
        how = _How(
            promote=promote, reuse=reuse, trigger=trigger, scoring=scoring, overlay=overlay or {}
        )
        result = DeliveryResult(repo=repo, ref=ref)
        evaluator = self.evaluator.with_reporter(reporter) if reporter else self.evaluator
        say = evaluator.reporter.update
        side: SideResult | None = None
        try:
            with ExitStack() as stack:  # the scoring dataset's private copy, until the end
                side = SideResult(ROLE, ref, ref_repo=repo)
                self._deliver(
                    result, side, evaluator, stack, actor, cancel, git_env, gpu_allowed, how
                )
        except NeedsGpuWorker:
            raise  # not the commit's problem: the job moves to the gpu queue
        except ModelCIError as exc:
            result.error = str(exc)
            result.log_path = side.log_path if side is not None else None
            # The caller prints the error; the step only says it failed, so it shows once.
            say(ROLE, "failed")
        return result

    def _deliver(
        self,
        result: DeliveryResult,
        side: SideResult,
        evaluator: Evaluator,
        stack: ExitStack,
        actor: str,
        cancel: threading.Event | None,
        git_env: Mapping[str, str] | None,
        gpu_allowed: bool,
        how: _How,
    ) -> None:
        repo, say = result.repo, evaluator.reporter.update
        say(ROLE, "fetching")
        mirror = open_mirror(repo, self.settings.mirrors_dir, git_env=git_env)
        result.sha = side.sha = mirror.resolve(result.ref)
        config = delivery_config(mirror, result.sha)
        if how.scoring is not None:
            side.scoring = how.scoring
        elif config.scoring is not None:
            # Opened before the key: the scored rows' checksum is part of it.
            say(ROLE, "reading the scoring data")
            side.scoring = stack.enter_context(
                evaluator.scoring_plan(config.scoring, mirror, result.sha, repo=repo)
            )
        side.overlay = how.overlay
        key = delivery_key(
            mirror, result.sha, config, self.evaluator.environments, side.scoring, how.overlay
        )
        result.model_name = model_name_for(repo, config)
        result.data_version = data_version(mirror, result.sha, how.overlay)
        existing = self.registry.find_delivered(result.model_name, key) if how.reuse else None
        if existing is not None:
            result.reused, result.version = True, existing.version
            result.run_id, result.metrics = existing.run_id, dict(existing.metrics)
            result.champion_before = self.registry.champion(result.model_name)
            say(ROLE, f"reused version {existing.version}: this commit is already registered")
            return
        staging = Path(tempfile.mkdtemp(prefix="delivery-", dir=self.settings.data_dir))
        try:
            with evaluator.train_commit(
                side, mirror, cancel=cancel, extra_env=mlflow_env, gpu_allowed=gpu_allowed
            ) as trained:
                result.log_path = side.log_path
                result.model_name = model_name_for(repo, trained.config)
                say(ROLE, "collecting the model")
                params, tags = collect_model(trained, staging / "model")
            result.metrics, result.timings = dict(side.metrics), dict(side.timings)
            say(ROLE, "registering in MLflow")
            tags[TRIGGER_TAG] = how.trigger
            tags[DATA_VERSION_TAG] = data_version_tag(result.data_version)
            # One delivery of a model at a time judges against the champion and
            # moves it: two merges in a row must not both beat the same champion.
            with _model_lock(self.settings, result.model_name):
                self._register(
                    result,
                    trained.config,
                    staging / "model",
                    params,
                    tags,
                    actor,
                    key,
                    promote=how.promote,
                )
            assert result.version is not None
            say(ROLE, self._watch(result, trained.config, staging / "model", side, mirror))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if how.promote:
            say(ROLE, "promoted" if result.promoted else "registered, not promoted")

    def _register(
        self,
        result: DeliveryResult,
        config: RepoConfig,
        model_dir: Path,
        params: dict[str, Any],
        tags: dict[str, str],
        actor: str,
        key: str,
        *,
        promote: bool = True,
    ) -> None:
        registry, name, sha = self.registry, result.model_name, result.sha
        champion = registry.champion(name)
        result.champion_before = champion
        version = registry.log_training(
            name=name,
            repository=repository_name(result.repo),
            sha=sha,
            model_dir=model_dir,
            params=params,
            metrics=result.metrics,
            tags=tags,
            log_path=result.log_path,
            delivery_key=key,
            version_tags={k: tags[k] for k in (TRIGGER_TAG, DATA_VERSION_TAG) if k in tags},
        )
        result.version, result.run_id = version.version, version.run_id
        details = {"metrics": result.metrics, "run_id": version.run_id, "repository": result.repo}
        trained_from = f"trained {sha[:12]}"
        self._event(name, version.version, "registered", actor, trained_from, sha, details)
        if not promote:
            return  # the caller judges it (a retrain, on rows it scores both models on)
        decision = decide(
            result.metrics,
            None if champion is None else champion.metrics,
            config.promotion_gates(),
            config.promotion.floors,
        )
        result.decision = decision
        if decision.promote:
            registry.set_champion(name, version.version)
            result.promoted = True
        self._event(
            name,
            version.version,
            "promoted" if decision.promote else "rejected",
            actor,
            decision.summary(),
            sha,
            {
                "reasons": decision.reasons,
                "checks": decision.checks,
                "champion_before": champion.version if champion else None,
            },
        )

    def _watch(
        self,
        result: DeliveryResult,
        config: RepoConfig,
        model_dir: Path,
        side: SideResult,
        mirror: Mirror,
    ) -> str:
        """Profile the new version's drift reference (``monitor.reference``)."""
        from modelci.monitor.reference import save_reference
        from modelci.scoring.plan import open_commit_file, tracked_reader

        settings, sha = self.settings, result.sha
        reader = tracked_reader(
            mirror=mirror,
            repo=result.repo,
            settings=settings,
            fetcher=self.evaluator.data_fetcher(),
        )
        assert result.version is not None
        return save_reference(
            database=self.evaluator.database(),
            name=result.model_name,
            version=result.version,
            config=config.monitoring,
            model_dir=model_dir,
            scoring=side.scoring,
            scored=side.scored_predictions,
            open_file=lambda path: open_commit_file(
                path,
                mirror=mirror,
                sha=sha,
                settings=settings,
                read_tracked=reader,
                setting="monitoring.reference",
            ),
        )

    def promote(self, name: str, version: int, *, actor: str, reason: str) -> ModelVersion:
        """Make ``version`` the champion by hand, whatever the gates say."""
        with _model_lock(self.settings, name):
            registry = self.registry
            before = registry.champion(name)
            target = registry.get_version(name, version)
            registry.set_champion(name, version)
            self._event(
                name,
                version,
                "promoted",
                actor,
                reason,
                target.sha,
                {"manual": True, "champion_before": before.version if before else None},
            )
            return target

    def rollback(self, name: str, *, actor: str, reason: str) -> ModelVersion:
        """Undo the last champion change: the champion it replaced is champion again.

        Champion changes form a stack (``history.champion_changes``): a rollback pops
        one, so a second rollback undoes the change before it, down to the first champion.
        """
        with _model_lock(self.settings, name):
            registry = self.registry
            current = registry.champion(name)
            if current is None:
                self.check_model(name)
                raise ConfigError(
                    f"model {name} has no champion to roll back",
                    hint=f"promote a version first: modelci models promote {name} VERSION "
                    "--reason '...'",
                )
            changes = self.champion_changes(name)
            last = changes[-1] if changes else None
            if last is None or last.before is None:
                first = f"v{last.version} was its first champion" if last else "none is recorded"
                raise ConfigError(
                    f"model {name} has no champion change left to undo ({first})",
                    hint=f"promote the version you want by hand: modelci models promote {name} "
                    "VERSION --reason '...'",
                )
            registry.set_champion(name, last.before)
            chosen = registry.get_version(name, last.before)
            self._event(
                name,
                last.before,
                "rolled_back",
                actor,
                reason,
                chosen.sha,
                {"from": current.version, "undid": last.version},
            )
            return chosen

    def champion_history(self, name: str) -> list[int]:
        """The champions of the changes still in effect, the current last."""
        return [change.version for change in self.champion_changes(name)]

    def champion_changes(self, name: str) -> list[ChampionChange]:
        return champion_changes(reversed(self.events(name, limit=10_000)))

    def check_model(self, name: str) -> None:
        """Raise ModelNotFound, with the closest names, unless ``name`` is registered."""
        names = self.registry.model_names()
        if name in names:
            return
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        if close:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        else:
            hint = "see the registered models with: modelci models list"
        raise ModelNotFound(f"no registered model named {name!r}", hint=hint)

    def events(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The model's events, newest first, each with its ``description`` in words."""
        from modelci.store import records as store

        with self._database().session() as session:
            events = [
                {
                    "at": e.created_at,
                    "version": e.version,
                    "action": e.action,
                    "actor": e.actor,
                    "reason": e.reason,
                    "sha": e.sha,
                    "details": e.details or {},
                }
                for e in store.list_model_events(session, model_name=name, limit=limit)
            ]
        return [{**e, "description": describe_event(e)} for e in events]

    @contextmanager
    def model_lock(self, name: str) -> Iterator[None]:
        """Held while the champion of ``name`` is judged and moved (across processes)."""
        with _model_lock(self.settings, name):
            yield

    def record_event(
        self,
        name: str,
        version: int | None,
        action: str,
        *,
        actor: str,
        reason: str,
        sha: str | None,
        details: dict[str, Any],
    ) -> None:
        """A model event (who and why), for callers that move the champion themselves."""
        self._event(name, version, action, actor, reason, sha, details)

    def _event(
        self,
        name: str,
        version: int | None,
        action: str,
        actor: str,
        reason: str,
        sha: str | None,
        details: dict[str, Any],
    ) -> None:
        from modelci.store import records as store

        with self._database().session() as session:
            store.record_model_event(
                session,
                model_name=name,
                version=version,
                action=action,
                actor=actor,
                reason=reason,
                sha=sha,
                details=details,
            )


@contextmanager
def _model_lock(settings: Settings, name: str) -> Iterator[None]:
    path = settings.data_dir / "locks" / f"model-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextmanager
def deliverer_for(
    settings: Settings, *, unsafe: bool = False, reporter: Reporter | None = None
) -> Iterator[Deliverer]:
    """A deliverer whose store is opened in the background and closed on exit."""
    from modelci.service.runtime import evaluator_for

    with evaluator_for(settings, unsafe=unsafe, reporter=reporter) as evaluator:
        yield Deliverer.from_evaluator(evaluator)


def deliver_commit(
    evaluator: Evaluator,
    repo: str,
    ref: str,
    *,
    actor: str,
    git_env: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
    gpu_allowed: bool = True,
) -> DeliveryResult:
    """For the job on a push to the default branch: deliver ``ref``; never raises for the
    commit's own problems (see DeliveryResult.error, .summary_markdown(), .exit_code),
    only NeedsGpuWorker when ``gpu_allowed`` is False and the commit sets limits.gpu."""
    deliverer = Deliverer.from_evaluator(evaluator)
    return deliverer.deliver(
        repo, ref, actor=actor, cancel=cancel, git_env=git_env, gpu_allowed=gpu_allowed
    )
