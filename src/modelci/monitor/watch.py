"""Watching served models: each new window of a champion's traffic tested for drift.

For each model with a champion and a reference profile (computed when that
version was registered, ``monitor.reference``), :meth:`Watcher.check` takes the
next complete windows of the champion's logged requests (``monitor.windows``),
tests each against the profile (``monitor.drift``), and stores the report. A
window is claimed and its report stored in one transaction (the watermark moves
from the old end to the new with one conditional UPDATE), so however many
workers check the same model, each window is tested and reported once.

After each report: the alert (a GitHub issue per model, through :class:`Alerts`)
is opened or updated while the data drifts and closed after ``close_after``
clean windows; with ``retrain_on_drift`` a drifting window queues a retrain
(:class:`RetrainOnDrift`, the continuous-training entry point) at most once per
``cooldown``. Both go out after the transaction: a GitHub outage delays an
alert to the next drifting window but never loses a report.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelci.deliver.modelspec import ModelRegistry, ModelVersion
from modelci.errors import ModelCIError
from modelci.monitor.config import MonitoringConfig
from modelci.monitor.live import LiveMetric, live_metrics
from modelci.monitor.windows import PREDICTION_COLUMN, Window, next_window

__all__ = ["Alerts", "Checked", "RetrainOnDrift", "Watcher", "live_for_report"]

log = logging.getLogger(__name__)
SessionFactory = Callable[[], AbstractContextManager[Any]]
MAX_WINDOWS = 20  # per model per check: a backlog is worked off over several checks


@dataclass(frozen=True)
class Checked:
    """One window tested: what the alert and the retrain need."""

    model_name: str
    version: int
    repository: str | None
    report_id: int
    drifted: bool
    share_drifted: float
    drifted_columns: list[str]
    rows: int
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    live: list[LiveMetric] = field(default_factory=list)

    def summary(self) -> str:
        columns = ", ".join(self.drifted_columns) or "none"
        verdict = "drifts" if self.drifted else "does not drift"
        return (
            f"{self.model_name} v{self.version}: the last {self.rows} served rows "
            f"{verdict} ({self.share_drifted:.0%} of columns; drifted: {columns})"
        )


class Alerts(Protocol):
    def drifting(self, checked: Checked, issue_number: int | None) -> int | None:
        """Open the model's alert, or update the open one; its issue number."""

    def cleared(self, checked: Checked, issue_number: int | None) -> None:
        """Close the model's alert: the data is back to its reference."""


class RetrainOnDrift(Protocol):
    def retrain(self, checked: Checked, *, reason: str) -> None: ...


