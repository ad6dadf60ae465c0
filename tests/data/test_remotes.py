"""The server's DVC remotes file: allow-list matching and credentials (no network, no DVC)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelci.data.dvcrepo import parse_dvc_config
from modelci.data.remotes import check_url, load_remotes
from modelci.errors import DataFetchError


def remotes(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dvc-remotes.toml"
    path.write_text(text)
    return path


ALLOWED = '[repositories."acme/churn"]\nallowed_urls = ["s3://acme-data/churn", "/srv/dvc/churn"]\n'


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("s3://acme-data/churn", True),
        ("s3://acme-data/churn/v2", True),
        ("S3://ACME-DATA/churn/v2", True),
        ("s3://acme-data/churn-private", False),
        ("s3://acme-data/churn/../secrets", False),
        ("s3://user@acme-data/churn", False),
        ("s3://acme-data/churn?x=1", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("/srv/dvc/churn/store", True),
        ("/srv/dvc/churnish", False),
        ("/srv/dvc/churn/../other", False),
        ("../../../../srv/dvc/churn", True),  # relative to .dvc/, resolved first
        ("../../../../etc", False),
    ],
)
def test_remote_urls_are_matched_against_the_prefixes(
    tmp_path: Path, url: str, allowed: bool
) -> None:
    data = load_remotes(remotes(tmp_path, ALLOWED), "acme/churn")
    config_dir = Path("/work/x/.dvc")
    if allowed:
        check_url(url, data, remote="storage", config_dir=config_dir)
    else:
        with pytest.raises(DataFetchError, match="allowed_urls"):
            check_url(url, data, remote="storage", config_dir=config_dir)


def test_an_unknown_repository_allows_nothing(tmp_path: Path) -> None:
    data = load_remotes(remotes(tmp_path, ALLOWED), "acme/other", ("/path/to/other",))
    with pytest.raises(DataFetchError, match=r'\[repositories\."acme/other"\]'):
        check_url("s3://acme-data/churn", data, remote="storage", config_dir=tmp_path)


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = remotes(
        tmp_path,
        ALLOWED + '[repositories."acme/churn".remotes.storage]\nsecret_access_key_env = "S"\n',
    )
    with pytest.raises(DataFetchError, match="environment variable S"):
        load_remotes(path, "acme/churn")
    monkeypatch.setenv("S", "shh")
    creds = load_remotes(path, "acme/churn").remotes["storage"]
    assert creds.get("secret_access_key") == "shh"
    assert "shh" not in repr(creds)


def test_dvc_config_remotes_are_read_as_dvc_writes_them() -> None:
    text = (
        "[core]\n    remote = storage\n"
        "['remote \"storage\"']\n    url = s3://acme-data/churn\n    endpointurl = http://x\n"
        '[remote "backup"]\n    url = /srv/dvc/churn\n'
    )
    assert parse_dvc_config(text) == (
        "storage",
        {"storage": "s3://acme-data/churn", "backup": "/srv/dvc/churn"},
    )
