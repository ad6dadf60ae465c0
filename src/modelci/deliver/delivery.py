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

import fcntl
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelci.deliver.gates import Decision, decide
from modelci.deliver.modelartifacts import collect_model, mlflow_env
from modelci.deliver.modelspec import ModelVersion
from modelci.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REGRESSION,
    ConfigError,
    ModelCIError,
    NeedsGpuWorker,
)
from modelci.evaluate.evaluation import Evaluator, Reporter, SideResult
from modelci.runner.checkout import open_mirror, repository_name
from modelci.runner.config import (
    RepoConfig,
)
from modelci.settings import Settings

if TYPE_CHECKING:
    from modelci.deliver.tracking import Registry
    from modelci.store.db import Database

__all__ = ["Deliverer", "DeliveryResult", "deliver_commit", "deliverer_for", "model_name_for"]

ROLE = "deliver"
_MAX_SUMMARY = 65_535


@dataclass
class DeliveryResult:
    """What one delivery did; ``summary_markdown`` is the text for a check run."""

    repo: str
    ref: str
    sha: str = ""
    model_name: str = ""
    version: int | None = None
    promoted: bool = False
    decision: Decision | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    champion_before: ModelVersion | None = None
    error: str | None = None
    log_path: Path | None = None
    run_id: str | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_ERROR
        return EXIT_OK if self.promoted else EXIT_REGRESSION

    @property
    def title(self) -> str:
        if self.error is not None:
            return f"delivery of {self.sha[:7] or self.ref} failed"
        if self.promoted:
            return f"{self.model_name} version {self.version} is the champion"
        return f"{self.model_name} version {self.version} registered, not promoted"

    def summary_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.error is not None:
            lines += ["```", self.error[:20_000], "```"]
        if self.decision is not None and self.decision.reasons:
            lines += ["**Why not:**", *[f"- {r}" for r in self.decision.reasons], ""]
        if self.decision is not None and self.decision.checks:
            lines += ["**Checks passed:**", *[f"- {c}" for c in self.decision.checks], ""]
        if self.metrics:
            before = self.champion_before.metrics if self.champion_before else {}
            champion = f"champion v{self.champion_before.version}" if self.champion_before else "-"
            lines += [f"| metric | this commit | {champion} |", "|---|---|---|"]
            for name, value in sorted(self.metrics.items())[:200]:
                old = before.get(name)
                lines.append(f"| {name} | {value:.6g} | {'' if old is None else f'{old:.6g}'} |")
            lines.append("")
        facts = [
            ("commit", self.sha),
            ("model", f"{self.model_name} v{self.version}" if self.version else None),
            ("MLflow run", self.run_id),
            ("log", str(self.log_path) if self.log_path else None),
        ]
        lines += [f"- {k}: `{v}`" for k, v in facts if v]
        text = "\n".join(lines)
        return text if len(text) <= _MAX_SUMMARY else text[: _MAX_SUMMARY - 20] + "\n…(truncated)"


