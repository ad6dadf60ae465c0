"""Settings read from MODELCI_* variables."""

from __future__ import annotations

import pytest

from modelci.settings import get_settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("octo/model", ["octo/model"]),
        ("octo/a, octo/b,", ["octo/a", "octo/b"]),
        ('["octo/a", "octo/b"]', ["octo/a", "octo/b"]),
        ("", []),
    ],
)
def test_poll_repositories_take_a_comma_list_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("MODELCI_POLL_REPOSITORIES", value)
    assert get_settings().poll_repositories == expected
