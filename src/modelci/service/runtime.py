"""Wiring: builds the long-lived parts (database, sandbox, environments) from settings.

The database starts in a background thread while git and uv work, because
starting the embedded PostgreSQL server is the slowest part of a warm run.
That thread starts the server (a process of its own) at once, but imports
SQLAlchemy and connects only once the evaluation needs the database or its
first training has started: those imports are CPU-bound and, under the GIL,
slowed everything before the training by about 0.15 s on two cores.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

import uv

from modelci.evaluate.evaluation import Evaluator, Reporter
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import make_sandbox
from modelci.settings import Settings

if TYPE_CHECKING:
    from modelci.store.db import Database

__all__ = ["evaluator_for"]


def _open_database(settings: Settings, wanted: threading.Event) -> Database:
    from modelci.store.pgembed import start_embedded

    embedded = start_embedded(settings)
    try:
        wanted.wait()
        from modelci.store.db import open_database

        database = open_database(settings, embedded=embedded)
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    from modelci.store import records

    with database.session() as session:
        records.warm_up(session)
    # numpy and rich, for the comparison and its report, and the params/data review that
    # follows the runs: loaded here, off the critical path.
    import modelci.data.review
    import modelci.evaluate.report  # noqa: F401

    return database


@contextmanager
def evaluator_for(
    settings: Settings, *, unsafe: bool = False, reporter: Reporter | None = None
) -> Iterator[Evaluator]:
    """An evaluator whose database is opened in the background and closed on exit."""
    # Checked in the background: its first run waits for the answer.
    sandbox = make_sandbox(unsafe=unsafe, uid_base=settings.sandbox_uid_base, wait=False)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelci-db")
    wanted = threading.Event()
    future: Future[Database] = pool.submit(_open_database, settings, wanted)

    def database() -> Database:
        wanted.set()
        return future.result()

    try:
        environments = EnvironmentManager(
            envs_dir=settings.envs_dir,
            python=settings.python,
            uv_bin=uv.find_uv_bin(),
            resolution_ttl_s=settings.env_resolution_ttl_s,
        )
        yield Evaluator(
            settings=settings,
            database=database,
            sandbox=sandbox,
            environments=environments,
            reporter=reporter,
            training_started=wanted.set,
        )
    finally:
        wanted.set()
        pool.shutdown(wait=True)
        if future.exception() is None:
            future.result().close()
