"""Settings read from MODELCI_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelci.errors import ConfigError
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


def test_gpu_devices_are_globs_that_keep_only_what_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl"):
        (tmp_path / name).touch()
    monkeypatch.setenv("MODELCI_GPU_DEVICES", f"{tmp_path}/nvidia[0-9], {tmp_path}/missing")
    settings = get_settings()
    assert settings.gpu_devices == [f"{tmp_path}/nvidia[0-9]", f"{tmp_path}/missing"]
    assert settings.gpu_device_paths() == (tmp_path / "nvidia0", tmp_path / "nvidia1")


def test_gpu_devices_default_to_nvidias() -> None:
    assert get_settings().gpu_devices == ["/dev/nvidia*"]


def test_a_bad_value_names_the_variable_and_what_it_must_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELCI_GITHUB_APP_ID", "abc")
    with pytest.raises(ConfigError) as caught:
        get_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("MODELCI_GITHUB_APP_ID is 'abc', but it must be a whole number")
    assert "App ID" in message and "validation error" not in message


def test_a_bad_number_shows_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCI_GITHUB_MAX_CONCURRENCY", "four")
    with pytest.raises(ConfigError, match="MODELCI_GITHUB_MAX_CONCURRENCY is 'four', but it"):
        get_settings()


def test_every_command_reports_a_bad_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from modelci.cli import cli

    monkeypatch.setenv("MODELCI_GITHUB_APP_ID", "abc")
    for args in (["doctor", "--offline"], ["models", "list"], ["mlflow-ui"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        assert "MODELCI_GITHUB_APP_ID" in lines[0] and "whole number" in lines[0]
        assert "pydantic" not in result.output and "Traceback" not in result.output
