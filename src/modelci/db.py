"""The database: engine, sessions and migrations.

``open_database`` uses ``MODELCI_DATABASE_URL`` when set (PostgreSQL, or
SQLite for the store alone), else starts the embedded PostgreSQL server in the
data dir. The schema is migrated with Alembic to the latest revision; the
check is one query when it is already there, and concurrent processes take a
PostgreSQL advisory lock so only one migrates.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from modelci.errors import StoreError
from modelci.pgembed import EmbeddedPostgres
from modelci.settings import Settings

__all__ = ["Database", "normalise_url", "open_database"]

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATE_LOCK = 774410


def normalise_url(url: str) -> str:
    """SQLAlchemy URL with the psycopg 3 driver for PostgreSQL."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def _masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


class Database:
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
        self.engine.dispose()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None


def _head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    # SQLite has no advisory locks: serialise migrations with a lock file beside it.
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def migrate(engine: Engine) -> None:
    head = _head_revision()
    with engine.connect() as connection:
        if _current_revision(connection) == head:
            return
    with _file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
        if _current_revision(connection) != head:
            _upgrade(connection)


def open_database(settings: Settings, *, migrate_schema: bool = True) -> Database:
    embedded = None
    if settings.database_url:
        url = normalise_url(settings.database_url)
    else:
        embedded = EmbeddedPostgres(settings.postgres_dir)
        url = embedded.start()
    try:
        engine = create_engine(url, pool_pre_ping=True)
        if migrate_schema:
            migrate(engine)
    except (OperationalError, ArgumentError) as exc:
        if embedded is not None:
            embedded.stop()
        raise StoreError(
            f"cannot use the database {_masked(url)}: {str(exc).splitlines()[0]}",
            hint="check MODELCI_DATABASE_URL (host, credentials, database name) and that the "
            "server is running, or unset it to use the embedded PostgreSQL",
        ) from None
    return Database(engine, embedded=embedded)
