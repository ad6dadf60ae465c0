"""Cron slots in a time zone, caught up once, and the retrain: section of modelci.yaml."""

from __future__ import annotations

import datetime as dt

import pytest

from modelci.errors import ConfigError
from modelci.retrain.schedule import CronSchedule, check_cron, due_slot, next_slot
from modelci.runner.config import parse_config

UTC = dt.UTC
MONDAYS_3AM_BERLIN = CronSchedule("0 3 * * 1", "Europe/Berlin")


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_a_slot_is_in_the_schedules_time_zone_across_daylight_saving() -> None:
    # 03:00 in Berlin is 02:00 UTC in winter (CET) and 01:00 UTC in summer (CEST).
    winter = next_slot(MONDAYS_3AM_BERLIN, after=at(2026, 3, 17))
    summer = next_slot(MONDAYS_3AM_BERLIN, after=at(2026, 3, 24))
    assert winter == at(2026, 3, 23, 2)
    assert summer == at(2026, 3, 30, 1)


def test_nothing_is_due_before_the_first_slot_after_the_last_fired() -> None:
    fired = at(2026, 3, 16, 2)  # Monday 03:00 Berlin
    assert due_slot(MONDAYS_3AM_BERLIN, after=fired, now=at(2026, 3, 22, 23)) is None
    assert due_slot(MONDAYS_3AM_BERLIN, after=fired, now=fired) is None


def test_a_slot_is_due_from_its_very_instant() -> None:
    slot = at(2026, 3, 23, 2)
    assert due_slot(MONDAYS_3AM_BERLIN, after=at(2026, 3, 16, 2), now=slot) == slot


def test_a_server_down_over_two_slots_catches_up_once_with_the_latest() -> None:
    every_hour = CronSchedule("0 * * * *")
    last = at(2026, 5, 1, 9)
    now = at(2026, 5, 1, 11, 30)  # 10:00 and 11:00 were missed
    slot = due_slot(every_hour, after=last, now=now)
    assert slot == at(2026, 5, 1, 11)
    # Once fired, nothing more is due until the next slot.
    assert slot is not None
    assert due_slot(every_hour, after=slot, now=now) is None
    assert due_slot(every_hour, after=slot, now=at(2026, 5, 1, 12)) == at(2026, 5, 1, 12)


def test_a_schedule_that_never_fires_is_never_due() -> None:
    february_30th = CronSchedule("0 0 30 2 *")
    assert due_slot(february_30th, after=at(2026, 1, 1), now=at(2027, 1, 1)) is None
    assert next_slot(february_30th, after=at(2026, 1, 1)) is None


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        due_slot(MONDAYS_3AM_BERLIN, after=dt.datetime(2026, 1, 1), now=at(2026, 1, 2))


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 3 * *", "has 4 fields"),
        ("* * * * * */5", "has 6 fields"),
        ("61 * * * *", "is not a cron schedule"),
        ("0 3 * * funday", "is not a cron schedule"),
    ],
)
def test_a_bad_cron_expression_names_the_value_and_the_fix(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        check_cron(expression)
    assert repr(expression) in str(caught.value)
    assert '"0 3 * * 1"' in str(caught.value)


CONFIG = "train: python train.py\nmetrics: metrics.json\n"


def test_the_retrain_section_is_read_with_defaults() -> None:
    config = parse_config(CONFIG + 'retrain:\n  schedule: "0  3 * * 1"\n')
    assert config.retrain.schedule == "0 3 * * 1"  # normalised
    assert config.retrain.timezone == "UTC"
    assert config.retrain.mode == "promote"
    assert parse_config(CONFIG).retrain.schedule is None
    proposing = parse_config(CONFIG + "retrain:\n  mode: pull-request\n")
    assert proposing.retrain.mode == "pull-request"


def test_the_retrain_section_does_not_change_the_configs_digest() -> None:
    # Stored runs are reused by a digest of the config: a schedule changes no run.
    with_schedule = parse_config(CONFIG + 'retrain:\n  schedule: "0 3 * * 1"\n')
    assert with_schedule.digest() == parse_config(CONFIG).digest()


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('  schedule: "0 3 * *"', "line 4: field 'retrain.schedule': .*'0 3 \\* \\*' has 4 fields"),
        ("  timezone: Mars/Olympus", "line 4: field 'retrain.timezone': .*not an IANA time zone"),
        ("  mode: sometimes", "line 4: field 'retrain.mode'"),
        ("  scedule: x", "line 4: unknown field 'retrain.scedule'; did you mean 'schedule'"),
    ],
)
def test_a_bad_retrain_section_names_the_line_the_value_and_the_fix(
    section: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(CONFIG + "retrain:\n" + section + "\n")
