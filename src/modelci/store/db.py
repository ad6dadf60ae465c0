"""The database: engine, sessions and migrations.

``open_database`` uses ``MODELCI_DATABASE_URL`` when set (PostgreSQL, or
SQLite for the store alone), else starts the embedded PostgreSQL server in the
data dir, then migrates the schema with Alembic to the latest revision.

Opening is on the CLI's path, so the usual case costs two catalogue-sized
queries and no Alembic import (which costs more than the rest of opening): the
latest revision is read from the migration files' headers and compared with
the database's.
Only a database behind that takes a lock and runs Alembic: PostgreSQL a
transaction-scoped advisory lock, SQLite its write lock (``BEGIN IMMEDIATE``).

SQLite connections run in WAL mode with foreign keys on and a 30 s busy
timeout, and every transaction starts with ``BEGIN IMMEDIATE``: the Python
driver's default of beginning only at the first write breaks savepoints and
transactional DDL, and a deferred transaction that reads and then writes fails
at once when another connection wrote in between, instead of waiting.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, create_engine, event, inspect
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from modelci.errors import StoreError
from modelci.settings import Settings
from modelci.store.pgembed import EmbeddedPostgres, start_embedded

__all__ = [
    "Database",
    "head_revision",
    "masked_url",
    "migrate_to_head",
    "normalise_url",
    "open_database",
]

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATE_LOCK = 774410  # pg_advisory_xact_lock key: "modelci migrations"
_SQLITE_BUSY_TIMEOUT_S = 30
_CONNECT_TIMEOUT_S = 10
_REVISION = re.compile(r"^revision(?:\s*:[^=]+)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=]+)?\s*=(.*)$", re.MULTILINE)


def normalise_url(url: str) -> str:
    """SQLAlchemy URL with the psycopg 3 driver for PostgreSQL."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url.strip())


def masked_url(url: str | URL) -> str:
    """The URL with its password (in the user part or the query) hidden."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<unparseable URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


class Database:
    """An engine and its sessions; ``url`` includes the password (never print it)."""

    def __init__(self, engine: Engine, *, embedded: EmbeddedPostgres | None = None) -> None:
        self.engine = engine
        self.url = engine.url.render_as_string(hide_password=False)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._embedded = embedded

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on an error."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        """Dispose of the connections; leave the embedded server (the last user stops it)."""
        self.engine.dispose()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None


@cache
def _revisions() -> dict[str, tuple[str, ...]]:
    """Each migration's revision and the revisions it follows."""
    graph: dict[str, tuple[str, ...]] = {}
    for path in sorted((_MIGRATIONS / "versions").glob("*.py")):
        source = path.read_text()
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            raise StoreError(f"migration {path} has no revision/down_revision line")
        graph[revision.group(1)] = tuple(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    return graph


def head_revision() -> str:
    """The latest migration's revision (the one no other migration follows)."""
    graph = _revisions()
    followed = {parent for parents in graph.values() for parent in parents}
    heads = sorted(set(graph) - followed)
    if len(heads) != 1:
        raise StoreError(f"the migrations have {len(heads)} heads ({heads}), not one")
    return heads[0]


def _current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return None if revision is None else str(revision)


def _check_known(revision: str | None) -> None:
    if revision is not None and revision not in _revisions():
        raise StoreError(
            f"the database's schema is at revision {revision!r}, which this modelci does not "
            "know (a newer modelci migrated it)",
            hint="upgrade modelci, or use another database",
        )


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def migrate_to_head(engine: Engine) -> None:
    """Bring the schema to the latest revision; only a check when it is there already."""
    head = head_revision()
    with engine.connect() as connection:
        current = _current_revision(connection)
    if current == head:
        return
    _check_known(current)
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        sqlite = connection.dialect.name == "sqlite"
        if sqlite and raw is not None:
            # Alembic's batch migrations rebuild tables, which must not cascade.
            raw.cursor().execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():  # SQLite: BEGIN IMMEDIATE, the write lock
                if not sqlite:
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK})")
                current = _current_revision(connection)  # another process may have migrated
                _check_known(current)
                if current != head:
                    _upgrade(connection)
        finally:
            if sqlite and raw is not None:
                raw.cursor().execute("PRAGMA foreign_keys = ON")


def _json_dumps(value: Any) -> str:
    # orjson: the prediction log writes thousands of values per request, and the
    # standard library's encoder was most of its cost (bench/serving.py, 100 rows).
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:" and not url.query.get("uri"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S}, json_serializer=_json_dumps
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver no longer begins by itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # An unreachable host otherwise blocks the CLI for the TCP timeout (minutes).
        connect_args["connect_timeout"] = _CONNECT_TIMEOUT_S
    return create_engine(
        parsed, pool_pre_ping=True, connect_args=connect_args, json_serializer=_json_dumps
    )


def open_database(
    settings: Settings, *, migrate: bool = True, embedded: EmbeddedPostgres | None = None
) -> Database:
    """The store's database, migrated to the latest schema unless ``migrate`` is False.

    Uses ``settings.database_url`` (``postgresql://``, ``postgres://`` or a
    SQLAlchemy URL such as ``sqlite:///path``), else the embedded PostgreSQL
    server in ``settings.postgres_dir``: ``embedded`` when the caller started
    it (``start_embedded``; the database then stops it), else started here.
    Raises ``StoreError`` when the server cannot be started, reached or migrated.
    """
    if settings.database_url:
        url = normalise_url(settings.database_url)
    else:
        embedded = embedded or start_embedded(settings)
        assert embedded is not None
        url = embedded.url
    engine = None
    try:
        engine = _engine(url)
        if migrate:
            migrate_to_head(engine)
    except (ArgumentError, DBAPIError, ImportError, StoreError) as exc:
        if engine is not None:
            engine.dispose()
        if embedded is not None:
            embedded.stop()
        if isinstance(exc, StoreError):
            raise
        hint = (
            "check MODELCI_DATABASE_URL (driver, host, credentials, database name) and that "
            "the server is running, or unset it to use the embedded PostgreSQL"
        )
        if embedded is not None:
            hint = f"see {embedded.log}, or set MODELCI_DATABASE_URL to an existing server"
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StoreError(
            f"cannot use the database {masked_url(url)}: {reason[0] if reason else exc!r}",
            hint=hint,
        ) from None
    return Database(engine, embedded=embedded)
