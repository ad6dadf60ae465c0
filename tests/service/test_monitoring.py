"""Monitoring end to end: served traffic in the real prediction log (PostgreSQL), the
reference profiled from a CSV, the watch with its GitHub alerts (stand-in GitHub) and
drift retrains, the JSON route, and the HTML report in Debian's chromium."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelci.github import GitHubClient
from modelci.monitor.config import MonitoringConfig
from modelci.monitor.reference import profile_reference
from modelci.monitor.watch import Checked, Watcher
from modelci.service.api import ApiContext, create_app
from modelci.service.monitoring import GitHubAlerts, QueueRetrains
from modelci.service.pullrequests import RetrainJob
from modelci.service.tokens import create_token
from modelci.store import monitoring, schedules
from modelci.store import records as store
from modelci.store.db import Database
from tests.github.conftest import (
    INSTALLATION,
    REPO,
    GitHub,
    app_client,
    app_key,
    github,
    sleep,
    standin_server,
)
from tests.service.test_retrains import database, database_url
from tests.serving.conftest import FakeRegistry

__all__ = ["app_client", "app_key", "database", "database_url", "github", "sleep", "standin_server"]

COLUMNS = [f"c{i}" for i in range(10)]
SHIFTED = ("c3", "c7")
# Windows and a reference large enough that sampling noise stays far below Evidently's
# 0.1 Wasserstein threshold (at 1,000 rows it reaches it now and then).
WINDOW, PER_REQUEST = 2000, 200
T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
clock = [T0]  # the watcher's now: the cooldown is judged by it
CONFIG = MonitoringConfig(
    window=WINDOW,
    drift_share=0.15,  # two of the eleven columns (ten inputs, the output) drifting: drift
    close_after=3,
    retrain_on_drift=True,
    cooldown="7d",
)


class Queue:
    def __init__(self) -> None:
        self.retrains: list[RetrainJob] = []

    def enqueue_retrain(self, job: RetrainJob) -> int | None:
        self.retrains.append(job)
        return len(self.retrains)


class Traffic:
    """Requests of ``name`` v1 written to the prediction log as serving writes them."""

    def __init__(self, database: Database, name: str) -> None:
        self.database, self.name = database, name
        self.rng = np.random.default_rng(7)
        self.at = T0
        self.request_ids: list[str] = []

    def serve(self, windows: int, *, shift: float = 0.0) -> None:
        rows = []
        for _ in range(windows * WINDOW // PER_REQUEST):
            data = self.rng.normal(size=(PER_REQUEST, len(COLUMNS)))
            for column in SHIFTED:
                data[:, COLUMNS.index(column)] += shift
            request_id = uuid.uuid4().hex
            self.request_ids.append(request_id)
            self.at += dt.timedelta(seconds=30)
            rows.append(
                {
                    "model_name": self.name,
                    "version": 1,
                    "inputs": {c: data[:, i].tolist() for i, c in enumerate(COLUMNS)},
                    "outputs": (data[:, 0] > 0).astype(int).tolist(),
                    "latency_ms": 2.0,
                    "created_at": self.at,
                    "request_id": request_id,
                }
            )
        with self.database.session() as session:
            store.log_predictions(session, rows=rows)


@pytest.fixture
def watched(
    database: Database, app_client: GitHubClient, tmp_path: Path
) -> tuple[Watcher, Traffic, Queue, str]:
    name = f"churn-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(20000, len(COLUMNS)))
    csv = tmp_path / "train.csv"
    header = ",".join([*COLUMNS, "label"])
    labels = (reference[:, 0] > 0).astype(int)
    body = "\n".join(
        ",".join(f"{v:.6f}" for v in row) + f",{y}" for row, y in zip(reference, labels)
    )
    csv.write_text(header + "\n" + body + "\n")
    profiled = profile_reference(
        csv, label="train.csv", input_columns=COLUMNS, config=CONFIG, predictions=labels
    )
    assert profiled.columns == (*COLUMNS, "prediction")  # not the label
    with database.session() as session:
        monitoring.save_profile(
            session,
            model_name=name,
            version=1,
            source=profiled.source,
            rows=profiled.rows,
            profile=profiled.profile,
            settings=CONFIG.settings(),
        )
        schedules.upsert_repository(
            session,
            repository=REPO,
            clone_url=f"https://example.invalid/{REPO}.git",
            default_branch="main",
            installation_id=INSTALLATION,
            cron=None,
            now=T0,
        )
    registry = FakeRegistry()
    registry.add(name, 1, tmp_path, repository=REPO)
    registry.promote(name, 1)
    queue = Queue()
    clock[0] = T0 + dt.timedelta(days=1)
    watcher = Watcher(
        sessions=database.session,
        registry=registry,
        alerts=GitHubAlerts(github=app_client, public_url="https://modelci.example.com"),
        retrains=QueueRetrains(database=database, queue=queue),
        now=lambda: clock[0],
    )
    return watcher, Traffic(database, name), queue, name


def _reports(database: Database, name: str) -> list[Any]:
    with database.session() as session:
        return list(reversed(monitoring.list_drift_reports(session, model_name=name)))


def test_two_shifted_columns_drift_alone_raise_one_issue_and_one_retrain(
    database: Database, github: GitHub, watched: tuple[Watcher, Traffic, Queue, str]
) -> None:
    watcher, traffic, queue, name = watched
    issues = github.state.repos[REPO].issues

    # Traffic from the reference's distribution: many windows, no drift, no issue.
    traffic.serve(8)
    traffic.serve(0)
    both = [threading.Thread(target=watcher.check, args=(name,)) for _ in range(2)]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join()
    clean = _reports(database, name)
    assert len(clean) == 8  # two watchers at once: each window reported once
    assert [r.drifted for r in clean] == [False] * 8 and not issues

    # Two columns shifted by one standard deviation: those two drift, nothing else.
    traffic.serve(3, shift=1.0)
    checked = watcher.check(name)
    assert [c.drifted_columns for c in checked] == [sorted(SHIFTED)] * 3
    assert all(c.share_drifted == pytest.approx(2 / 11) for c in checked)  # 10 inputs + output
    (issue,) = issues.values()  # one issue, kept up to date
    assert issue["title"] == f"Data drift in {name}" and issue["state"] == "open"
    assert "`c3`, `c7`" in issue["body"]
    assert f"https://modelci.example.com/models/{name}/drift" in issue["body"]
    edits = [r for r in github.state.requests if r.method == "PATCH" and "/issues/" in r.path]
    assert len(edits) == 2  # the second and third drifting windows updated it
    # Retrain on drift: once per cooldown, for the repository's default branch.
    (retrain,) = queue.retrains
    assert (retrain.repo, retrain.ref, retrain.trigger) == (REPO, "main", "drift")

    # Back to the reference: closed after close_after clean windows.
    traffic.serve(2)
    watcher.check(name)
    assert issue["state"] == "open"
    traffic.serve(1)
    watcher.check(name)
    assert issue["state"] == "closed" and issue["state_reason"] == "completed"
    assert len(issues) == 1 and len(queue.retrains) == 1
    with database.session() as session:
        state = monitoring.monitor_state(session, model_name=name)
        assert (state.alert_open, state.issue_number) == (False, None)

    # Drift again a day later: a new issue, but no retrain within the 7-day cooldown;
    # a week later, the next drifting window queues the next retrain.
    clock[0] += dt.timedelta(days=1)
    traffic.serve(1, shift=1.0)
    watcher.check(name)
    assert len(issues) == 2 and len(queue.retrains) == 1
    clock[0] += dt.timedelta(days=7)
    traffic.serve(1, shift=1.0)
    watcher.check(name)
    assert len(issues) == 2 and len(queue.retrains) == 2


def test_feedback_labels_give_the_live_metric_and_the_report_renders_in_chromium(
    database: Database, watched: tuple[Watcher, Traffic, Queue, str], tmp_path: Path
) -> None:
    watcher, traffic, _, name = watched
    traffic.serve(1)
    (checked,) = watcher.check(name)
    assert checked.live == []  # no label yet
    # Labels come back later for most requests of the window, 20% of rows wrong.
    with database.session() as session:
        rows = monitoring.predictions_after(session, model_name=name, after_id=0, limit=100)
        for row in rows[:8]:  # 8 of the window's 10 requests
            labels = list(row.outputs)
            for i in range(0, len(labels), 5):
                labels[i] = 1 - labels[i]
            monitoring.save_feedback(
                session, model_name=name, request_id=row.request_id, labels=labels
            )
    client = TestClient(create_app(ApiContext(database, None, b"secret")))  # type: ignore[arg-type]
    assert client.get(f"/api/models/{name}/drift").status_code == 401
    client.headers["Authorization"] = f"Bearer {create_token(database, 'monitor')}"
    found = client.get(f"/api/models/{name}/drift").json()
    (live,) = found["latest"]["live"]
    assert (live["name"], live["labelled_rows"]) == ("accuracy", 8 * PER_REQUEST)
    assert live["value"] == pytest.approx(0.8) and live["registered"] == 0.9
    assert client.get("/api/models/nothing/drift").status_code == 404

    page = client.get(f"/models/{name}/drift")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    _render_offline(page.text, tmp_path)


def _render_offline(html: str, tmp_path: Path) -> None:
    """The page in Debian's chromium with every network request refused: it must show
    its plots from what it holds."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    requested: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()

            def refuse(route: Any) -> None:
                requested.append(route.request.url)
                route.abort()

            page.route("**/*", refuse)
            page.set_content(html, wait_until="load")
            svgs = page.locator("svg").count()
            boxes = [page.locator("svg").nth(i).bounding_box() for i in range(min(svgs, 5))]
            page.screenshot(path=str(tmp_path / "drift.png"), full_page=True)
        finally:
            browser.close()
    assert requested == []  # nothing fetched: no CDN, no fonts
    assert svgs >= 11  # a plot per column and the drift over time
    assert all(box is not None and box["width"] > 50 and box["height"] > 20 for box in boxes)


def test_without_github_a_drifting_window_is_posted_to_the_webhook() -> None:
    sent: list[Any] = []

    def receive(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(204 if len(sent) == 1 else 500)

    alerts = GitHubAlerts(
        github=None,
        public_url=None,
        webhook_url="https://hooks.example.com/drift",
        http=httpx.Client(transport=httpx.MockTransport(receive)),
    )
    checked = Checked(
        model_name="churn",
        version=3,
        repository="/srv/repos/churn",  # a local repository: no GitHub issue
        report_id=11,
        drifted=True,
        share_drifted=0.6,
        drifted_columns=["age", "city"],
        rows=1000,
        window_start=T0,
        window_end=T0 + dt.timedelta(hours=1),
    )
    assert alerts.drifting(checked, None) is None  # no issue, no error
    assert sent[0]["model"] == "churn" and sent[0]["drifted_columns"] == ["age", "city"]
    assert sent[0]["report_url"] is None and sent[0]["share_drifted"] == 0.6
    alerts.drifting(checked, None)  # a failing webhook is logged, never raised
    assert len(sent) == 2
