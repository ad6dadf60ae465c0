"""`modelci tokens`: create (shown once), list (never the secret), revoke."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from modelci.cli import cli
from modelci.service.tokens import TOKEN_PREFIX, TokenVerifier
from modelci.settings import Settings
from modelci.store.db import open_database


def test_tokens_are_created_listed_and_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    monkeypatch.setenv("MODELCI_DATABASE_URL", url)
    monkeypatch.setenv("MODELCI_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(cli, ["tokens", "create", "ci-bot"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    listed = runner.invoke(cli, ["tokens", "list"])
    assert listed.exit_code == 0 and "ci-bot" in listed.output and "never" in listed.output
    assert token not in listed.output
    database = open_database(Settings(data_dir=tmp_path, database_url=url))
    try:
        assert TokenVerifier(database).verify(f"Bearer {token}") == "ci-bot"
        taken = runner.invoke(cli, ["tokens", "create", "ci-bot"])
        assert taken.exit_code == 2 and "exists already" in taken.output
        bad = runner.invoke(cli, ["tokens", "create", "no spaces"])
        assert bad.exit_code == 2 and "not a usable token name" in bad.output
        assert runner.invoke(cli, ["tokens", "revoke", "ci-bot"]).exit_code == 0
        gone = runner.invoke(cli, ["tokens", "revoke", "ci-bot"])
        assert gone.exit_code == 2 and "no token named 'ci-bot'" in gone.output
        with pytest.raises(Exception, match="unknown or revoked"):
            TokenVerifier(database).verify(f"Bearer {token}")
    finally:
        database.close()
