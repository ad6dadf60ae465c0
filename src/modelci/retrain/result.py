"""What one retrain did: the decision and its reasons, the versions, both sides' scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from modelci.errors import EXIT_ERROR, EXIT_OK
from modelci.retrain.proposal import NOTHING_TO_PROPOSE, Proposal

if TYPE_CHECKING:
    from modelci.evaluate.compare import Comparison

__all__ = ["Decision", "RetrainResult", "Trigger"]

Trigger = Literal["schedule", "manual", "data", "drift"]
# proposed: retrain.mode pull-request opened (or updated) a pull request; nothing trained.
Decision = Literal["promoted", "kept", "skipped", "failed", "proposed"]


@dataclass
class RetrainResult:
    repo: str
    ref: str
    sha: str | None
    trigger: Trigger
    actor: str
    decision: Decision = "failed"
    reasons: list[str] = field(default_factory=list)  # why, in words
    model_name: str | None = None
    version: int | None = None  # the version this retrain registered
    champion_version: int | None = None  # the champion it was compared with
    data_version: dict[str, str] = field(default_factory=dict)  # DVC output path -> md5
    comparison: Comparison | None = None  # new model vs champion, on the same rows
    error: str | None = None
    retrain_id: int | None = None
    # The scores behind the comparison (both on the same rows), and those rows in words.
    new_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    scored_on: str | None = None
    champion_sha: str | None = None  # the commit the champion was trained from
    # What changed in the data since the champion was trained: path -> (old md5, new md5).
    data_changed: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    # DVC imports refreshed to their source's latest before training (retrain.refresh):
    # .dvc path -> its new text, and -> (source, old md5, new md5).
    refreshed: dict[str, bytes] = field(default_factory=dict)
    refreshed_from: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)
    proposal: Proposal | None = None  # proposal mode: the pull request it opened or updated

    @property
    def exit_code(self) -> int:
        return EXIT_ERROR if self.decision == "failed" else EXIT_OK

    def title(self) -> str:
        """One line: the check run's title."""
        sha = (self.sha or self.ref)[:7]
        name = self.model_name or "the model"
        if self.decision == "failed":
            return f"retrain of {sha} failed"
        if self.decision == "proposed" and self.proposal is not None:
            verb = "updated" if self.proposal.updated else "opened"
            return f"retrain of {sha}: data refreshed, pull request #{self.proposal.number} {verb}"
        if self.decision == "skipped" and NOTHING_TO_PROPOSE in self.reasons:
            return f"retrain of {sha} skipped: {NOTHING_TO_PROPOSE}"
        if self.decision == "skipped":
            since = f"{name} v{self.champion_version}"
            return f"retrain of {sha} skipped: nothing changed since {since}"
        if self.decision == "promoted":
            return f"retrain of {sha}: {name} v{self.version} promoted to champion"
        champion = f"v{self.champion_version}" if self.champion_version else "none"
        return f"retrain of {sha}: {name} v{self.version} registered, champion stays {champion}"

    def as_json(self) -> dict[str, Any]:
        from modelci.evaluate.report import render_json

        return {
            "retrain_id": self.retrain_id,
            "repository": self.repo,
            "ref": self.ref,
            "sha": self.sha,
            "trigger": self.trigger,
            "actor": self.actor,
            "decision": self.decision,
            "title": self.title(),
            "reasons": list(self.reasons),
            "model": self.model_name,
            "version": self.version,
            "champion_version": self.champion_version,
            "champion_sha": self.champion_sha,
            "data_version": dict(self.data_version),
            "data_changed": {k: list(v) for k, v in self.data_changed.items()},
            "refreshed": {
                path: {"source": source, "old": old, "new": new}
                for path, (source, old, new) in self.refreshed_from.items()
            },
            "metrics": {"new": self.new_metrics, "champion": self.champion_metrics},
            "scored_on": self.scored_on,
            "comparison": render_json(self.comparison) if self.comparison else None,
            "error": self.error,
            "proposal": self.proposal.as_json() if self.proposal else None,
        }
