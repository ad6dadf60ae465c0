"""Whether `modelci serve` runs its GitHub loop, from the settings alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from modelci.errors import ConfigError
from modelci.service.server import GitHubOff, github_client, github_loop
from modelci.settings import Settings


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_no_github_settings_turn_the_loop_off_and_say_how_to_turn_it_on(tmp_path: Path) -> None:
    secret, off = github_loop(settings(tmp_path), poll=False)
    assert secret is None and off == "no GitHub credentials and no webhook secret"
    client = github_client(settings(tmp_path), optional=True)
    with pytest.raises(ConfigError, match="GitHub is not configured") as caught:
        GitHubOff().token(1, None)
    assert "MODELCI_GITHUB_APP_ID" in str(caught.value)
    client.close()


def test_credentials_without_a_secret_refuse_webhooks_only(tmp_path: Path) -> None:
    secret, off = github_loop(settings(tmp_path, github_token=SecretStr("ghp_x")), poll=False)
    assert secret is None and off is not None and "no webhook secret" in off
    both = settings(
        tmp_path, github_token=SecretStr("ghp_x"), github_webhook_secret=SecretStr("s" * 20)
    )
    assert github_loop(both, poll=False) == (b"s" * 20, None)


def test_half_configurations_are_refused_with_the_missing_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no GitHub credentials") as caught:
        github_loop(settings(tmp_path, github_webhook_secret=SecretStr("s" * 20)), poll=False)
    assert "MODELCI_GITHUB_TOKEN" in str(caught.value)
    with pytest.raises(ConfigError, match="--poll"):
        github_loop(settings(tmp_path), poll=True)
