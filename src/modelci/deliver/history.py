"""A model's history: champion changes as a stack, and events in words.

Pure: model events (oldest first) in, the champion changes that a rollback can
undo out. Every promotion that moved the ``champion`` alias pushes a change
(from the champion before it to the new one); a rollback pops the last one
and puts back the champion it replaced, so a second rollback undoes the
change before that, and so on down to the first champion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ChampionChange", "champion_changes", "describe_event"]


@dataclass(frozen=True)
class ChampionChange:
    """The champion became ``version``; ``before`` was the champion until then (None: none)."""

    version: int
    before: int | None


def champion_changes(events: Iterable[Mapping[str, Any]]) -> list[ChampionChange]:
    """The champion changes still in effect, the latest last (what rollback undoes)."""
    stack: list[ChampionChange] = []
    for event in events:
        version = event.get("version")
        if version is None:
            continue
        details = event.get("details") or {}
        if event.get("action") == "promoted":
            before = details.get("champion_before")
            if before == version:
                continue  # promoting the champion again changes nothing to undo
            stack.append(ChampionChange(version, before))
        elif event.get("action") == "rolled_back" and stack:
            stack.pop()
    return stack


def _why(actor: str, reason: str, *, drop: str = "") -> str:
    reason = reason.removeprefix(drop).strip()
    return f" (by {actor}, because {reason})" if reason else f" (by {actor})"


def describe_event(event: Mapping[str, Any]) -> str:
    """One event in words, e.g. ``promoted v2 (by alice, because accuracy 0.93 ≥ floor 0.9)``."""
    action, version = event.get("action"), event.get("version")
    actor, reason = str(event.get("actor") or "unknown"), str(event.get("reason") or "")
    details = event.get("details") or {}
    if action == "registered":
        sha = str(event.get("sha") or "")[:7]
        return f"registered v{version}" + (f" from commit {sha}" if sha else "") + f" (by {actor})"
    if action == "promoted":
        how = " by hand" if details.get("manual") else ""
        return f"promoted v{version}{how}" + _why(actor, reason, drop="promoted:")
    if action == "rejected":
        return f"did not promote v{version}" + _why(actor, reason, drop="not promoted:")
    if action == "rolled_back":
        undone = details.get("from")
        replaced = f", replacing v{undone}" if undone is not None else ""
        return f"rolled back to v{version}{replaced}" + _why(actor, reason)
    if action == "swap_failed":
        return f"could not serve v{version}" + _why(actor, reason)
    return f"{str(action).replace('_', ' ')} v{version}" + _why(actor, reason)
