"""When a scheduled retrain is due: cron slots in the repository's time zone (pure).

The only module that imports croniter. A slot is an instant at which the cron
expression fires in its time zone (``0 3 * * 1`` in Europe/Berlin is 03:00
Berlin time on Mondays, whatever the offset that week). The dispatcher asks for
the *latest* slot after the last one fired: a server that was down over two
slots finds only the newest one due, so a missed retrain is caught up once, not
once per missed slot.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

__all__ = ["CronSchedule", "check_cron", "check_timezone", "due_slot", "next_slot"]

# Five fields only: croniter reads a sixth as seconds, which a retrain never needs.
_FIELDS = 5
_CRON_HINT = (
    "use five cron fields: minute hour day-of-month month day-of-week, "
    'e.g. "0 3 * * 1" for 03:00 every Monday'
)


def check_cron(expression: str) -> str:
    """``expression`` if croniter reads it as a five-field schedule; else ValueError."""
    fields = expression.split()
    if len(fields) != _FIELDS:
        raise ValueError(f"{expression!r} has {len(fields)} fields; {_CRON_HINT}")
    try:
        croniter(expression)
    except (CroniterBadCronError, CroniterNotAlphaError, ValueError) as exc:
        raise ValueError(f"{expression!r} is not a cron schedule ({exc}); {_CRON_HINT}") from None
    return " ".join(fields)


def check_timezone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; else ValueError saying what to write."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not an IANA time zone; use a name such as UTC, Europe/Berlin or "
            "America/New_York"
        ) from None


@dataclass(frozen=True)
class CronSchedule:
    cron: str
    timezone: str = "UTC"

    def _iter(self, start: dt.datetime) -> croniter:
        zone = check_timezone(self.timezone)
        return croniter(check_cron(self.cron), start.astimezone(zone))


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware one")
    return value.astimezone(dt.UTC)


def due_slot(schedule: CronSchedule, *, after: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """The latest slot ``s`` with ``after < s <= now`` (UTC), or None when none is due.

    ``after`` is the last slot fired (or when the schedule was set): every slot up
    to it is done. Only the latest of several missed slots is returned.
    """
    after, now = _utc(after), _utc(now)
    if now <= after:
        return None
    try:
        # get_prev from now + 1 µs: a slot exactly at ``now`` counts as due.
        latest = schedule._iter(now + dt.timedelta(microseconds=1)).get_prev(dt.datetime)
    except CroniterBadDateError:  # e.g. "0 0 30 2 *": February 30th never comes
        return None
    latest = _utc(latest)
    return latest if latest > after else None


def next_slot(schedule: CronSchedule, *, after: dt.datetime) -> dt.datetime | None:
    """The first slot strictly after ``after`` (UTC), or None if the schedule never fires."""
    try:
        return _utc(schedule._iter(_utc(after)).get_next(dt.datetime))
    except CroniterBadDateError:
        return None
