"""Whether a trained version replaces the champion: gates against it, and floors.

Pure: metrics in, a decision with human reasons out. A gate bounds how much
a metric may get worse than the champion's (direction + tolerance, as in a
pull request's evaluation); a floor is an absolute bound that holds even for
the first version, which has no champion to be compared with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelci.evaluate.metrics import default_direction
from modelci.runner.config import FloorConfig, MetricConfig

__all__ = ["Decision", "decide"]


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)  # why not, when refused
    checks: list[str] = field(default_factory=list)  # every check that passed

    def summary(self) -> str:
        if self.promote:
            return "promoted: " + ("; ".join(self.checks) or "no gate or floor applies")
        return "not promoted: " + "; ".join(self.reasons)


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def decide(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    gates: Mapping[str, MetricConfig],
    floors: Mapping[str, FloorConfig],
) -> Decision:
    """Promote the candidate when it meets every floor and every gate against the champion."""
    reasons: list[str] = []
    checks: list[str] = []
    for name, floor in floors.items():
        value = candidate.get(name)
        if value is None:
            reasons.append(f"{name} is missing (a floor is set on it)")
            continue
        if floor.min is not None:
            if value < floor.min:
                reasons.append(f"{name} {_fmt(value)} < floor {_fmt(floor.min)}")
            else:
                checks.append(f"{name} {_fmt(value)} ≥ floor {_fmt(floor.min)}")
        if floor.max is not None:
            if value > floor.max:
                reasons.append(f"{name} {_fmt(value)} > ceiling {_fmt(floor.max)}")
            else:
                checks.append(f"{name} {_fmt(value)} ≤ ceiling {_fmt(floor.max)}")
    if champion is None:
        if not reasons:
            checks.append("no champion yet: the first version that meets the floors is promoted")
        return Decision(promote=not reasons, reasons=reasons, checks=checks)
    for name, rule in gates.items():
        if not rule.gate:
            continue
        direction = rule.direction or default_direction(name)
        value, best = candidate.get(name), champion.get(name)
        if direction is None:
            reasons.append(f"{name}: no direction known; set direction: higher or lower")
            continue
        if value is None:
            reasons.append(f"{name} is missing (the champion has it gated)")
            continue
        if best is None:
            checks.append(f"{name} {_fmt(value)}: the champion has no {name} to compare with")
            continue
        tolerance = rule.tolerance
        if direction == "higher":
            bound = best - tolerance
            worse = value < bound
            words = f"dropped below the champion's {_fmt(best)}"
        else:
            bound = best + tolerance
            worse = value > bound
            words = f"rose above the champion's {_fmt(best)}"
        allowed = f" by more than {_fmt(tolerance)}" if tolerance else ""
        if worse:
            reasons.append(f"{name} {_fmt(value)} {words}{allowed}")
        else:
            checks.append(f"{name} {_fmt(value)} vs champion {_fmt(best)}")
    return Decision(promote=not reasons, reasons=reasons, checks=checks)
