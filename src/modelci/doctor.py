"""``modelci doctor``: check the settings, the key and the machine, and say what is missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from modelci.errors import ModelCIError
from modelci.settings import Settings

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str


def _credentials(settings: Settings) -> Check:
    from modelci.server import github_client

    try:
        client = github_client(settings)
    except ModelCIError as exc:
        return Check("GitHub credentials", False, str(exc))
    try:
        if client.auth.is_app:
            from modelci.github import AppAuth

            assert isinstance(client.auth, AppAuth)
            client.auth.jwt()  # proves the private key parses and signs
            return Check(
                "GitHub credentials",
                True,
                f"GitHub App {settings.github_app_id}; the private key signs JWTs",
            )
        return Check(
            "GitHub credentials",
            True,
            "a plain token (results go to commit statuses unless it may create checks)",
        )
    except Exception as exc:  # a malformed key raises from the crypto library
        return Check(
            "GitHub credentials",
            False,
            f"the private key cannot sign: {exc}. Download a new key from the App's "
            "settings page and point MODELCI_GITHUB_PRIVATE_KEY_PATH at it",
        )
    finally:
        client.close()


def _api(settings: Settings) -> Check:
    from modelci.server import github_client

    try:
        client = github_client(settings)
        try:
            login = client.identity()
        finally:
            client.close()
    except ModelCIError as exc:
        return Check("GitHub API", False, f"{settings.github_api_url}: {exc}")
    except Exception as exc:  # network errors from httpx
        return Check(
            "GitHub API",
            False,
            f"{settings.github_api_url} is not reachable ({exc}); check "
            "MODELCI_GITHUB_API_URL and the network, or use `serve --poll` later",
        )
    return Check("GitHub API", True, f"{settings.github_api_url} answers; acting as {login}")


def _webhook_secret(settings: Settings) -> Check:
    try:
        secret = settings.read_webhook_secret()
    except ModelCIError as exc:
        return Check("webhook secret", False, str(exc))
    if not secret:
        return Check(
            "webhook secret",
            False,
            "not set: put the secret you entered in the App's webhook settings in a "
            "file and set MODELCI_GITHUB_WEBHOOK_SECRET_PATH",
        )
    if len(secret) < 16:
        return Check(
            "webhook secret",
            False,
            "shorter than 16 characters: use a random one "
            "(python -c 'import secrets; print(secrets.token_hex(32))')",
        )
    return Check("webhook secret", True, "set")


def _sandbox(settings: Settings) -> Check:
    from modelci.sandbox import make_sandbox

    try:
        make_sandbox(uid_base=settings.sandbox_uid_base)
    except ModelCIError as exc:
        return Check("sandbox", False, str(exc))
    return Check("sandbox", True, "bubblewrap works")


def _tools(settings: Settings) -> Check:
    missing = [t for t in ("git", "setpriv", "prlimit") if shutil.which(t) is None]
    if not os.access(settings.python, os.X_OK):
        missing.append(f"{settings.python} (MODELCI_PYTHON)")
    if missing:
        return Check(
            "tools", False, "missing: " + ", ".join(missing) + " (scripts/setup installs them)"
        )
    return Check("tools", True, "git, setpriv, prlimit and the environments' Python are present")


def _database(settings: Settings) -> Check:
    if settings.database_url:
        return Check("database", True, "external database (MODELCI_DATABASE_URL)")
    from modelci.pgembed import find_binaries

    try:
        find_binaries()
    except ModelCIError as exc:
        return Check("database", False, str(exc))
    return Check("database", True, f"embedded PostgreSQL in {settings.postgres_dir}")


def run_checks(settings: Settings, *, online: bool = True) -> list[Check]:
    checks: list[Callable[[Settings], Check]] = [
        _webhook_secret,
        _credentials,
        _sandbox,
        _tools,
        _database,
    ]
    if online:
        checks.append(_api)
    return [check(settings) for check in checks]
