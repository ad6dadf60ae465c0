"""The monitoring: section of modelci.yaml: defaults, errors that name the line, and
that it changes nothing a run's result depends on."""

from __future__ import annotations

import datetime as dt

import pytest

from modelci.errors import ConfigError
from modelci.runner.config import parse_config

CONFIG = "train: python train.py\nmetrics: metrics.json\n"


def test_the_section_is_read_with_defaults() -> None:
    monitoring = parse_config(CONFIG).monitoring
    assert (monitoring.enabled, monitoring.window, monitoring.alerts) == (True, 1000, True)
    assert monitoring.cooldown_span() == dt.timedelta(days=7)
    set_ = parse_config(
        CONFIG
        + "monitoring:\n  reference: data/train.csv\n  window: 1h\n  retrain_on_drift: true\n"
        + "  cooldown: 12h\n  drift_share: 0.3\n  columns:\n    age: {test: ks}\n"
    ).monitoring
    assert set_.window_size().span == dt.timedelta(hours=1)
    assert set_.cooldown_span() == dt.timedelta(hours=12)
    assert set_.column("age").test == "ks" and set_.drift_share == 0.3
    assert set_.settings()["reference"] == "data/train.csv"


def test_the_section_does_not_change_the_configs_digest() -> None:
    with_it = parse_config(CONFIG + "monitoring:\n  window: 500\n  alerts: false\n")
    assert with_it.digest() == parse_config(CONFIG).digest()


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("  window: 5", "line 4: field 'monitoring.window': .*too few"),
        ("  window: hourly", "line 4: field 'monitoring.window': .*neither a row count"),
        ("  cooldown: a week", "line 4: field 'monitoring.cooldown': .*not a span of time"),
        ("  reference: /etc/passwd", "line 4: field 'monitoring.reference': .*inside the repo"),
        ("  reference: ../x.csv", "line 4: field 'monitoring.reference': .*inside the repo"),
        ("  close_after: 0", "line 4: field 'monitoring.close_after'"),
        ("  columns: {age: {test: ks, kind: categorical}}", "compares numbers"),
        ("  alert: false", "line 4: unknown field 'monitoring.alert'; did you mean 'alerts'"),
    ],
)
def test_a_bad_monitoring_section_names_the_line_and_the_fix(section: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(CONFIG + "monitoring:\n" + section + "\n")


def test_an_unknown_column_setting_is_named_with_a_guess() -> None:
    with pytest.raises(
        ConfigError, match=r"'monitoring.columns.age.treshold'; did you mean 'threshold'"
    ):
        parse_config(CONFIG + "monitoring:\n  columns:\n    age: {treshold: 0.1}\n")