def model_name_for(repo: str, config: RepoConfig) -> str:
    """The registered model's name: model.name, else the repository's name."""
    if config.model.name:
        return config.model.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", repository_name(repo)).strip("-") or "model"


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
    ) -> DeliveryResult:
        """Train ``ref`` of ``repo``, register it and promote it if it passes the gates.

        Errors of the commit (a failed run, a bad config, a hostile artifact)
        come back in ``DeliveryResult.error``; the result is never raised.
        """
        result = DeliveryResult(repo=repo, ref=ref)
        evaluator = self.evaluator.with_reporter(reporter) if reporter else self.evaluator
        say = evaluator.reporter.update
        side: SideResult | None = None
        try:
            say(ROLE, "fetching")
            mirror = open_mirror(repo, self.settings.mirrors_dir, git_env=git_env)
            result.sha = mirror.resolve(ref)
            side = SideResult(ROLE, ref, result.sha, ref_repo=repo)
            staging = Path(tempfile.mkdtemp(prefix="delivery-", dir=self.settings.data_dir))
            try:
                with evaluator.train_commit(
                    side, mirror, cancel=cancel, extra_env=mlflow_env, gpu_allowed=gpu_allowed
                ) as trained:
                    result.log_path = side.log_path
                    result.model_name = model_name_for(repo, trained.config)
                    say(ROLE, "collecting the model")
                    params, tags = collect_model(trained, staging / "model")
                result.metrics = dict(side.metrics)
                say(ROLE, "registering in MLflow")
                # One delivery of a model at a time judges against the champion and
                # moves it: two merges in a row must not both beat the same champion.
                with _model_lock(self.settings, result.model_name):
                    self._register(result, trained.config, staging / "model", params, tags, actor)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            say(ROLE, "promoted" if result.promoted else "registered, not promoted")
        except NeedsGpuWorker:
            raise  # not the commit's problem: the job moves to the gpu queue
        except ModelCIError as exc:
            result.error = str(exc)
            result.log_path = side.log_path if side is not None else None
            say(ROLE, f"failed: {exc.message}")
        return result

    def _register(
        self,
        result: DeliveryResult,
        config: RepoConfig,
        model_dir: Path,
        params: dict[str, Any],
        tags: dict[str, str],
        actor: str,
    ) -> None:
        registry, name, sha = self.registry, result.model_name, result.sha
        champion = registry.champion(name)
        result.champion_before = champion
        decision = decide(
            result.metrics,
            None if champion is None else champion.metrics,
            config.promotion_gates(),
            config.promotion.floors,
        )
        version = registry.log_training(
            name=name,
            repository=repository_name(result.repo),
            sha=sha,
            model_dir=model_dir,
            params=params,
            metrics=result.metrics,
            tags=tags,
            log_path=result.log_path,
        )
        result.version, result.run_id = version.version, version.run_id
        result.decision = decision
        details = {"metrics": result.metrics, "run_id": version.run_id, "repository": result.repo}
        trained_from = f"trained {sha[:12]}"
        self._event(name, version.version, "registered", actor, trained_from, sha, details)
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
        """Move the champion back to the one before it (by the event history, else the
        previous version number)."""
        with _model_lock(self.settings, name):
            registry = self.registry
            current = registry.champion(name)
            if current is None:
                raise ConfigError(
                    f"model {name} has no champion to roll back",
                    hint=f"promote a version first: modelci models promote {name} VERSION",
                )
            history = self.champion_history(name)
            while history and history[-1] == current.version:
                history.pop()
            target = history[-1] if history else None
            if target is None:
                older = [
                    v.version for v in registry.list_versions(name) if v.version < current.version
                ]
                target = max(older) if older else None
            if target is None:
                raise ConfigError(
                    f"model {name} has no version before {current.version} to roll back to",
                    hint="deliver or promote another version",
                )
            registry.set_champion(name, target)
            chosen = registry.get_version(name, target)
            self._event(
                name, target, "rolled_back", actor, reason, chosen.sha, {"from": current.version}
            )
            return chosen

    def champion_history(self, name: str) -> list[int]:
        """Champions in order, the current last: promotions push, rollbacks pop."""
        from modelci.store import records as store

        with self._database().session() as session:
            events = store.list_model_events(session, model_name=name, limit=10_000)
            stack: list[int] = []
            for event in reversed(events):
                if event.version is None:
                    continue
                if event.action == "promoted":
                    stack.append(event.version)
                elif event.action == "rolled_back":
                    while stack and stack[-1] != event.version:
                        stack.pop()
                    if not stack:
                        stack.append(event.version)
        return stack

    def events(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        from modelci.store import records as store

        with self._database().session() as session:
            return [
                {
                    "at": e.created_at,
                    "version": e.version,
                    "action": e.action,
                    "actor": e.actor,
                    "reason": e.reason,
                    "sha": e.sha,
                }
                for e in store.list_model_events(session, model_name=name, limit=limit)
            ]

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
