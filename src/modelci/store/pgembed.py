"""The embedded PostgreSQL server that modelci starts and stops in its data dir.

Uses the system's ``initdb`` and ``postgres`` (on ``PATH`` or in Debian's
/usr/lib/postgresql/<version>/bin). The directory (``settings.postgres_dir``)
holds ``data/`` (the cluster, built in ``data.initdb/`` and then renamed, so a
half-built one never looks complete), ``run/`` (the socket), ``server.log``
(rotated at 10 MB) and two lock files: ``start.lock``, held while a process
starts or stops the server, and ``clients.lock``, on which every process using
the server holds a shared lock so that the last one to leave stops it.

Security: the server listens on a unix socket only, in a directory of mode
0700 owned by the server's account, and authenticates with ``peer``: the
kernel names the connecting account, and pg_ident.conf maps only the account
running modelci (root, or the invoking user) to the ``modelci`` role. There is
no password to leak, and other processes of the server's account (``nobody``,
when it is the fallback) are refused too. If the socket's path would pass the
107-byte limit of a socket address, the socket directory is
``/tmp/modelci-pg-<hash of the directory>`` instead, checked the same way.

PostgreSQL refuses to run as root, so as root it runs as the ``postgres``
account (else ``nobody``) through ``setpriv``, and the directory's parents must
let that account through.

The server is started directly, not with ``pg_ctl -w``, and its readiness is
read from ``postmaster.pid`` every 5 ms: pg_ctl polls every 100 ms, which
doubled a warm start and a stop.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from modelci.errors import StoreError
from modelci.settings import Settings

__all__ = ["EmbeddedPostgres", "find_binaries", "start_embedded"]

_DATABASE = "modelci"
_DATABASE_MARKER = "modelci-database-created"
_ROLE = "modelci"
# Where Debian installs each PostgreSQL version's programs.
_VERSIONS_ROOT = Path("/usr/lib/postgresql")
_PROGRAMS = ("initdb", "postgres")
# sun_path holds 108 bytes including the terminating NUL; the server adds this name.
_SOCKET_NAME = ".s.PGSQL.5432"
_SOCKET_PATH_MAX = 107
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0
_POLL_S = 0.005
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_INSTALL_HINT = (
    "install PostgreSQL (apt-get install postgresql) or set MODELCI_DATABASE_URL to an "
    "existing server"
)
_CONF = """
# modelci: a private server on a unix socket. listen_addresses and the socket
# directory are also set on the command line at every start.
listen_addresses = ''
unix_socket_permissions = 0700
shared_buffers = 32MB
max_connections = 100
timezone = 'UTC'
log_timezone = 'UTC'
"""
_HBA = """\
# modelci: unix socket only; the kernel names the connecting account (peer) and
# pg_ident.conf maps only the account that runs modelci to a role.
local all all peer map=modelci
"""


def find_binaries(version: str | None = None) -> Path:
    """The directory holding ``initdb`` and ``postgres``.

    ``version`` (an existing cluster's ``PG_VERSION``) is preferred, because a
    server refuses a cluster of another major version; then ``PATH``, then the
    highest version under /usr/lib/postgresql.
    """
    candidates = [_VERSIONS_ROOT / version / "bin"] if version else []
    # /usr/local/bin/initdb is often a symlink; initdb finds postgres beside its target.
    on_path = [shutil.which(program) for program in _PROGRAMS]
    candidates += [Path(os.path.realpath(found)).parent for found in on_path if found]
    versions = [p for p in _VERSIONS_ROOT.glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda p: int(p.parent.name), reverse=True)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in _PROGRAMS):
            return directory
    raise StoreError(
        "PostgreSQL's server programs (initdb, postgres) are not on PATH or in "
        f"{_VERSIONS_ROOT}/*/bin",
        hint=_INSTALL_HINT,
    )


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as; None means this process's own."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise StoreError(
        "running as root, and there is no 'postgres' or 'nobody' account to run PostgreSQL as",
        hint="apt-get install postgresql creates the postgres account, or set "
        "MODELCI_DATABASE_URL to an existing server",
    )


def _client_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise StoreError(
            f"this process's user id {os.geteuid()} has no name (no /etc/passwd entry), "
            "which PostgreSQL needs",
            hint="run modelci as a user with an /etc/passwd entry, or set MODELCI_DATABASE_URL",
        ) from None


def _socket_dir(directory: Path) -> Path:
    inside = directory / "run"
    if len(os.fsencode(inside / _SOCKET_NAME)) <= _SOCKET_PATH_MAX:
        return inside
    # Named by the directory, so every process using this cluster finds the same socket.
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
    return Path("/tmp") / f"modelci-pg-{digest}"


def _check_traversable(path: Path, account: pwd.struct_passwd) -> None:
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for parent in [path, *path.parents]:
        info = parent.stat()
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            raise StoreError(
                f"PostgreSQL runs as {account.pw_name!r}, which cannot enter {parent}",
                hint=f"let it through (chmod o+x {parent}), choose a data dir it can reach "
                "(MODELCI_DATA_DIR), or set MODELCI_DATABASE_URL",
            )


def _is_postmaster(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except PermissionError:  # /proc mounted with hidepid: it exists, assume it is ours
        return True
    # After a container restart the recorded pid may belong to an unrelated process.
    return state != "Z" and os.path.basename(program) in (b"postgres", b"postmaster")


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``directory``, started on demand."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self.socket_dir = _socket_dir(self.directory)
        self._account = _server_account()
        self._client_lock: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``modelci`` database over the unix socket."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql+psycopg://{_ROLE}@/{_DATABASE}?host={host}"

    def is_running(self) -> bool:
        """Whether a server runs on this cluster (started by any process)."""
        return self._postmaster_pid() is not None

    def start(self) -> str:
        """Start the server unless it runs, create the database, return its URL.

        Safe to call again and from several processes at once; each call made
        by a new instance registers one more user of the server.
        """
        if self._client_lock is not None and self.is_running():
            return self.url
        bin_dir = find_binaries(self._version())
        self._prepare_directory()
        with self._lock():
            if self._version() is None:
                self._initdb(bin_dir)
            client = self._client_lock or open(self.directory / "clients.lock", "a+b")  # noqa: SIM115
            try:
                fcntl.flock(client, fcntl.LOCK_SH)
                pid = self._postmaster_pid()
                if pid is None:
                    self._launch(bin_dir)
                    self._ensure_database()
                else:
                    # Whoever started it created the database before releasing the lock.
                    self._wait_ready(pid)
            except BaseException:
                client.close()
                self._client_lock = None
                raise
            self._client_lock = client
        return self.url

    def stop(self) -> None:
        """Leave the server; stop it when no other process uses it."""
        client, self._client_lock = self._client_lock, None
        if client is None:
            return
        try:
            with self._lock():
                fcntl.flock(client, fcntl.LOCK_UN)
                try:
                    fcntl.flock(client, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another process still uses the server
                self._shutdown()
        finally:
            client.close()
            if self._process is not None and self._process.poll() is not None:
                self._process = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the cluster -------------------------------------------------------------------

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.directory / "start.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._account is None:
            return
        # Root keeps the directory (locks, log); the server only passes through it to
        # data/ and run/, which it owns.
        if self.directory.stat().st_uid == 0:
            self.directory.chmod(0o711)
        _check_traversable(self.directory, self._account)

    def _version(self) -> str | None:
        try:
            return (self.data / "PG_VERSION").read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _ids(self) -> tuple[int, int]:
        if self._account is None:
            return os.geteuid(), os.getegid()
        return self._account.pw_uid, self._account.pw_gid

    def _private_dir(self, path: Path) -> None:
        """``path`` as a directory only the server's account may enter."""
        uid, gid = self._ids()
        with suppress(FileExistsError):
            os.mkdir(path, 0o700)
        # Opened without following links and changed through the descriptor, so a
        # link planted in /tmp cannot redirect the chown/chmod.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            fd = -1
        try:
            info = os.fstat(fd) if fd >= 0 else None
            if info is None or info.st_uid not in (uid, os.geteuid()):
                raise StoreError(
                    f"{path} is not a directory owned by this account or the server's",
                    hint=f"remove {path}; it holds only the server's socket",
                )
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o700)
        finally:
            if fd >= 0:
                os.close(fd)

    def _command(self, program: Path, *args: str) -> list[str]:
        if self._account is None:
            return [str(program), *args]
        account = self._account
        switch = ["runuser", "-u", account.pw_name, "--"]
        if shutil.which("setpriv"):
            switch = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}"]
            switch += ["--init-groups", "--"]
        return [*switch, str(program), *args]

    def _spawn(self) -> dict[str, Any]:
        home = self._account.pw_dir if self._account else os.environ.get("HOME", "/")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": home}
        return {"stdin": subprocess.DEVNULL, "cwd": "/", "env": env}

    def _initdb(self, bin_dir: Path) -> None:
        # Built aside and renamed, so an interrupted initdb never leaves a half cluster
        # that looks complete.
        staging = self.directory / "data.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        uid, gid = self._ids()
        os.chown(staging, uid, gid)
        command = self._command(
            bin_dir / "initdb",
            *("-D", str(staging), "-U", _ROLE, "--auth-local=peer", "--auth-host=reject"),
            *("--encoding=UTF8", "--locale=C", "--no-instructions"),
        )
        done = subprocess.run(command, capture_output=True, text=True, **self._spawn())
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()[-2000:]
            raise StoreError(
                f"initdb failed in {staging}:\n{output}",
                hint="fix the cause above and retry, or set MODELCI_DATABASE_URL to an existing "
                "server",
            )
        # Existing files keep their owner (the server's account) when rewritten.
        with open(staging / "postgresql.conf", "a") as conf:
            conf.write(_CONF)
        (staging / "pg_hba.conf").write_text(_HBA)
        (staging / "pg_ident.conf").write_text(
            f"# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\nmodelci {_client_name()} {_ROLE}\n"
        )
        try:
            staging.rename(self.data)  # replaces an empty directory, never a full one
        except OSError:
            raise StoreError(
                f"{self.data} exists but is not a PostgreSQL cluster (no PG_VERSION)",
                hint="move it away; modelci creates a new cluster there at the next start",
            ) from None

    # -- the server process ------------------------------------------------------------

    def _pid_file(self) -> list[str]:
        """postmaster.pid's lines: pid, data dir, start time, port, socket dir, ..., status."""
        try:
            return (self.data / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _postmaster_pid(self) -> int | None:
        lines = self._pid_file()
        pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
        return pid if pid is not None and _is_postmaster(pid) else None

    def _failed(self, message: str) -> StoreError:
        try:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            tail = []
        if tail:
            message += "\nlast lines of the server log:\n  " + "\n  ".join(tail)
        hint = f"see {self.log}; fix the cause, or set MODELCI_DATABASE_URL to an existing server"
        return StoreError(message, hint=hint)

    def _launch(self, bin_dir: Path) -> None:
        # No server runs on the cluster; a stale pid file naming a live process (its pid
        # reused after a restart) would stop the new one. Orphaned backends of a killed
        # server are still detected, through their shared memory.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        self._private_dir(self.socket_dir)
        if self.log.exists() and self.log.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(self.log, self.log.with_name(self.log.name + ".1"))
        socket_dir = str(self.socket_dir)
        if any(c in socket_dir for c in ', "'):  # the setting is a list: quote the element
            socket_dir = '"' + socket_dir.replace('"', '""') + '"'
        command = self._command(
            bin_dir / "postgres",
            *("-D", str(self.data), "-c", "listen_addresses="),
            *("-c", f"unix_socket_directories={socket_dir}"),
        )
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # Its own session: a Ctrl-C meant for modelci does not reach the server.
            self._process = subprocess.Popen(
                command,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._spawn(),
            )
        except OSError as exc:
            raise self._failed(f"cannot run {command[0]}: {exc.strerror}") from None
        finally:
            os.close(fd)
        self._wait_ready(self._process.pid, self._process)

    def _wait_ready(self, pid: int, process: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            lines = self._pid_file()
            if len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready":
                return
            if process is not None and process.poll() is not None:
                raise self._failed(f"PostgreSQL exited with status {process.returncode}")
            if process is None and not _is_postmaster(pid):
                raise self._failed("PostgreSQL stopped while starting")
            time.sleep(_POLL_S)
        raise self._failed(f"PostgreSQL (pid {pid}) was not ready after {_START_TIMEOUT_S:.0f}s")

    def _ensure_database(self) -> None:
        # Known once created: every CLI command starts the server, and connecting
        # here (psycopg's import included) delayed it. The marker lives in the
        # cluster, so a new cluster has none.
        marker = self.data / _DATABASE_MARKER
        if marker.exists():
            return
        import psycopg

        try:
            with psycopg.connect(
                host=str(self.socket_dir), user=_ROLE, dbname="postgres", autocommit=True
            ) as conn:
                found = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (_DATABASE,)
                ).fetchone()
                if not found:
                    conn.execute(f'CREATE DATABASE "{_DATABASE}"')
        except psycopg.Error as exc:
            raise self._failed(f"cannot use the embedded PostgreSQL: {exc}") from None
        marker.touch()

    def _shutdown(self) -> None:
        pid = self._postmaster_pid()
        if pid is None:
            return
        for sig, wait_s in ((signal.SIGINT, _STOP_TIMEOUT_S), (signal.SIGQUIT, 5.0)):
            # SIGINT is PostgreSQL's fast shutdown; SIGQUIT (immediate, recovered at
            # the next start) only if that hangs.
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if self._process is not None and self._process.pid == pid:
                    if self._process.poll() is not None:
                        return
                elif not (self.data / "postmaster.pid").exists() or not _is_postmaster(pid):
                    return
                time.sleep(_POLL_S)


def start_embedded(settings: Settings) -> EmbeddedPostgres | None:
    """The embedded PostgreSQL server, started; None when ``settings.database_url`` is set."""
    if settings.database_url:
        return None
    settings.prepare_data_dir()  # PostgreSQL's own user must reach its cluster inside
    embedded = EmbeddedPostgres(settings.postgres_dir)
    embedded.start()
    return embedded
