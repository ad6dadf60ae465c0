"""What the server allows and holds for a repository's DVC remotes.

One TOML file on the server (``<data dir>/dvc-remotes.toml``, or the file
``MODELCI_DVC_REMOTES_FILE`` names) says, per repository, which remote URLs a
fetch may use (prefixes), the caps, and per remote name the credentials and
server-side options (an S3-compatible endpoint, a region). Secrets are given
inline or, better, by the name of an environment variable of the modelci
process (``*_env``). Nothing here is ever read from a repository, so a pull
request can neither add a credential nor point a remote at another address::

    [defaults]
    max_fetch_mb = 10240
    fetch_timeout = 1800            # seconds

    [repositories."acme/churn"]     # owner/name, or the path/URL given to modelci
    allowed_urls = ["s3://acme-data/churn", "/srv/dvc/churn"]

    [repositories."acme/churn".remotes.storage]     # the remote's name in .dvc/config
    access_key_id_env = "CHURN_AWS_ACCESS_KEY_ID"
    secret_access_key_env = "CHURN_AWS_SECRET_ACCESS_KEY"
    endpoint_url = "http://minio.internal:9000"     # S3-compatible services only
    region = "eu-west-1"

    [repositories."acme/churn".remotes.gdrive]      # Google Drive: a service account
    service_account_json_path = "/etc/modelci/churn-drive.json"   # or its JSON itself:
    # service_account_json_env = "CHURN_DRIVE_SERVICE_ACCOUNT"
    service_account_user_email = "data@acme.com"   # only with domain-wide delegation

The config modelci writes for DVC from these (``remote_section``) holds the
secrets; it lives only in the fetch sandbox's private /tmp. A Google Drive
service account's JSON goes to DVC as ``GDRIVE_CREDENTIALS_DATA`` in that
sandbox's environment, with ``gdrive_use_service_account = true``: the key file
itself is never bound into the sandbox.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelci.errors import ConfigError, DataFetchError

__all__ = [
    "REMOTES_SETTING",
    "RemoteCredentials",
    "RepositoryData",
    "check_url",
    "dvc_value",
    "load_remotes",
    "remote_section",
]

REMOTES_SETTING = "MODELCI_DVC_REMOTES_FILE"
DEFAULT_MAX_FETCH_MB = 10 * 1024
DEFAULT_FETCH_TIMEOUT_S = 1800.0

# Schemes whose remotes need something from the server (credentials or at least
# an entry saying the remote is meant to be used without them).
_CREDENTIAL_KEYS = {
    "access_key_id",
    "secret_access_key",
    "session_token",
    "service_account_json",
    "service_account_json_path",
}
_OPTION_KEYS = {"endpoint_url", "region", "service_account_user_email"}
# The server's keys → DVC's remote options (S3 and S3-compatible services).
_DVC_OPTIONS = {
    "endpoint_url": "endpointurl",
    "region": "region",
    "access_key_id": "access_key_id",
    "secret_access_key": "secret_access_key",
    "session_token": "session_token",
}
_KNOWN_SCHEMES = {"s3", "gs", "gdrive", "azure", "http", "https", "ssh", "webdav", "webdavs"}


@dataclass(frozen=True)
class RemoteCredentials:
    """One remote's server-side settings, secrets resolved."""

    name: str
    values: Mapping[str, str] = field(repr=False)  # access_key_id, endpoint_url, ...

    def get(self, key: str) -> str | None:
        return self.values.get(key)


@dataclass(frozen=True)
class RepositoryData:
    """What the server allows one repository's DVC fetches to do."""

    key: str  # the entry's name in the file, for messages
    source: str  # the file, for messages
    allowed_urls: tuple[str, ...]
    remotes: Mapping[str, RemoteCredentials]
    max_fetch_mb: int
    fetch_timeout_s: float


def _table(value: Any, where: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {where} must be a table", hint="see README, Data in DVC")
    return value


def _resolve_secret(entry: dict[str, Any], key: str, where: str, source: str) -> str | None:
    if key in entry and f"{key}_env" in entry:
        raise ConfigError(
            f"{source}: {where} sets both {key} and {key}_env", hint="keep one of them"
        )
    if f"{key}_env" in entry:
        variable = str(entry[f"{key}_env"])
        value = os.environ.get(variable)
        if not value:
            raise DataFetchError(
                f"{where} takes {key} from the environment variable {variable}, which is not "
                "set in modelci's environment",
                hint=f"set {variable} where `modelci serve`/`worker` starts, or set {key} in "
                f"{source}",
            )
        return value
    value = entry.get(key)
    return None if value is None else str(value)


def _remote(name: str, entry: dict[str, Any], where: str, source: str) -> RemoteCredentials:
    known = _CREDENTIAL_KEYS | _OPTION_KEYS
    for key in entry:
        if key.removesuffix("_env") not in known:
            raise ConfigError(
                f"{source}: {where} has an unknown key {key!r}",
                hint=f"use {', '.join(sorted(known))} (secrets also as <key>_env)",
            )
    values = {}
    for key in sorted(known):
        value = _resolve_secret(entry, key, where, source)
        if value is not None:
            values[key] = value
    if "service_account_json" in values and "service_account_json_path" in values:
        raise ConfigError(
            f"{source}: {where}.remotes.{name} sets both service_account_json and "
            "service_account_json_path",
            hint="keep one: the key file's path, or its JSON (service_account_json_env)",
        )
    return RemoteCredentials(name, values)


def load_remotes(path: Path, repository: str, aliases: tuple[str, ...] = ()) -> RepositoryData:
    """The settings for ``repository`` (or one of its other names) from the file at path.

    A missing file or entry allows nothing: every fetch is then refused, naming the setting.
    """
    source = str(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        document = {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint=f"check {REMOTES_SETTING}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the file") from None
    defaults = _table(document.get("defaults", {}), "[defaults]", source)
    repositories = _table(document.get("repositories", {}), "[repositories]", source)
    key = next((name for name in (repository, *aliases) if name in repositories), repository)
    entry = _table(repositories.get(key, {}), f'[repositories."{key}"]', source)
    where = f'[repositories."{key}"]'
    urls = entry.get("allowed_urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise ConfigError(f"{source}: {where} allowed_urls must be a list of URL prefixes")
    remotes = {
        name: _remote(name, _table(value, f"{where}.remotes.{name}", source), where, source)
        for name, value in _table(entry.get("remotes", {}), f"{where}.remotes", source).items()
    }
    return RepositoryData(
        key=key,
        source=source,
        allowed_urls=tuple(urls),
        remotes=remotes,
        max_fetch_mb=int(
            entry.get("max_fetch_mb", defaults.get("max_fetch_mb", DEFAULT_MAX_FETCH_MB))
        ),
        fetch_timeout_s=float(
            entry.get("fetch_timeout", defaults.get("fetch_timeout", DEFAULT_FETCH_TIMEOUT_S))
        ),
    )


def _is_local(url: str) -> bool:
    return "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url)


def _normal(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path}"


def check_url(url: str, data: RepositoryData, *, remote: str, config_dir: Path) -> str:
    """The remote's URL as the fetch will use it (a local path made absolute), if the
    server allows it for this repository; else DataFetchError, before any request."""
    refuse = DataFetchError(
        f"the DVC remote {remote!r} points at {url}, which this server does not allow for "
        f"{data.key}",
        hint=f'add a prefix of it to allowed_urls under [repositories."{data.key}"] in '
        f"{data.source} ({REMOTES_SETTING}) if the repository may fetch from there",
    )
    if any(ch.isspace() or ch in "\\\0" for ch in url):
        raise refuse
    if _is_local(url):
        # Relative local remotes are relative to .dvc/, as DVC reads them.
        real = Path(os.path.realpath(config_dir / url))
        for prefix in data.allowed_urls:
            if prefix.startswith("/") and real.is_relative_to(os.path.realpath(prefix)):
                return str(real)
        raise refuse
    parts = urlsplit(url)
    if (
        parts.scheme.lower() not in _KNOWN_SCHEMES
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or ".." in parts.path.split("/")
    ):
        raise refuse
    normal = _normal(url)
    for prefix in data.allowed_urls:
        if _is_local(prefix):
            continue
        base = _normal(prefix).rstrip("/")
        if normal == base or normal.startswith(base + "/"):
            return url
    raise refuse


def dvc_value(value: str, what: str) -> str:
    """value quoted for a DVC config file; DataFetchError if it cannot be."""
    if "\n" in value or "\r" in value or '"' in value:
        raise DataFetchError(
            f"{what} holds a newline or a double quote, which DVC's config cannot carry",
            hint="check the value in the server's DVC remotes file",
        )
    return f'"{value}"'


def _service_account(creds: RemoteCredentials, where: str, source: str) -> str | None:
    """A Google Drive service account's JSON key, from the file or the value given."""
    text = creds.get("service_account_json")
    if (path := creds.get("service_account_json_path")) is not None:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataFetchError(
                f"cannot read the service account file of the {where} ({path}): "
                f"{getattr(exc, 'strerror', None) or exc}",
                hint=f"check service_account_json_path in {source}; the file must be "
                "readable by modelci",
            ) from None
    if text is None:
        return None
    try:
        key = json.loads(text)
    except ValueError:
        key = None
    if not isinstance(key, dict) or key.get("type") != "service_account":
        raise DataFetchError(
            f"the service account of the {where} is not a service account's JSON key",
            hint="download a JSON key for the service account (Google Cloud console, IAM, "
            f"Service accounts, Keys) and point service_account_json_path in {source} at it",
        )
    return text


def remote_section(name: str, url: str, data: RepositoryData) -> tuple[str, dict[str, str]]:
    """The remote's section in the fetch's DVC config, and the environment variables
    DVC needs for it (a Google Drive service account's key)."""
    where = f"remote {name!r} of {data.key}"
    lines = [f"['remote \"{name}\"']", f"    url = {dvc_value(url, where + ' url')}"]
    env: dict[str, str] = {}
    creds = data.remotes.get(name)
    if creds is None:
        if not url.startswith("/"):
            raise DataFetchError(
                f"the DVC remote {name!r} ({url}) of {data.key} has no credentials on this server",
                hint=f'add a [repositories."{data.key}".remotes.{name}] table to {data.source} '
                f"({REMOTES_SETTING}): access_key_id_env and secret_access_key_env for S3, "
                "service_account_json_path (or service_account_json_env) for Google Drive "
                "(an empty table for a public remote)",
            )
        return "\n".join(lines), env
    for key, option in _DVC_OPTIONS.items():
        if (value := creds.get(key)) is not None:
            lines.append(f"    {option} = {dvc_value(value, f'{key} of the {where}')}")
    if (key_json := _service_account(creds, where, data.source)) is not None:
        # DVC's gdrive plugin reads the key's JSON from this variable when no key file
        # path is set: the file never enters the sandbox.
        env["GDRIVE_CREDENTIALS_DATA"] = key_json
        lines.append("    gdrive_use_service_account = true")
    if (email := creds.get("service_account_user_email")) is not None:
        value = dvc_value(email, f"service_account_user_email of the {where}")
        lines.append(f"    gdrive_service_account_user_email = {value}")
    return "\n".join(lines), env
