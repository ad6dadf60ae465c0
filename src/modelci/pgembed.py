"""The embedded PostgreSQL server that modelci starts and stops in its data dir.

Uses the system's PostgreSQL binaries (``initdb``, ``pg_ctl``; Debian's
``postgresql`` package). The server listens on a unix socket only, in a
directory only its owner can enter, with ``trust`` authentication: whoever can
reach the socket is the server's owner or root, so no password is needed or
stored. PostgreSQL refuses to run as root, so as root it runs as the
``postgres`` system user (else ``nobody``).

Several modelci processes share one server: each holds a shared lock on
``clients.lock`` while it uses it, and the last one to leave stops it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

from modelci.errors import StoreError

__all__ = ["EmbeddedPostgres", "find_binaries"]

_SOCKET_LIMIT = 100  # sun_path is 108 bytes, with room for "/.s.PGSQL.5432"
_DATABASE = "modelci"
_USER = "modelci"
# Where Debian installs each PostgreSQL version's programs.
_VERSIONS_ROOT = Path("/usr/lib/postgresql")


def find_binaries() -> Path:
    """The directory holding initdb and pg_ctl."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    versions = sorted(
        _VERSIONS_ROOT.glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    candidates.extend(reversed(versions))
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    raise StoreError(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed",
        hint="install PostgreSQL (apt-get install postgresql, or run scripts/setup), or set "
        "MODELCI_DATABASE_URL to an existing server",
    )


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise StoreError(
        "running as root, and there is no 'postgres' or 'nobody' user to run PostgreSQL as",
        hint="apt-get install postgresql creates the postgres user",
    )


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``directory``, started on demand."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        socket_dir = self.directory / "run"
        if len(str(socket_dir)) > _SOCKET_LIMIT:
            digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:12]
            socket_dir = Path(f"/tmp/modelci-pg-{digest}")
        self.socket_dir = socket_dir
        self._client_lock: IO[bytes] | None = None
        self._user = _server_user()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{_USER}@/{_DATABASE}?host={self.socket_dir}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix: list[str] = []
        if self._user is not None:
            prefix = [
                "setpriv",
                f"--reuid={self._user.pw_uid}",
                f"--regid={self._user.pw_gid}",
                "--init-groups",
                "--",
            ]
        done = subprocess.run(
            [*prefix, *args],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            cwd="/",
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LC_ALL": "C",
                "HOME": self._user.pw_dir if self._user else os.environ.get("HOME", "/"),
            },
        )
        if check and done.returncode != 0:
            raise StoreError(
                f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-2000:]}"
                f"{self._log_tail()}",
                hint=f"see {self.log}; remove {self.directory} to start afresh (this deletes "
                "the stored runs), or set MODELCI_DATABASE_URL",
            )
        return done

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-10:]
        except OSError:
            return ""
        return "\nserver log:\n  " + "\n  ".join(lines) if lines else ""

    def _own(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _initdb(self, bin_dir: Path) -> None:
        self._own(self.directory, 0o711)
        self._own(self.data, 0o700)
        self._run(
            str(bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            _USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# modelci: a private server on a unix socket\n"
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "unix_socket_permissions = 0700\n"
                "shared_buffers = 32MB\nmax_connections = 100\n"
            )

    def is_running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        return (
            self._run(
                str(find_binaries() / "pg_ctl"), "status", "-D", str(self.data), check=False
            ).returncode
            == 0
        )

    def start(self) -> str:
        """Start the server unless it runs, create the database, return its URL."""
        bin_dir = find_binaries()
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "start.lock", "a+b") as start_lock:
            fcntl.flock(start_lock, fcntl.LOCK_EX)
            if not (self.data / "PG_VERSION").exists():
                shutil.rmtree(self.data, ignore_errors=True)
                self._initdb(bin_dir)
            self._client_lock = open(self.directory / "clients.lock", "a+b")  # noqa: SIM115
            fcntl.flock(self._client_lock, fcntl.LOCK_SH)
            if not self.is_running():
                self._own(self.socket_dir, 0o700)
                if not self.log.exists():
                    self.log.touch()
                if self._user is not None:
                    os.chown(self.log, self._user.pw_uid, self._user.pw_gid)
                self._run(
                    str(bin_dir / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    f"-c unix_socket_directories={self.socket_dir}",
                )
            self._ensure_database()
        return self.url

    def _ensure_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(
                    host=str(self.socket_dir), user=_USER, dbname="postgres", autocommit=True
                ) as conn:
                    found = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (_DATABASE,)
                    ).fetchone()
                    if not found:
                        conn.execute(f'CREATE DATABASE "{_DATABASE}"')
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"cannot connect to the embedded PostgreSQL: {exc}", hint=f"see {self.log}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Leave the server; stop it when no other modelci process uses it."""
        if self._client_lock is None:
            return
        with open(self.directory / "start.lock", "a+b") as start_lock:
            fcntl.flock(start_lock, fcntl.LOCK_EX)
            fcntl.flock(self._client_lock, fcntl.LOCK_UN)
            try:
                fcntl.flock(self._client_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another process still uses the server
            else:
                self._run(
                    str(find_binaries() / "pg_ctl"),
                    "stop",
                    "-m",
                    "fast",
                    "-w",
                    "-D",
                    str(self.data),
                    check=False,
                )
            finally:
                self._client_lock.close()
                self._client_lock = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
