"""A retrain: train a repository's branch again and compare it fairly with the champion.

1. The ref is resolved and its data version read (each DVC output's md5, from
   the commit's pointer files). Nothing changed since the champion was trained
   (same commit, environment and modelci.yaml: the delivery key; same data) →
   skipped, nothing trained.
2. The commit is trained in the sandbox and registered as a delivery does
   (``Deliverer.deliver`` with ``promote=False``), its DVC data fetched fresh,
   tagged with the trigger and the data version.
3. Both the new version and the champion are scored by modelci, each in its
   sandboxed model worker, on the *same* rows: the new commit's ``scoring:``
   dataset. The comparison pairs them row by row, so its intervals are paired
   bootstrap ones. Comparing the new run's metrics with the champion's from
   months ago, on other data, is what the tutorials do, and it is wrong.
4. The champion's own gates (``deliver.gates.decide``) judge the scores; the
   champion alias moves or not, with a model event saying who and why, and the
   scores are kept as tags on the new version. Every retrain is stored
   (``store.retrains``).

In proposal mode (``retrain.mode: pull-request``) nothing trains: the import
pointers the refresh updated (``result.refreshed``) go to a ``Proposer``
(``retrain.proposal``), which opens or updates a pull request; decision
"proposed", or "skipped" when no import changed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from modelci.data.versions import data_version
from modelci.deliver.delivery import Deliverer, model_name_for
from modelci.deliver.deliverykey import delivery_config, delivery_key
from modelci.deliver.gates import decide
from modelci.deliver.modelspec import DELIVERY_KEY_TAG, ModelVersion
from modelci.errors import ConfigError, ModelCIError, NeedsGpuWorker
from modelci.evaluate.compare import Comparison, MetricRule, compare, mark_scored
from modelci.evaluate.evaluation import Evaluator, Reporter
from modelci.retrain.proposal import Proposer, no_proposer_error, propose_refreshed
from modelci.retrain.result import RetrainResult, Trigger
from modelci.runner.checkout import Mirror, is_remote_url, open_mirror
from modelci.runner.config import CONFIG_FILE, RepoConfig, RetrainMode, parse_config

if TYPE_CHECKING:
    from modelci.scoring.plan import ScoringPlan
    from modelci.scoring.scorer import Scored

__all__ = ["NO_SCORING_REASON", "Retrainer", "drift_retrain", "repository_key"]

ROLE = "retrain"
NO_SCORING_REASON = (
    "add a scoring: section so modelci can compare the new model and the champion on the same rows"
)
_SCORE_TAG = "modelci.retrain.score"
_Say = Callable[[str, str], None]


def repository_key(repo: str) -> str:
    """How a repository is named in the retrain history: a URL as given, a path absolute."""
    return repo if is_remote_url(repo) else str(Path(repo).resolve())


class Retrainer:
    """Retrains on the deliverer's sandbox, environments, registry and store."""

    def __init__(self, *, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    @classmethod
    def from_evaluator(cls, evaluator: Evaluator) -> Retrainer:
        return cls(deliverer=Deliverer.from_evaluator(evaluator))

    def retrain(
        self,
        repo: str,
        ref: str,
        *,
        trigger: Trigger,
        actor: str,
        git_env: Mapping[str, str] | None = None,
        reporter: Reporter | None = None,
        cancel: threading.Event | None = None,
        gpu_allowed: bool = True,
        why: str | None = None,
        proposer: Proposer | None = None,
        mode: RetrainMode | None = None,
    ) -> RetrainResult:
        """Retrain ``ref`` of ``repo``; the commit's own errors come back in
        ``RetrainResult.error`` (decision "failed"), never raised. ``why`` (a drift
        alert's reason) comes first among the reasons. ``proposer`` opens the pull
        request of proposal mode (the server's GitHub App; without one that mode
        fails with a clear error); ``mode`` overrides the commit's ``retrain.mode``
        (the CLI's ``--promote``)."""
        from modelci.store import retrains as store

        result = RetrainResult(repo=repo, ref=ref, sha=None, trigger=trigger, actor=actor)
        if why:
            result.reasons.append(why)
        database = self.deliverer.evaluator.database()
        with database.session() as session:
            record = store.create_retrain(
                session, repository=repository_key(repo), ref=ref, trigger=trigger, actor=actor
            )
            result.retrain_id = record.id
        evaluator = self.deliverer.evaluator
        say = (reporter or evaluator.reporter).update
        try:
            self._retrain(result, git_env=git_env, reporter=reporter, cancel=cancel,
                          gpu_allowed=gpu_allowed, proposer=proposer, mode=mode)  # fmt: skip
        except NeedsGpuWorker as exc:
            result.decision, result.error = "failed", f"moved to a GPU worker: {exc.message}"
            raise  # not the commit's problem: the job moves to the gpu queue
        except ModelCIError as exc:
            result.decision, result.error = "failed", str(exc)
            say(ROLE, "failed")
        finally:
            with database.session() as session:
                store.finish_retrain(
                    session,
                    retrain_id=record.id,
                    sha=result.sha,
                    decision=result.decision,
                    reasons=result.reasons,
                    model_name=result.model_name,
                    version=result.version,
                    champion_version=result.champion_version,
                    data_version=result.data_version,
                    metrics={"new": result.new_metrics, "champion": result.champion_metrics},
                    error=result.error,
                )
        return result

    def _retrain(
        self,
        result: RetrainResult,
        *,
        git_env: Mapping[str, str] | None,
        reporter: Reporter | None,
        cancel: threading.Event | None,
        gpu_allowed: bool,
        proposer: Proposer | None,
        mode: RetrainMode | None,
    ) -> None:
        deliverer = self.deliverer
        settings = deliverer.settings
        say = (reporter or deliverer.evaluator.reporter).update
        say(ROLE, "fetching")
        mirror = open_mirror(result.repo, settings.mirrors_dir, git_env=git_env)
        result.sha = sha = mirror.resolve(result.ref)
        config = delivery_config(mirror, sha)
        pull_request = (mode or config.retrain.mode) == "pull-request"
        if pull_request and proposer is None:
            raise no_proposer_error()  # before any work: the CLI cannot open the pull request
        self._refresh(result, mirror, cancel, say)
        if pull_request:
            assert proposer is not None
            self._propose(result, mirror, proposer, say)  # nothing trains
            return
        with ExitStack() as stack:
            # The scored rows, read clean before anything trains (a DVC-tracked file out
            # of the repository's cache, md5 checked): the training cannot touch them.
            plan = None
            if config.scoring is not None:
                say(ROLE, "reading the scoring data")
                plan = stack.enter_context(
                    deliverer.evaluator.scoring_plan(config.scoring, mirror, sha, repo=result.repo)
                )
            key = delivery_key(
                mirror, sha, config, deliverer.evaluator.environments, plan, result.refreshed
            )
            name = result.model_name = model_name_for(result.repo, config)
            result.data_version = data_version(mirror, sha, result.refreshed)
            champion = deliverer.registry.champion(name)
            if champion is not None:
                result.champion_version, result.champion_sha = champion.version, champion.sha
                result.data_changed = _data_changed(
                    champion.data_version or {}, result.data_version
                )
                if _unchanged(champion, key, result.data_version):
                    result.decision = "skipped"
                    result.reasons.append(
                        f"nothing changed since v{champion.version} was trained: the same "
                        f"commit {sha[:7]}, the same data and scored rows, and the same "
                        f"environment and {CONFIG_FILE}"
                    )
                    say(ROLE, "skipped: nothing changed")
                    return
            delivered = deliverer.deliver(
                result.repo, sha, actor=result.actor, cancel=cancel, git_env=git_env,
                reporter=reporter, gpu_allowed=gpu_allowed, promote=False, reuse=False,
                trigger=result.trigger, scoring=plan, overlay=result.refreshed,
            )  # fmt: skip
            if delivered.error is not None:
                result.decision, result.error = "failed", delivered.error
                result.reasons.append("training failed: nothing was registered")
                return
            assert delivered.version is not None
            result.version = delivered.version
            with deliverer.model_lock(name):
                self._judge(result, mirror, config, plan, say)

    def _propose(
        self, result: RetrainResult, mirror: Mirror, proposer: Proposer, say: _Say
    ) -> None:
        """Proposal mode, after the refresh step: see ``retrain.proposal.propose_refreshed``."""
        propose_refreshed(result, mirror, proposer, lambda step: say(ROLE, step))

    def _refresh(
        self, result: RetrainResult, mirror: Mirror, cancel: threading.Event | None, say: _Say
    ) -> None:
        """Step 1: the commit's DVC imports, updated to their source's latest (fetch
        sandbox, the server's credentials); the training then uses those pointers."""
        from modelci.retrain.refresh import imports_at, refresh_imports

        assert result.sha is not None
        if not imports_at(mirror, result.sha):
            return
        say(ROLE, "refreshing DVC imports")
        refresh = refresh_imports(
            self.deliverer.evaluator, mirror, result.sha, repo=result.repo, cancel=cancel
        )
        result.refreshed = dict(refresh.changed)
        hashes = refresh.hashes or {}
        result.refreshed_from = {
            path: (refresh.sources[path], *hashes.get(path, (None, None)))
            for path in refresh.changed
        }
        if refresh:
            result.reasons.append(
                f"refreshed {len(refresh.changed)} DVC import(s) from their source: "
                + ", ".join(sorted(refresh.changed))
            )

    def _judge(
        self,
        result: RetrainResult,
        mirror: Mirror,
        config: RepoConfig,
        plan: ScoringPlan | None,
        say: _Say,
    ) -> None:
        """Score, decide and promote, under the model's lock (the champion is read again:
        a delivery may have moved it while this retrain trained)."""
        deliverer, name = self.deliverer, result.model_name or ""
        registry = deliverer.registry
        assert result.version is not None
        new = registry.get_version(name, result.version)
        champion = registry.champion(name)
        result.champion_version = champion.version if champion else None
        result.champion_sha = champion.sha if champion else None
        if champion is None:
            result.new_metrics = dict(new.metrics)
            decision = decide(new.metrics, None, {}, config.promotion.floors)
        elif plan is None:
            result.new_metrics = dict(new.metrics)
            result.decision = "kept"
            result.reasons.append(NO_SCORING_REASON)
            self._event(result, "rejected", NO_SCORING_REASON, champion)
            registry.set_version_tags(name, result.version, _score_tags(result))
            say(ROLE, "registered, not compared")
            return
        else:
            rules_config = _champion_config(mirror, champion, config, result.reasons)
            say(ROLE, "scoring the new model and the champion on the same rows")
            scored_new, scored_champion = self._score(new, plan), self._score(champion, plan)
            result.scored_on = plan.label
            result.new_metrics, result.champion_metrics = (
                scored_new.metrics,
                scored_champion.metrics,
            )
            result.comparison = _comparison(scored_new, scored_champion, rules_config)
            # Floors may name metrics only the training reports: the new version's own.
            candidate = {**new.metrics, **scored_new.metrics}
            decision = decide(
                candidate,
                scored_champion.metrics,
                rules_config.promotion_gates(),
                rules_config.promotion.floors,
            )
        result.reasons.extend(decision.reasons if not decision.promote else decision.checks)
        if decision.promote:
            registry.set_champion(name, result.version)
            result.decision = "promoted"
        else:
            result.decision = "kept"
        self._event(
            result,
            "promoted" if decision.promote else "rejected",
            decision.summary(),
            champion,
            checks=decision.checks,
        )
        registry.set_version_tags(name, result.version, _score_tags(result))
        say(ROLE, "promoted" if decision.promote else "registered, not promoted")

    def _score(self, version: ModelVersion, plan: ScoringPlan) -> Scored:
        from modelci.scoring.plan import score_on_plan

        launcher = self.deliverer.evaluator.scoring_launcher()
        settings = self.deliverer.settings
        return score_on_plan(
            launcher, version.model_dir, plan, settings, name=version.name, version=version.version
        )

    def _event(
        self,
        result: RetrainResult,
        action: str,
        summary: str,
        champion: ModelVersion | None,
        *,
        checks: list[str] | None = None,
    ) -> None:
        self.deliverer.record_event(
            result.model_name or "",
            result.version,
            action,
            actor=result.actor,
            reason=f"{result.trigger} retrain: {summary}",
            sha=result.sha,
            details={
                "trigger": result.trigger,
                "retrain_id": result.retrain_id,
                "reasons": list(result.reasons),
                "checks": list(checks or []),
                "champion_before": champion.version if champion else None,
                "scores": {"new": result.new_metrics, "champion": result.champion_metrics},
                # new minus champion on the same rows: the dashboard's whiskers.
                "intervals": _intervals(result),
                "scored_on": result.scored_on,
                "data_version": result.data_version,
            },
        )


def drift_retrain(retrainer: Retrainer, repo: str, *, reason: str) -> RetrainResult:
    """The entry point for drift monitoring: retrain the default branch (the mirror's
    HEAD), trigger "drift", the alert's reason first among the retrain's reasons."""
    return retrainer.retrain(
        repo, "HEAD", trigger="drift", actor="modelci drift monitor", why=f"drift: {reason}"
    )


def _unchanged(champion: ModelVersion, key: str, data: dict[str, str]) -> bool:
    """Same commit, environment and configuration (the delivery key) and the same data."""
    recorded = champion.data_version
    if champion.tags.get(DELIVERY_KEY_TAG) != key:
        return False
    # A champion delivered before data versions were recorded: the commit pins its data.
    return recorded is None or recorded == data


def _data_changed(
    old: Mapping[str, str], new: Mapping[str, str]
) -> dict[str, tuple[str | None, str | None]]:
    return {
        path: (old.get(path), new.get(path))
        for path in sorted({*old, *new})
        if old.get(path) != new.get(path)
    }


def _champion_config(
    mirror: Mirror, champion: ModelVersion, fallback: RepoConfig, notes: list[str]
) -> RepoConfig:
    """The champion's own modelci.yaml (its gates and floors judge its replacement)."""
    try:
        text = mirror.read_file(champion.sha, CONFIG_FILE) if champion.sha else None
        if text is not None:
            return parse_config(text)
    except (ConfigError, ModelCIError):
        pass
    notes.append(
        f"the champion's {CONFIG_FILE} could not be read: the new commit's gates judged it"
    )
    return fallback


def _comparison(new: Scored, champion: Scored, config: RepoConfig) -> Comparison:
    """New vs champion, paired row by row (the same rows, in the same order)."""
    rules = [
        MetricRule(name=name, direction=rule.direction, tolerance=rule.tolerance, gate=rule.gate)
        for name, rule in config.promotion_gates().items()
    ]
    comparison = compare(
        new.metrics,
        champion.metrics,
        rules,
        head_predictions=new.predictions,
        base_predictions=champion.predictions,
    )
    return mark_scored(comparison, frozenset(new.metrics))


def _intervals(result: RetrainResult) -> dict[str, dict[str, float]]:
    """Each compared metric's interval of new minus champion (paired, the same rows)."""
    if result.comparison is None:
        return {}
    return {
        m.name: {
            "low": m.interval.low,
            "high": m.interval.high,
            "confidence": m.interval.confidence,
        }
        for m in result.comparison.metrics
        if m.interval is not None
        and math.isfinite(m.interval.low)
        and math.isfinite(m.interval.high)
    }


def _score_tags(result: RetrainResult) -> dict[str, str]:
    tags = {
        "modelci.retrain.id": str(result.retrain_id),
        "modelci.retrain.decision": result.decision,
        "modelci.retrain.champion_version": str(result.champion_version or ""),
    }
    for side, metrics in (("new", result.new_metrics), ("champion", result.champion_metrics)):
        for metric, value in metrics.items():
            tags[f"{_SCORE_TAG}.{side}.{metric}"[:250]] = repr(float(value))
    return tags
