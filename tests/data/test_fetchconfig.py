"""The DVC config modelci writes for a fetch, as DVC itself reads it (no network, no sandbox).

Google Drive can't be reached from here: what is checked is that the server's
service account reaches DVC the way its gdrive plugin takes one
(``gdrive_use_service_account`` and the key's JSON in ``GDRIVE_CREDENTIALS_DATA``),
in a config DVC's own schema accepts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modelci.data.fetch import DataFetcher
from modelci.errors import ConfigError, DataFetchError
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import SandboxProcess, SandboxResult, SandboxSpec

FOLDER = "gdrive://1-2FMzxYYkkb8H0_zPXrvkncmfxXtlZZ2/dvcstore"
KEY = {
    "type": "service_account",
    "project_id": "acme-ml",
    "private_key_id": "0123abcd",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQ...\n-----END PRIVATE KEY-----\n",
    "client_email": "dvc-reader@acme-ml.iam.gserviceaccount.com",
}
DVC_FILE = (
    "outs:\n- md5: 3b4df51f8f8f3229cb4b950d4f8b9175\n  size: 4\n  hash: md5\n  path: data.csv\n"
)
TABLE = '[repositories."acme/shop".remotes.drive]\n'


class NoSandbox:
    """Fails the test if the fetch gets as far as starting DVC."""

    def run(self, spec: SandboxSpec, *, cancel: threading.Event | None = None) -> SandboxResult:
        raise AssertionError(f"the fetch ran {spec.command!r}")

    def start(self, spec: SandboxSpec) -> SandboxProcess:
        raise AssertionError("nothing should start")


def checkout(tmp_path: Path, url: str = FOLDER) -> Path:
    """A commit's files as modelci checks them out: a gdrive remote, one .dvc file."""
    workdir = tmp_path / "work"
    (workdir / ".dvc").mkdir(parents=True)
    (workdir / ".dvc" / "config").write_text(
        f"[core]\n    remote = drive\n['remote \"drive\"']\n    url = {url}\n"
    )
    (workdir / "data.csv.dvc").write_text(DVC_FILE)
    return workdir


def fetcher(tmp_path: Path, remotes: str) -> DataFetcher:
    (tmp_path / "dvc-remotes.toml").write_text(
        f'[repositories."acme/shop"]\nallowed_urls = ["{FOLDER}"]\n{remotes}'
    )
    return DataFetcher(
        sandbox=NoSandbox(),
        environments=EnvironmentManager(
            envs_dir=tmp_path / "envs", python=sys.executable, uv_bin="uv"
        ),
        cache_root=tmp_path / "dvc-cache",
        remotes_file=tmp_path / "dvc-remotes.toml",
    )


def read_by_dvc(config: str, tmp_path: Path) -> dict[str, dict[str, object]]:
    """DVC's own reading of a global config: its schema validated, values typed."""
    home = tmp_path / "home"
    (home / ".config" / "dvc").mkdir(parents=True)
    (home / ".config" / "dvc" / "config").write_text(config)
    script = (
        "import json; from dvc.config import Config; "
        "print(json.dumps(Config(validate=True)['remote'], default=str))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=home,
        env={**env, "HOME": str(home), "DVC_NO_ANALYTICS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    remotes: dict[str, dict[str, object]] = json.loads(done.stdout)
    return remotes


def test_a_service_account_file_reaches_dvc_as_its_gdrive_plugin_takes_it(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "shop-drive.json"
    key_file.write_text(json.dumps(KEY))
    remotes = (
        TABLE + f'service_account_json_path = "{key_file}"\n'
        'service_account_user_email = "data@acme.com"\n'
    )
    plan = fetcher(tmp_path, remotes).plan(checkout(tmp_path), "acme/shop", ())
    assert plan is not None

    config = plan.dvc_config(tmp_path / "dvc-cache" / "shop")

    remote = read_by_dvc(config, tmp_path)["drive"]
    assert remote == {
        **remote,  # DVC's defaults (gdrive_trash_only...)
        "url": FOLDER,
        "gdrive_use_service_account": True,
        "gdrive_service_account_user_email": "data@acme.com",
    }
    # The key goes by environment, only into the fetch's sandbox; the file path never does.
    assert json.loads(plan.env["GDRIVE_CREDENTIALS_DATA"]) == KEY
    assert str(key_file) not in config and KEY["private_key_id"] not in config


def test_a_service_account_key_can_come_from_modelcis_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DRIVE_KEY", json.dumps(KEY))
    remotes = (
        '[repositories."acme/shop".remotes.drive]\nservice_account_json_env = "SHOP_DRIVE_KEY"\n'
    )
    plan = fetcher(tmp_path, remotes).plan(checkout(tmp_path), "acme/shop", ())
    assert plan is not None

    remote = read_by_dvc(plan.dvc_config(tmp_path / "cache"), tmp_path)["drive"]

    assert remote == {**remote, "url": FOLDER, "gdrive_use_service_account": True}
    assert "gdrive_service_account_user_email" not in remote
    assert json.loads(plan.env["GDRIVE_CREDENTIALS_DATA"]) == KEY


@pytest.mark.parametrize(
    ("remotes", "error", "message"),
    [
        (
            'service_account_json_path = "/nonexistent/key.json"\n',
            DataFetchError,
            "cannot read the service account file",
        ),
        (
            'service_account_json = "{\\"type\\": \\"authorized_user\\"}"\n',
            DataFetchError,
            "JSON key",
        ),
        (
            'service_account_json = "{}"\nservice_account_json_path = "/k.json"\n',
            ConfigError,
            "sets both",
        ),
    ],
)
def test_a_service_account_that_cannot_work_is_named_before_any_request(
    tmp_path: Path, remotes: str, error: type[Exception], message: str
) -> None:
    table = TABLE + remotes
    with pytest.raises(error, match=message) as raised:
        fetcher(tmp_path, table).plan(checkout(tmp_path), "acme/shop", ())
    assert "dvc-remotes.toml" in str(raised.value)


@pytest.mark.skipif(
    importlib.util.find_spec("dvc_gdrive") is not None, reason="dvc-gdrive is installed here"
)
def test_a_gdrive_remote_without_the_plugin_is_refused_before_dvc_starts(tmp_path: Path) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(KEY))
    remotes = (
        f'[repositories."acme/shop".remotes.drive]\nservice_account_json_path = "{key_file}"\n'
    )

    with pytest.raises(DataFetchError) as raised:
        fetcher(tmp_path, remotes).fetch(
            checkout(tmp_path), repository="acme/shop", slot=0, log_path=tmp_path / "fetch.log"
        )

    assert "dvc-gdrive" in raised.value.message
    assert "pip install 'modelci[gdrive]'" in (raised.value.hint or "")
    assert not (tmp_path / "fetch.log").exists()
