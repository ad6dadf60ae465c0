"""The embedded PostgreSQL server: one real cluster, initialised once for the module."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest

from modelci.errors import StoreError
from modelci.settings import Settings
from modelci.store import pgembed
from modelci.store.db import open_database
from modelci.store.pgembed import EmbeddedPostgres

pytestmark = pytest.mark.postgres

try:
    pgembed.find_binaries()
except StoreError:
    pytest.skip("PostgreSQL's server programs are not installed", allow_module_level=True)

AS_ROOT = os.geteuid() == 0


def conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def scratch(prefix: str) -> Path:
    # Under /var/tmp: pytest's tmp_path lives under a 0700 directory the server's
    # account (as root) could not enter.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o711)
    return path


class FirstStart(NamedTuple):
    data_dir: Path
    urls: list[str]
    errors: list[str]
    running_while_used: bool
    running_after: bool


_RACER = """\
import sys
from pathlib import Path
from typing import NamedTuple
import psycopg
from modelci.store.pgembed import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
url = server.start()
with psycopg.connect(url.replace("+psycopg", "")) as conn:
    conn.execute("SELECT 1")
print(url, flush=True)
sys.stdin.read()
server.stop()
"""


@pytest.fixture(scope="module")
def first_start() -> Iterator[FirstStart]:
    """The module's cluster, created by two processes starting it at the same time."""
    path = scratch("modelci-pgembed-")
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(path / "postgres")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    urls = [racer.stdout.readline().strip() for racer in racers if racer.stdout]
    running_while_used = EmbeddedPostgres(path / "postgres").is_running()
    errors = [racer.communicate("", timeout=60)[1] for racer in racers]
    errors = [e for racer, e in zip(racers, errors, strict=True) if racer.returncode != 0]
    running_after = EmbeddedPostgres(path / "postgres").is_running()
    yield FirstStart(path, urls, errors, running_while_used, running_after)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def data_dir(first_start: FirstStart) -> Path:
    """A modelci data dir whose postgres/ holds a cluster, stopped between tests."""
    if first_start.errors or first_start.running_after:
        pytest.fail("could not create the test cluster", pytrace=False)
    return first_start.data_dir


@pytest.fixture
def cluster(data_dir: Path) -> Iterator[Path]:
    directory = data_dir / "postgres"
    yield directory
    assert not EmbeddedPostgres(directory).is_running(), "a test left the server running"


def test_start_is_idempotent_and_the_last_client_stops_it(cluster: Path) -> None:
    first = EmbeddedPostgres(cluster)
    url = first.start()
    assert first.start() == url  # again on the same instance: nothing to do
    with psycopg.connect(conninfo(url)) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "modelci",
            "modelci",
        )
    second = EmbeddedPostgres(cluster)
    assert second.start() == url
    first.stop()
    first.stop()  # leaving twice is harmless
    assert second.is_running()  # still used by the second client
    second.stop()
    assert not second.is_running()


def test_the_server_listens_on_a_private_socket_only(cluster: Path) -> None:
    with EmbeddedPostgres(cluster) as server, psycopg.connect(conninfo(server.url)) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW unix_socket_directories").fetchone() == (str(server.socket_dir),)
        assert conn.execute("SHOW shared_buffers").fetchone() == ("32MB",)
        assert server.socket_dir == cluster / "run"
        assert server.socket_dir.stat().st_mode & 0o077 == 0


@pytest.mark.skipif(not AS_ROOT, reason="only root must switch accounts")
def test_as_root_the_server_runs_unprivileged_and_only_root_may_connect(cluster: Path) -> None:
    with EmbeddedPostgres(cluster) as server:
        pid = int((cluster / "data" / "postmaster.pid").read_text().split()[0])
        owner = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid)
        assert owner.pw_uid != 0
        assert server.socket_dir.stat().st_uid == owner.pw_uid
        # Peer authentication: the server's own account is refused as well.
        psql = pgembed.find_binaries() / "psql"
        if not psql.exists():
            pytest.skip("psql is not installed")
        done = subprocess.run(
            [
                *("setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}"),
                *("--clear-groups", str(psql), "-w", conninfo(server.url), "-c", "SELECT 1"),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        assert done.returncode != 0
        assert "Peer authentication failed" in done.stderr, done.stderr


def test_a_failed_start_shows_the_server_log(cluster: Path) -> None:
    conf = cluster / "data" / "postgresql.conf"
    original = conf.read_text()
    conf.write_text(original + "\nshared_buffers = 'plenty'\n")
    try:
        with pytest.raises(StoreError) as info:
            EmbeddedPostgres(cluster).start()
    finally:
        conf.write_text(original)
    assert "shared_buffers" in str(info.value)
    assert "server log" in str(info.value)
    assert not (cluster / "data" / "postmaster.pid").exists()


def test_a_stale_pid_file_from_a_restart_is_ignored(cluster: Path) -> None:
    # After a container restart the recorded pid can belong to another process.
    (cluster / "data" / "postmaster.pid").write_text(f"{os.getpid()}\n{cluster}/data\n")
    server = EmbeddedPostgres(cluster)
    assert not server.is_running()
    with server, psycopg.connect(conninfo(server.url)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_long_directory_puts_the_socket_under_tmp(cluster: Path) -> None:
    deep = cluster.parent / ("d" * 60) / ("e" * 60)
    deep.parent.mkdir()
    cluster.rename(deep)  # clusters are relocatable; the socket dir is set at each start
    try:
        server = EmbeddedPostgres(deep)
        assert str(server.socket_dir).startswith("/tmp/modelci-pg-")
        with server, psycopg.connect(conninfo(server.url)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert server.socket_dir.stat().st_mode & 0o077 == 0
        shutil.rmtree(server.socket_dir)
    finally:
        deep.rename(cluster)
        shutil.rmtree(deep.parent)


def test_open_database_starts_the_embedded_server_and_close_stops_it(data_dir: Path) -> None:
    database = open_database(Settings(data_dir=data_dir))
    assert database.is_postgresql
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM runs").scalar() == 0
    database.close()
    assert not EmbeddedPostgres(data_dir / "postgres").is_running()


def test_two_processes_creating_a_cluster_at_once_share_one_server(
    first_start: FirstStart,
) -> None:
    assert first_start.errors == []
    assert len(first_start.urls) == 2 and first_start.urls[0] == first_start.urls[1]
    assert first_start.running_while_used
    assert not first_start.running_after  # the last one out stopped it


def test_missing_binaries_say_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pgembed.shutil, "which", lambda name: None)
    monkeypatch.setattr(pgembed, "_VERSIONS_ROOT", tmp_path)
    with pytest.raises(StoreError, match=r"apt-get install postgresql\) or set MODELCI_DATA"):
        EmbeddedPostgres(tmp_path / "postgres").start()
    assert not (tmp_path / "postgres" / "data").exists()


def test_binaries_prefer_the_cluster_version_then_the_highest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for version in ("9", "15", "16", "notes"):
        (tmp_path / version / "bin").mkdir(parents=True)
        for name in ("initdb", "postgres"):
            (tmp_path / version / "bin" / name).write_text("")
            (tmp_path / version / "bin" / name).chmod(0o755)
    monkeypatch.setattr(pgembed.shutil, "which", lambda name: None)
    monkeypatch.setattr(pgembed, "_VERSIONS_ROOT", tmp_path)
    assert pgembed.find_binaries() == tmp_path / "16" / "bin"
    assert pgembed.find_binaries("15") == tmp_path / "15" / "bin"
