"""What the pages show, built from the store's rows (``store.dashboard``).

Pure: dicts in, dicts out, no web framework and no database. A model's page is
built from its events alone (each registration carries its metrics and commit,
each retrain's decision its trigger, data version, scores and intervals), so it
never waits on MLflow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelci.deliver.history import champion_changes, describe_event
from modelci.runner.checkout import is_remote_url, repository_name

__all__ = ["PHASES", "model_page", "phases", "repo_slug", "visible_retrains"]

_SLUG = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
# A run's timings in the order they happen, in words.
PHASES = (
    ("data_s", "data fetched"),
    ("env_s", "environment"),
    ("prepare_s", "ready to train"),
    ("train_s", "training"),
    ("score_s", "scoring"),
    ("total_s", "total"),
)


def repo_slug(repository: str | None) -> str:
    """``owner/name`` of a repository named by URL, slug or local path (its folder's name)."""
    if not repository:
        return ""
    if is_remote_url(repository):
        return repository_name(repository)
    if _SLUG.match(repository):
        return repository
    return Path(repository).name


def visible_retrains(
    retrains: Iterable[Mapping[str, Any]], allowed: frozenset[str] | None, limit: int
) -> list[dict[str, Any]]:
    """The first ``limit`` retrains whose repository the viewer may read (None: all)."""
    shown = []
    for retrain in retrains:
        slug = repo_slug(retrain.get("repository"))
        if allowed is None or slug in allowed:
            shown.append({**retrain, "repo": slug})
            if len(shown) == limit:
                break
    return shown


def phases(timings: Mapping[str, Any]) -> list[tuple[str, float]]:
    """A run's phases with their seconds, in order; those it did not go through left out."""
    out = []
    for key, label in PHASES:
        value = timings.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append((label, float(value)))
    return out


def _decisions(events_oldest_first: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Each version's latest promotion decision (promoted or rejected)."""
    found: dict[int, Mapping[str, Any]] = {}
    for event in events_oldest_first:
        if event.get("action") in ("promoted", "rejected") and event.get("version") is not None:
            found[int(event["version"])] = event
    return found


def model_page(
    events_newest_first: Sequence[Mapping[str, Any]],
    *,
    shown: int = 30,
) -> dict[str, Any]:
    """A model's versions (newest first), champion, repository and the ``shown`` newest
    events in words."""
    oldest_first = list(reversed(events_newest_first))
    changes = champion_changes(oldest_first)
    champion = changes[-1].version if changes else None
    decisions = _decisions(oldest_first)
    versions: list[dict[str, Any]] = []
    repository = ""
    for event in oldest_first:
        if event.get("action") != "registered" or event.get("version") is None:
            continue
        number = int(event["version"])
        details = event.get("details") or {}
        repository = repo_slug(details.get("repository")) or repository
        decision = decisions.get(number) or {}
        decided = decision.get("details") or {}
        scores = decided.get("scores") or {}
        metrics = {**(details.get("metrics") or {}), **(scores.get("new") or {})}
        versions.append(
            {
                "version": number,
                "sha": event.get("sha"),
                "at": event.get("at"),
                "actor": event.get("actor"),
                # A retrain's decision names its trigger and data version; a merge's not.
                "trigger": decided.get("trigger", "merge"),
                "data_version": decided.get("data_version") or {},
                "metrics": metrics,
                "champion_scores": scores.get("champion") or {},
                "intervals": decided.get("intervals") or {},
                "decision": decision.get("action"),
                "decision_reason": decision.get("reason"),
                "champion": number == champion,
            }
        )
    events = [{**e, "description": describe_event(e)} for e in events_newest_first[:shown]]
    return {
        "repository": repository,
        "champion": champion,
        "can_roll_back": bool(changes) and changes[-1].before is not None,
        "versions_oldest_first": versions,
        "versions": list(reversed(versions)),
        "events": events,
    }
