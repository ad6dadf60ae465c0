"""What one delivery did: the result a CLI prints, a check run summarises, JSON carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelci.deliver.gates import Decision
from modelci.deliver.modelspec import ModelVersion
from modelci.errors import EXIT_ERROR, EXIT_OK, EXIT_REGRESSION

__all__ = ["DeliveryResult"]

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
    # An existing version registered for the same commit, environment and configuration.
    reused: bool = False
    # DVC output path -> md5 the commit trains on (empty without DVC data).
    data_version: dict[str, str] = field(default_factory=dict)
    # The training's timings (data_s and data_bytes: its DVC fetch), as an evaluation's.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def is_champion(self) -> bool:
        """Whether this delivery's version is the champion now."""
        if self.promoted:
            return True
        before = self.champion_before
        return self.reused and before is not None and before.version == self.version

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_ERROR
        return EXIT_OK if self.is_champion else EXIT_REGRESSION

    @property
    def title(self) -> str:
        if self.error is not None:
            return f"delivery of {self.sha[:7] or self.ref} failed"
        if self.reused:
            before = self.champion_before
            now = (
                "it is the champion"
                if self.is_champion
                else f"the champion is v{before.version}"
                if before
                else "there is no champion"
            )
            return (
                f"{self.model_name} version {self.version} reused: already registered for this "
                f"commit, environment and configuration, not trained again; {now}"
            )
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

    def to_json(self) -> dict[str, Any]:
        """For ``--format json`` (deliver, demo)."""
        decision = self.decision
        return {
            "sha": self.sha,
            "model": self.model_name,
            "version": self.version,
            "promoted": self.promoted,
            "reused": self.reused,
            "champion": self.is_champion,
            "title": self.title,
            "reasons": decision.reasons if decision else [],
            "checks": decision.checks if decision else [],
            "metrics": self.metrics,
            "champion_before": self.champion_before.version if self.champion_before else None,
            "run_id": self.run_id,
            "data_version": self.data_version,
            "error": self.error,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }
