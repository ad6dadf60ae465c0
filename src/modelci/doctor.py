"""``modelci doctor``: check the settings, the key and the machine, and say what is missing.

Each check names the setting at fault and how to fix it. No check prints a
secret: not the webhook secret, not the token, not a byte of the private key
(the key's parse errors are reported without the library's detail, which
could quote it).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelci.errors import ModelCIError
from modelci.github import AppAuth, GitHubClient, GitHubError, make_auth
from modelci.settings import Settings

__all__ = ["Check", "run_checks"]

GITHUB = "GitHub"
CREDENTIALS = "GitHub credentials"
API = "GitHub API"
CONTAINER = "container"
WEBHOOK_SECRET = "webhook secret"  # noqa: S105  (a check name, not a secret)
# A doctor answers within seconds: no rate-limit waits, no long timeouts.
API_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    """One finding. ``warning`` marks a check that passes but should be fixed."""

    name: str
    ok: bool
    message: str
    warning: bool = False
    note: bool = False  # neither a pass nor a failure: something not set up, and fine so


def _loose_mode(path: Path, variable: str) -> str | None:
    """Why ``path`` is too open for a secret, or None when only its owner can read it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None  # reading it already failed, with its own message
    if mode & 0o077:
        return (
            f"{path} ({variable}) has mode {mode:04o}: other users of this machine can read "
            f"it; run `chmod 600 {path}`"
        )
    return None


def _webhook_secret(settings: Settings) -> Check:
    try:
        secret = settings.read_webhook_secret()
    except ModelCIError as exc:
        return Check(WEBHOOK_SECRET, False, str(exc))
    path = settings.github_webhook_secret_path
    if secret is None:
        return Check(
            WEBHOOK_SECRET,
            False,
            "not set: `modelci serve` refuses deliveries without it. Put the secret you "
            "entered in the App's webhook settings in a file (mode 0600) and set "
            "MODELCI_GITHUB_WEBHOOK_SECRET_PATH to it, or set MODELCI_GITHUB_WEBHOOK_SECRET",
        )
    if not secret:
        where = f"the file {path}" if settings.github_webhook_secret is None else "it"
        return Check(
            WEBHOOK_SECRET,
            False,
            f"empty: {where} holds no secret. Write the App's webhook secret there",
        )
    if len(secret) < 16:
        return Check(
            WEBHOOK_SECRET,
            False,
            "shorter than 16 characters: use a random one "
            "(python3 -c 'import secrets; print(secrets.token_hex(32))') in GitHub and here",
        )
    source = "MODELCI_GITHUB_WEBHOOK_SECRET" if path is None else str(path)
    if settings.github_webhook_secret is None and path is not None:
        loose = _loose_mode(path, "MODELCI_GITHUB_WEBHOOK_SECRET_PATH")
        if loose:
            return Check(WEBHOOK_SECRET, True, f"set, but {loose}", warning=True)
    return Check(WEBHOOK_SECRET, True, f"set ({source})")


def _app_settings_problem(settings: Settings) -> str | None:
    has_key = settings.github_private_key is not None or settings.github_private_key_path
    if settings.github_app_id and not has_key:
        return (
            f"MODELCI_GITHUB_APP_ID is {settings.github_app_id} but no private key is set. "
            "How to fix: generate a private key on the App's settings page, save the .pem "
            "file with mode 0600 and set MODELCI_GITHUB_PRIVATE_KEY_PATH to it"
        )
    if has_key and not settings.github_app_id:
        return (
            "a private key is set but MODELCI_GITHUB_APP_ID is not. How to fix: set "
            "MODELCI_GITHUB_APP_ID to the 'App ID' shown on the App's settings page"
        )
    return None


def _credentials(settings: Settings) -> Check:
    problem = _app_settings_problem(settings)
    if problem:
        return Check(CREDENTIALS, False, problem)
    try:
        auth = make_auth(
            app_id=settings.github_app_id,
            private_key_pem=settings.read_private_key(),
            token=settings.github_token.get_secret_value() if settings.github_token else None,
        )
    except ModelCIError as exc:
        return Check(CREDENTIALS, False, str(exc))
    if isinstance(auth, AppAuth):
        try:
            auth.jwt()
        except Exception:  # the crypto library's errors could quote key material
            return Check(
                CREDENTIALS,
                False,
                "the private key parses but cannot sign a JWT. How to fix: generate a new "
                "key on the App's settings page and point MODELCI_GITHUB_PRIVATE_KEY_PATH at it",
            )
        message = f"GitHub App {settings.github_app_id}; the private key signs JWTs"
        if settings.github_token is not None:
            message += " (MODELCI_GITHUB_TOKEN is ignored while an App is configured)"
        path = settings.github_private_key_path
        if settings.github_private_key is None and path is not None:
            loose = _loose_mode(path, "MODELCI_GITHUB_PRIVATE_KEY_PATH")
            if loose:
                return Check(CREDENTIALS, True, f"{message}, but {loose}", warning=True)
        return Check(CREDENTIALS, True, message)
    return Check(
        CREDENTIALS,
        True,
        "a plain token (MODELCI_GITHUB_TOKEN): results go to commit statuses, since only a "
        "GitHub App may create check runs",
    )


def _api(settings: Settings) -> Check:
    url = settings.github_api_url
    try:
        auth = make_auth(
            app_id=settings.github_app_id,
            private_key_pem=settings.read_private_key(),
            token=settings.github_token.get_secret_value() if settings.github_token else None,
        )
    except ModelCIError:
        return Check(API, False, "not tried: fix the GitHub credentials first")
    is_app = isinstance(auth, AppAuth)
    try:
        with GitHubClient(url, auth, max_retries=0, max_wait_s=0, timeout_s=API_TIMEOUT_S) as gh:
            login = gh.identity()
    except GitHubError as exc:
        if exc.status == 401 and is_app:
            return Check(
                API,
                False,
                f"{url} refused the App's JWT (401: {exc.github_message or 'Bad credentials'}). "
                f"How to fix: check that MODELCI_GITHUB_APP_ID ({settings.github_app_id}) is "
                "the App the private key was generated for (download a new key from that "
                "App's settings page if unsure), and that this machine's clock is right",
            )
        if exc.status == 401:
            return Check(
                API,
                False,
                f"{url} refused MODELCI_GITHUB_TOKEN (401: {exc.github_message or 'no detail'})."
                " How to fix: the token is wrong, expired or revoked; create a new one",
            )
        if exc.status is None:
            return Check(
                API,
                False,
                f"{url} is not reachable ({exc.message}). How to fix: check "
                "MODELCI_GITHUB_API_URL (https://HOST/api/v3 for GitHub Enterprise Server) "
                "and this machine's network",
            )
        return Check(API, False, f"{url}: {exc}")
    who = f"acting as {login}" if login else "it does not say which login modelci acts as"
    return Check(API, True, f"{url} accepts the credentials; {who}")


def _sandbox(settings: Settings) -> Check:
    from modelci.runner.cgroups import describe_cgroups
    from modelci.runner.container import container_engine
    from modelci.runner.sandbox import make_sandbox

    try:
        make_sandbox(uid_base=settings.sandbox_uid_base)
    except ModelCIError as exc:
        if container_engine() is not None and exc.hint:
            return Check("sandbox", False, f"{exc.message} (the container check says why)")
        return Check("sandbox", False, str(exc))
    return Check("sandbox", True, f"bubblewrap works; memory and processes: {describe_cgroups()}")


def _container(settings: Settings) -> Check | None:
    """Inside a container: the rights the sandbox needs, and where the database is.
    None outside one."""
    from modelci.runner.container import container_engine
    from modelci.runner.sandbox import make_sandbox

    engine = container_engine()
    if engine is None:
        return None
    try:
        make_sandbox(uid_base=settings.sandbox_uid_base)  # the probe is cached: no second run
    except ModelCIError as exc:
        return Check(CONTAINER, False, exc.hint or exc.message)
    if not settings.database_url:
        return Check(
            CONTAINER,
            False,
            f"inside {engine} with no MODELCI_DATABASE_URL: modelci's image has no PostgreSQL "
            "server to embed. How to fix: set MODELCI_DATABASE_URL to a PostgreSQL service "
            "(compose.yaml's db)",
        )
    return Check(
        CONTAINER, True, f"inside {engine}: the sandbox has the rights it needs (namespaces, /proc)"
    )


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
    """Connect to the database: a URL that parses is not a server that answers."""
    from modelci.store.db import masked_url, open_database

    if settings.database_url:
        where = f"external database {masked_url(settings.database_url)} (MODELCI_DATABASE_URL)"
    else:
        where = f"embedded PostgreSQL in {settings.postgres_dir}"
    try:
        database = open_database(settings, migrate=False)
    except ModelCIError as exc:
        return Check("database", False, str(exc))
    try:
        with database.engine.connect():
            pass
    except Exception as exc:  # the driver's error, through sqlalchemy: report its first line
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return Check(
            "database",
            False,
            f"cannot connect to the {where}: {reason[0] if reason else type(exc).__name__}. "
            "How to fix: check the URL's host, port, credentials and database name, and that "
            "the server is running; or unset MODELCI_DATABASE_URL to use the embedded PostgreSQL",
        )
    finally:
        database.close()
    return Check("database", True, f"{where}: connected")


def _github_configured(settings: Settings) -> bool:
    return any(
        value is not None
        for value in (
            settings.github_app_id,
            settings.github_private_key,
            settings.github_private_key_path,
            settings.github_token,
            settings.github_webhook_secret,
            settings.github_webhook_secret_path,
        )
    )


def run_checks(settings: Settings, *, online: bool = True) -> list[Check]:
    """Every check, in the order a new operator fixes them; ``online`` also calls GitHub.

    With no GitHub setting at all, GitHub is a note, not a failure: evaluating,
    delivering and serving from the command line need none.
    """
    github = _github_configured(settings)
    checks: list[Callable[[Settings], Check]] = [
        *((_webhook_secret, _credentials) if github else ()),
        _sandbox,
        _tools,
        _database,
    ]
    results = [check(settings) for check in checks]
    container = _container(settings)
    if container is not None:
        results.insert(results.index(next(c for c in results if c.name == "sandbox")), container)
    if not github:
        results.insert(
            0,
            Check(
                GITHUB,
                True,
                "not configured (CLI evaluation and serving work). To comment on pull "
                "requests, create a GitHub App and set MODELCI_GITHUB_APP_ID, "
                "MODELCI_GITHUB_PRIVATE_KEY_PATH and MODELCI_GITHUB_WEBHOOK_SECRET_PATH (or "
                "MODELCI_GITHUB_TOKEN): see 'Running the GitHub App' in the README",
                note=True,
            ),
        )
    elif online:
        credentials = next(c for c in results if c.name == CREDENTIALS)
        if credentials.ok:
            results.append(_api(settings))
        else:
            results.append(Check(API, False, "not tried: fix the GitHub credentials first"))
    return results
