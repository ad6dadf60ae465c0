"""The dashboard's pages with a full store: server time per page, and the query plans.

Fills a throwaway PostgreSQL database (created on ``--database-url``'s server,
dropped after) with 10,000 jobs (housekeeping among them), 1,000 evaluations,
one model with 200 versions (a retrain every third, with intervals) and 100
drift windows, all written as modelci writes them (``tests/web/seed.py``).
Then each page is rendered ``--rounds`` times in process (FastAPI's TestClient,
signed in as a token session: every repository visible, the widest queries)
and its p50/p95 are printed: the budget is 50 ms at p95. Finally every SQL
statement the overview runs is shown with ``EXPLAIN ANALYZE``: the big tables
must be reached through indexes.

    python bench/dashboard.py [--database-url postgresql://postgres@/x?host=/tmp/devpg]
                              [--rounds 50] [--plans]

Exit status 0 when every page is within budget and no overview query scans a
big table sequentially, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.web import seed

from modelci.service import jobs
from modelci.service.api import ApiContext, create_app
from modelci.settings import Settings
from modelci.store.db import open_database
from modelci.web.app import WebContext, mount_web
from modelci.web.auth import current_viewer, require_viewer
from modelci.web.identity import Viewer

BUDGET_MS = 50.0
JOBS, EVALUATIONS, VERSIONS, WINDOWS = 10_000, 1_000, 200, 100
REPOS = [f"acme/repo{k}" for k in range(10)]
BIG_ROWS = 1000


def _fill(database: Any, tmp: Path) -> int:
    started = time.monotonic()
    seed.bulk_jobs(database, count=JOBS, repos=REPOS)
    log = tmp / "head.log"
    log.write_text("".join(f"epoch {k} loss {1 / (k + 1):.4f}\n" for k in range(2000)))
    last = 0
    for k in range(EVALUATIONS):
        last = seed.add_evaluation(
            database,
            repo=REPOS[k % len(REPOS)],
            passed=k % 7 != 0,
            number=k,
            logs={"head": log},
        )
    seed.add_model(database, name="big-model", repo=REPOS[0], versions=VERSIONS)
    seed.add_drift(database, name="big-model", windows=WINDOWS)
    with database.session() as session:
        session.execute(text("ANALYZE"))
    print(f"filled in {time.monotonic() - started:.1f} s")
    return last


SERVER_MS: list[float] = []  # each request's time inside the app (the middleware's)


def _time(client: TestClient, path: str, rounds: int) -> list[float]:
    client.get(path).raise_for_status()  # templates compiled, caches warm
    SERVER_MS.clear()
    for _ in range(rounds):
        client.get(path).raise_for_status()
    return list(SERVER_MS)


def _server_timing(app: Any) -> None:
    """Server time: from the request reaching the app to its response's start (the
    in-process client's own thread hops left out)."""

    @app.middleware("http")
    async def timed(request: Any, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        SERVER_MS.append((time.perf_counter() - started) * 1000)
        return response


def _plans(database: Any, client: TestClient) -> bool:
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        client.get("/ui/").raise_for_status()
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    clean = True
    raw = database.engine.raw_connection()
    try:
        cursor = raw.cursor()
        # A table of a few hundred rows is read whole faster than through an index, and
        # PostgreSQL rightly does so: only the tables past BIG_ROWS must use indexes.
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND reltuples > %s", (BIG_ROWS,)
        )
        big = sorted(row[0] for row in cursor.fetchall())
        print(f"tables over {BIG_ROWS} rows: {', '.join(big)}")
        for statement, parameters in statements:
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            print("-" * 100)
            print(" ".join(statement.split())[:400])
            print(plan)
            for table in big:
                if f"Seq Scan on {table}" in plan:
                    clean = False
                    print(f"!! sequential scan of {table}")
    finally:
        raw.close()
    return clean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("MODELCI_TEST_POSTGRES_URL"))
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--plans", action="store_true", help="print the overview's plans")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("give --database-url (a PostgreSQL server to create a database on)")
    name = f"modelci_dash_{uuid.uuid4().hex[:8]}"
    admin = args.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(args.database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    url_text = url.set(database=name).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return _run(url_text, Path(tmp), args)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _run(url: str, tmp: Path, args: argparse.Namespace) -> int:
    settings = Settings(data_dir=tmp, database_url=url)
    database = open_database(settings)
    job_app = jobs.make_job_app(url)
    jobs.apply_schema(job_app)
    with job_app.open():
        queue = jobs.ProcrastinateQueue(job_app)
        app = create_app(ApiContext(database, queue, b"bench"))
        _server_timing(app)
        mount_web(app, WebContext(database=database, queue=queue, settings=settings))
        viewer = Viewer(login="token:bench", kind="token", all_access=True)

        async def signed_in() -> Viewer:
            return viewer

        app.dependency_overrides[require_viewer] = signed_in
        app.dependency_overrides[current_viewer] = signed_in
        last_evaluation = _fill(database, tmp)
        client = TestClient(app)
        pages = {
            "overview": "/ui/",
            "jobs": "/ui/jobs",
            "jobs, one repository, failed": f"/ui/jobs?repo={REPOS[3]}&status=failed",
            "jobs, page 20": "/ui/jobs?before=9000",
            "evaluation": f"/ui/evaluations/{last_evaluation}",
            "model (200 versions)": "/ui/models/big-model",
            "drift (100 windows)": "/ui/models/big-model/drift",
        }
        within = True
        print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8}   (budget: p95 <= {BUDGET_MS:.0f} ms)")
        for label, path in pages.items():
            times = sorted(_time(client, path, args.rounds))
            p50 = statistics.median(times)
            p95 = times[max(0, int(len(times) * 0.95) - 1)]
            mark = "" if p95 <= BUDGET_MS else "  OVER"
            within = within and p95 <= BUDGET_MS
            print(f"{label:32} {p50:8.1f} {p95:8.1f}{mark}")
        plans_clean = _plans(database, client) if args.plans else True
    database.close()
    return 0 if within and plans_clean else 1


if __name__ == "__main__":
    sys.exit(main())
