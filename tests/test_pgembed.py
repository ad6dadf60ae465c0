from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from modelci import pgembed
from modelci.errors import StoreError
from modelci.pgembed import EmbeddedPostgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="modelci-pgembed-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_start_is_idempotent_and_the_last_client_stops_it(directory: Path) -> None:
    first = EmbeddedPostgres(directory)
    url = first.start()
    with psycopg.connect(conninfo(url)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        owner = conn.execute("SELECT current_user").fetchone()
    assert owner == ("modelci",)
    second = EmbeddedPostgres(directory)
    assert second.start() == url
    first.stop()
    assert second.is_running()  # still in use by the second client
    second.stop()
    assert not second.is_running()
    with EmbeddedPostgres(directory) as third:  # restarts on the existing cluster
        assert third.is_running()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must switch users")
def test_as_root_the_server_runs_unprivileged(directory: Path) -> None:
    with EmbeddedPostgres(directory):
        pid = int((directory / "data" / "postmaster.pid").read_text().split()[0])
        assert os.stat(f"/proc/{pid}").st_uid != 0
        assert (directory / "run").stat().st_mode & 0o077 == 0  # socket dir private


def test_missing_binaries_say_how_to_install(
    monkeypatch: pytest.MonkeyPatch, directory: Path
) -> None:
    monkeypatch.setattr(pgembed.shutil, "which", lambda name: None)
    monkeypatch.setattr(pgembed, "_VERSIONS_ROOT", directory)
    with pytest.raises(StoreError, match="apt-get install postgresql"):
        pgembed.find_binaries()
