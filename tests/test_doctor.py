"""``modelci doctor``: each missing or wrong setting is named with its fix; no secret is shown."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from modelci.cli import cli
from modelci.doctor import API, CREDENTIALS, GITHUB, WEBHOOK_SECRET, Check, run_checks
from modelci.settings import Settings, get_settings
from tests.github.conftest import (  # noqa: F401  (fixtures used by name)
    APP_ID,
    GitHub,
    app_key,
    github,
    standin_server,
)

SECRET = "a-webhook-secret-that-must-never-be-printed"
TOKEN = "ghp_doctor_token_never_printed"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets: the operator's own MODELCI_* must not leak in."""
    for name in list(os.environ):
        if name.startswith("MODELCI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODELCI_DATA_DIR", str(tmp_path / "data"))
    # A database that answers at once; the embedded server is checked in its own test.
    monkeypatch.setenv("MODELCI_DATABASE_URL", f"sqlite:///{tmp_path}/store.db")


def write_secret(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return write_secret(tmp_path / "webhook-secret", SECRET + "\n")


@pytest.fixture
def key_file(tmp_path: Path, github: GitHub) -> Path:  # noqa: F811
    return write_secret(tmp_path / "app.pem", github.key.private_pem)


def by_name(checks: list[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


def settings(**overrides: object) -> Settings:
    return get_settings(**overrides)


# -- credentials ----------------------------------------------------------------------


def test_no_github_settings_at_all_is_a_note_not_a_failure() -> None:
    checks = run_checks(settings(), online=True)
    note = by_name(checks, GITHUB)
    assert note.ok and note.note
    assert note.message.startswith("not configured (CLI evaluation and serving work)")
    assert "MODELCI_GITHUB_APP_ID" in note.message
    names = {c.name for c in checks}
    assert not names & {CREDENTIALS, API, WEBHOOK_SECRET}


def test_no_credentials_says_which_settings_to_set(secret_file: Path) -> None:
    checks = run_checks(settings(github_webhook_secret_path=secret_file), online=True)
    creds = by_name(checks, CREDENTIALS)
    assert not creds.ok
    assert "no GitHub credentials" in creds.message
    assert "MODELCI_GITHUB_APP_ID" in creds.message
    assert "MODELCI_GITHUB_PRIVATE_KEY_PATH" in creds.message
    assert "MODELCI_GITHUB_TOKEN" in creds.message
    api = by_name(checks, API)
    assert not api.ok and "fix the GitHub credentials first" in api.message


def test_app_id_without_key_names_the_key_setting() -> None:
    creds = by_name(run_checks(settings(github_app_id=APP_ID), online=False), CREDENTIALS)
    assert not creds.ok
    assert f"MODELCI_GITHUB_APP_ID is {APP_ID} but no private key" in creds.message
    assert "MODELCI_GITHUB_PRIVATE_KEY_PATH" in creds.message


def test_key_without_app_id_names_the_app_id_setting(key_file: Path) -> None:
    creds = by_name(
        run_checks(settings(github_private_key_path=key_file), online=False), CREDENTIALS
    )
    assert not creds.ok
    assert "MODELCI_GITHUB_APP_ID is not" in creds.message


def test_missing_key_file(tmp_path: Path) -> None:
    creds = by_name(
        run_checks(
            settings(github_app_id=APP_ID, github_private_key_path=tmp_path / "nope.pem"),
            online=False,
        ),
        CREDENTIALS,
    )
    assert not creds.ok
    assert "cannot read" in creds.message and "nope.pem" in creds.message
    assert "MODELCI_GITHUB_PRIVATE_KEY_PATH" in creds.message


def test_key_that_is_not_pem_is_named_without_quoting_it(tmp_path: Path) -> None:
    junk = (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        "Tm90QUtleVNlY3JldE1hdGVyaWFs\n"
        "-----END RSA PRIVATE KEY-----\n"
    )
    path = write_secret(tmp_path / "app.pem", junk)
    creds = by_name(
        run_checks(settings(github_app_id=APP_ID, github_private_key_path=path), online=True),
        CREDENTIALS,
    )
    assert not creds.ok
    assert "not an unencrypted PEM private key" in creds.message
    assert "Tm90QUtleVNlY3JldE1hdGVyaWFs" not in creds.message


def test_world_readable_key_passes_with_a_warning(key_file: Path) -> None:
    key_file.chmod(0o644)
    creds = by_name(
        run_checks(settings(github_app_id=APP_ID, github_private_key_path=key_file), online=False),
        CREDENTIALS,
    )
    assert creds.ok and creds.warning
    assert "0644" in creds.message and f"chmod 600 {key_file}" in creds.message


def test_private_key_file_with_mode_0600_has_no_warning(key_file: Path) -> None:
    creds = by_name(
        run_checks(settings(github_app_id=APP_ID, github_private_key_path=key_file), online=False),
        CREDENTIALS,
    )
    assert creds.ok and not creds.warning
    assert f"GitHub App {APP_ID}" in creds.message


def test_plain_token_explains_the_commit_status_fallback() -> None:
    creds = by_name(run_checks(settings(github_token=TOKEN), online=False), CREDENTIALS)
    assert creds.ok
    assert "commit statuses" in creds.message
    assert TOKEN not in creds.message


# -- against the stand-in GitHub ------------------------------------------------------


def test_valid_app_key_is_accepted_by_github(github: GitHub, key_file: Path) -> None:  # noqa: F811
    checks = run_checks(
        settings(github_api_url=github.url, github_app_id=APP_ID, github_private_key_path=key_file)
    )
    api = by_name(checks, API)
    assert api.ok, api.message
    assert f"acting as {github.state.app_slug}[bot]" in api.message
    jwt_calls = [r for r in github.state.requests if r.path == "/app"]
    assert len(jwt_calls) == 1 and jwt_calls[0].method == "GET"


def test_key_of_another_app_is_refused_clearly(github: GitHub, tmp_path: Path) -> None:  # noqa: F811
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = write_secret(tmp_path / "other.pem", pem)
    checks = run_checks(
        settings(github_api_url=github.url, github_app_id=APP_ID, github_private_key_path=path)
    )
    assert by_name(checks, CREDENTIALS).ok  # it is a fine key, just not this App's
    api = by_name(checks, API)
    assert not api.ok
    assert "refused the App's JWT (401" in api.message
    assert f"MODELCI_GITHUB_APP_ID ({APP_ID})" in api.message
    assert "clock" in api.message


def test_valid_and_revoked_tokens(github: GitHub) -> None:  # noqa: F811
    github.state.add_pat(TOKEN, login="octocat")
    api = by_name(run_checks(settings(github_api_url=github.url, github_token=TOKEN)), API)
    assert api.ok and "acting as octocat" in api.message

    wrong = by_name(
        run_checks(settings(github_api_url=github.url, github_token="ghp_revoked")), API
    )
    assert not wrong.ok
    assert "refused MODELCI_GITHUB_TOKEN (401" in wrong.message
    assert "ghp_revoked" not in wrong.message


def test_unreachable_api_names_the_url_setting() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    api = by_name(run_checks(settings(github_api_url=url, github_token=TOKEN)), API)
    assert not api.ok
    assert "not reachable" in api.message and "MODELCI_GITHUB_API_URL" in api.message


# -- the webhook secret ---------------------------------------------------------------


def test_missing_webhook_secret_names_both_settings() -> None:
    check = by_name(run_checks(settings(github_token=TOKEN), online=False), WEBHOOK_SECRET)
    assert not check.ok
    assert "MODELCI_GITHUB_WEBHOOK_SECRET_PATH" in check.message
    assert "MODELCI_GITHUB_WEBHOOK_SECRET" in check.message


def test_empty_and_short_webhook_secrets(tmp_path: Path) -> None:
    empty = write_secret(tmp_path / "empty", "\n")
    check = by_name(
        run_checks(settings(github_webhook_secret_path=empty), online=False), WEBHOOK_SECRET
    )
    assert not check.ok and "empty" in check.message and str(empty) in check.message

    short = by_name(
        run_checks(settings(github_webhook_secret="short"), online=False), WEBHOOK_SECRET
    )
    assert not short.ok and "shorter than 16" in short.message
    assert "short" not in short.message.replace("shorter", "")


def test_unreadable_webhook_secret_file(tmp_path: Path) -> None:
    check = by_name(
        run_checks(settings(github_webhook_secret_path=tmp_path / "absent"), online=False),
        WEBHOOK_SECRET,
    )
    assert not check.ok
    assert "cannot read" in check.message and "MODELCI_GITHUB_WEBHOOK_SECRET_PATH" in check.message


def test_webhook_secret_file_readable_by_others_warns(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "secret", SECRET, mode=0o640)
    check = by_name(
        run_checks(settings(github_webhook_secret_path=path), online=False), WEBHOOK_SECRET
    )
    assert check.ok and check.warning and "0640" in check.message
    assert SECRET not in check.message


# -- the command ----------------------------------------------------------------------


def test_cli_all_set_exits_0_and_prints_no_secret(
    github: GitHub,  # noqa: F811
    key_file: Path,
    secret_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    github.state.add_pat(TOKEN, login="octocat")
    monkeypatch.setenv("MODELCI_GITHUB_API_URL", github.url)
    monkeypatch.setenv("MODELCI_GITHUB_APP_ID", str(APP_ID))
    monkeypatch.setenv("MODELCI_GITHUB_PRIVATE_KEY_PATH", str(key_file))
    monkeypatch.setenv("MODELCI_GITHUB_WEBHOOK_SECRET_PATH", str(secret_file))
    monkeypatch.setenv("MODELCI_GITHUB_TOKEN", TOKEN)
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "✓ GitHub API" in result.output
    assert "MODELCI_GITHUB_TOKEN is ignored" in result.output
    key_body = github.key.private_pem.decode().splitlines()[1]
    for secret in (SECRET, TOKEN, key_body):
        assert secret not in result.output


def test_cli_offline_does_not_call_github(
    github: GitHub,  # noqa: F811
    key_file: Path,
    secret_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELCI_GITHUB_API_URL", github.url)
    monkeypatch.setenv("MODELCI_GITHUB_APP_ID", str(APP_ID))
    monkeypatch.setenv("MODELCI_GITHUB_PRIVATE_KEY_PATH", str(key_file))
    monkeypatch.setenv("MODELCI_GITHUB_WEBHOOK_SECRET_PATH", str(secret_file))
    result = CliRunner().invoke(cli, ["doctor", "--offline"])
    assert result.exit_code == 0, result.output
    assert "GitHub API" not in result.output
    assert github.state.requests == []


def test_cli_without_github_notes_it_and_exits_0() -> None:
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "- GitHub: not configured (CLI evaluation and serving work)" in result.output
    assert "✗" not in result.output


def test_cli_missing_settings_exit_2_with_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCI_GITHUB_APP_ID", str(APP_ID))
    result = CliRunner().invoke(cli, ["doctor", "--offline"])
    assert result.exit_code == 2
    assert "✗ webhook secret" in result.output
    assert "✗ GitHub credentials" in result.output
    assert "How to fix" in result.output
    assert "Traceback" not in result.output


def test_cli_loose_key_mode_is_a_warning_not_a_failure(
    key_file: Path, secret_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file.chmod(0o644)
    monkeypatch.setenv("MODELCI_GITHUB_APP_ID", str(APP_ID))
    monkeypatch.setenv("MODELCI_GITHUB_PRIVATE_KEY_PATH", str(key_file))
    monkeypatch.setenv("MODELCI_GITHUB_WEBHOOK_SECRET_PATH", str(secret_file))
    result = CliRunner().invoke(cli, ["doctor", "--offline"])
    assert result.exit_code == 0, result.output
    assert "! GitHub credentials" in result.output and "chmod 600" in result.output


# -- the database ---------------------------------------------------------------------


def test_unreachable_external_database_fails_with_the_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://modelci:pw-never-shown@127.0.0.1:{port}/modelci"
    check = by_name(run_checks(settings(database_url=url), online=False), "database")
    assert not check.ok
    assert "cannot connect" in check.message and f"127.0.0.1:{port}" in check.message
    assert "MODELCI_DATABASE_URL" in check.message and "pw-never-shown" not in check.message


def test_reachable_databases_pass(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    external = by_name(run_checks(settings(database_url=postgres_url), online=False), "database")
    assert external.ok and "connected" in external.message, external.message
    monkeypatch.delenv("MODELCI_DATABASE_URL")
    data = Path(tempfile.mkdtemp(prefix="modelci-doctor-", dir="/var/tmp"))
    data.chmod(0o711)  # the postgres user enters it
    try:
        embedded = by_name(run_checks(settings(data_dir=data), online=False), "database")
        assert embedded.ok and "embedded PostgreSQL" in embedded.message, embedded.message
        assert not (data / "postgres" / "data" / "postmaster.pid").exists()  # stopped again
    finally:
        shutil.rmtree(data, ignore_errors=True)