class Watcher:
    def __init__(
        self,
        *,
        sessions: SessionFactory,
        registry: ModelRegistry,
        alerts: Alerts | None = None,
        retrains: RetrainOnDrift | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.alerts = alerts
        self.retrains = retrains
        self.now = now

    def check_all(self) -> list[Checked]:
        checked: list[Checked] = []
        for name in self.registry.model_names():
            try:
                checked += self.check(name)
            except Exception:  # one model's trouble must not stop the others' checks
                log.exception("the drift check of %s failed", name)
        return checked

    def check(self, name: str) -> list[Checked]:
        """Test the champion's complete windows not tested yet (at most MAX_WINDOWS)."""
        from modelci.monitor.profile import Profile
        from modelci.store import monitoring as store

        champion = self.registry.champion(name)
        if champion is None:
            return []
        with self.sessions() as session:
            reference = store.get_profile(session, model_name=name, version=champion.version)
            if reference is None:
                return []  # registered before monitoring, or without reference data
            profile = Profile.from_bytes(reference.profile)
            config = MonitoringConfig.model_validate(reference.settings)
            after = store.monitor_state(session, model_name=name).last_prediction_id
        if not config.enabled:
            return []
        found: list[Checked] = []
        for _ in range(MAX_WINDOWS):
            window, mark = self._next(name, champion, profile, config, after)
            if window is None:
                if mark != after:  # only other versions' requests: pass over them
                    with self.sessions() as session:
                        store.claim_window(session, model_name=name, after_id=after, last_id=mark)
                return found
            try:
                checked = self._test(champion, profile, config, window, after)
            except ModelCIError as exc:
                # Served data that cannot be tested (e.g. outputs that are lists, not one
                # value per row) is passed over, not retried every minute forever.
                log.warning("window %s of %s not tested: %s", _label(window), name, exc)
                with self.sessions() as session:
                    store.claim_window(
                        session, model_name=name, after_id=after, last_id=window.last_id
                    )
                after = window.last_id
                continue
            if checked is None:
                return found  # another worker took this window
            found.append(checked)
            self._act(checked, config)
            after = window.last_id
        return found

    def _next(
        self,
        name: str,
        champion: ModelVersion,
        profile: Any,
        config: MonitoringConfig,
        after: int,
    ) -> tuple[Window | None, int]:
        from modelci.store import monitoring as store

        def read(after_id: int, limit: int) -> Sequence[Any]:
            with self.sessions() as session:
                rows = store.predictions_after(
                    session, model_name=name, after_id=after_id, limit=limit
                )
                session.expunge_all()
                return rows

        return next_window(
            read,
            after_id=after,
            version=champion.version,
            columns=[c.name for c in profile.columns if c.name != PREDICTION_COLUMN],
            size=config.window_size(),
            now=self.now(),
        )

    def _test(
        self,
        champion: ModelVersion,
        profile: Any,
        config: MonitoringConfig,
        window: Window,
        after: int,
    ) -> Checked | None:
        from modelci.monitor.verdicts import drift
        from modelci.store import monitoring as store

        name = champion.name
        report = drift(profile, window.columns, overrides=config, label=_label(window))
        body = report.as_json()
        with self.sessions() as session:
            pairs = store.labelled_predictions(
                session, model_name=name, first_id=window.first_id, last_id=window.last_id
            )
            labelled = [(p.outputs, f.labels) for p, f in pairs]
        live = live_metrics(labelled, _scoring_metrics(champion), champion.metrics)
        body["window"] = {
            "first_id": window.first_id,
            "last_id": window.last_id,
            "start": window.start.isoformat() if window.start else None,
            "end": window.end.isoformat() if window.end else None,
            "size": config.window_size().label(),
        }
        body["live"] = [metric.as_json() for metric in live]
        # Labels keep arriving after a window is checked: readers recompute the live
        # metric from these (``live_for_report``).
        body["registered_metrics"] = dict(champion.metrics)
        with self.sessions() as session:
            if not store.claim_window(
                session, model_name=name, after_id=after, last_id=window.last_id
            ):
                return None
            record = store.add_drift_report(
                session,
                model_name=name,
                version=champion.version,
                window_start=window.start,
                window_end=window.end,
                rows=window.rows,
                share_drifted=float(report.share_drifted),
                drifted=bool(report.dataset_drifted),
                report=body,
            )
            report_id = record.id
        return Checked(
            model_name=name,
            version=champion.version,
            repository=champion.repository,
            report_id=report_id,
            drifted=bool(report.dataset_drifted),
            share_drifted=float(report.share_drifted),
            drifted_columns=[c.name for c in report.columns if c.drifted],
            rows=window.rows,
            window_start=window.start,
            window_end=window.end,
            live=live,
        )

    def _act(self, checked: Checked, config: MonitoringConfig) -> None:
        """The alert and the retrain, outside the report's transaction."""
        from modelci.store import monitoring as store

        name = checked.model_name
        with self.sessions() as session:
            state = store.monitor_state(session, model_name=name)
            issue, is_open, clean = state.issue_number, state.alert_open, state.clean_windows
        if checked.drifted:
            if self.alerts is not None and config.alerts:
                try:
                    issue = self.alerts.drifting(checked, issue if is_open else None)
                    is_open = issue is not None
                except Exception:
                    log.exception("the drift alert of %s could not be raised", name)
            clean = 0
        elif is_open:
            clean += 1
            if clean >= config.close_after:
                if self.alerts is not None:
                    try:
                        self.alerts.cleared(checked, issue)
                    except Exception:
                        log.exception("the drift alert of %s could not be closed", name)
                        clean -= 1  # try again after the next clean window
                if clean >= config.close_after:
                    is_open, issue, clean = False, None, 0
        with self.sessions() as session:
            store.set_alert(
                session,
                model_name=name,
                alert_open=is_open,
                clean_windows=clean,
                issue_number=issue,
            )
        if checked.drifted and config.retrain_on_drift and self.retrains is not None:
            with self.sessions() as session:
                claimed = store.claim_retrain(
                    session, model_name=name, now=self.now(), cooldown=config.cooldown_span()
                )
            if claimed:
                self.retrains.retrain(checked, reason=checked.summary())


def _scoring_metrics(version: ModelVersion) -> list[str]:
    """The metrics the live metric computes: those the version was scored or trained on."""
    return sorted(version.metrics)


def _label(window: Window) -> str:
    return window.end.isoformat(timespec="seconds") if window.end else f"#{window.last_id}"


def live_for_report(session: Any, name: str, body: dict[str, Any]) -> list[LiveMetric]:
    """The live metric of a stored report's window, with the labels in by now."""
    from modelci.store import monitoring as store

    window = body.get("window") or {}
    first, last = window.get("first_id"), window.get("last_id")
    registered = body.get("registered_metrics") or {}
    if not isinstance(first, int) or not isinstance(last, int):
        return []
    pairs = store.labelled_predictions(session, model_name=name, first_id=first, last_id=last)
    return live_metrics([(p.outputs, f.labels) for p, f in pairs], sorted(registered), registered)
