"""/ui/models/{name}: versions, champion, history with whiskers, promote and roll back
through the real Deliverer (its registry a dict), and the prediction form's errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelci.deliver.delivery import Deliverer
from modelci.deliver.modelspec import Column, ModelVersion
from modelci.serving.service import Prediction
from modelci.serving.validation import Validator
from modelci.settings import Settings
from modelci.store import records
from modelci.web.identity import Viewer
from tests.web import seed
from tests.web.conftest import Site

NAME = "m-web"
REPO = "acme/models"


class DictRegistry:
    """The registry calls Deliverer.promote and rollback make, over a dict."""

    def __init__(self, versions: int, champion: int) -> None:
        self.versions = {
            v: ModelVersion(name=NAME, version=v, model_dir=Path("/nonexistent"), sha=seed.sha(v))
            for v in range(1, versions + 1)
        }
        self.current = champion

    def model_names(self) -> list[str]:
        return [NAME]

    def champion(self, name: str) -> ModelVersion | None:
        return dataclasses.replace(self.versions[self.current], aliases=("champion",))

    def get_version(self, name: str, version: int) -> ModelVersion:
        return self.versions[version]

    def set_champion(self, name: str, version: int) -> None:
        self.current = version


class OneModel:
    """What the page asks of the serving manager, around a real request validator."""

    def __init__(self) -> None:
        columns = (Column("age", "long"), Column("colour", "string", categories=("red", "blue")))
        self.validator = Validator(columns)
        self.services = {NAME: self}
        self.refreshed: list[str] = []

    def status(self, name: str | None = None) -> dict[str, Any]:
        return {
            "state": "serving",
            "version": 4,
            "columns": [
                {"name": "age", "type": "long", "required": True, "categories": None},
                {
                    "name": "colour",
                    "type": "string",
                    "required": True,
                    "categories": ["red", "blue"],
                },
            ],
            "dropped_prediction_logs": 0,
            "last_swap_failure": None,
        }

    def get(self, name: str) -> OneModel:
        return self

    def refresh(self, name: str | None = None) -> None:
        self.refreshed.append(name or "")

    async def predict_async(self, body: bytes) -> Prediction:
        batch = self.validator.parse(body)
        return Prediction([f"rows={batch.rows}"], 4, 1.0, "req1")


@pytest.fixture(scope="module")
def model_site(site: Site) -> Iterator[tuple[Site, DictRegistry, OneModel]]:
    seed.add_model(site.database, name=NAME, repo=REPO, versions=6, retrain_every=3)
    with site.database.session() as session:
        events = [e for e in records.list_model_events(session, model_name=NAME, limit=100)]
    promoted = [e.version for e in reversed(events) if e.action == "promoted"]
    registry = DictRegistry(6, champion=promoted[-1])
    settings = Settings(data_dir=site.data_dir, database_url=site.database.url)
    deliverer = Deliverer(
        settings=settings,
        database=lambda: site.database,
        evaluator=None,  # type: ignore[arg-type]  # promote and rollback train nothing
        registry=lambda: registry,  # type: ignore[arg-type, return-value]
    )
    serving = OneModel()
    site.web.deliverer, site.web.serving = deliverer, serving  # type: ignore[assignment]
    yield site, registry, serving
    site.web.deliverer = site.web.serving = None


def _history(html: str) -> dict[str, Any]:
    start = html.index('id="history-data">') + len('id="history-data">')
    return json.loads(html[start : html.index("</script>", start)])


def test_the_model_page_shows_versions_champion_and_whiskers(model_site: Any) -> None:
    site, registry, _ = model_site
    site.viewer = Viewer(login="t", kind="token", all_access=True)
    page = site.client.get(f"/ui/models/{NAME}")
    assert page.status_code == 200
    html = page.text
    assert f"<strong>v{registry.current}</strong>" in html
    assert html.index("<td>v6") < html.index("<td>v1")  # newest first
    assert "schedule" in html and "data/train.csv" in html
    history = _history(html)
    assert history["x"] == [1, 2, 3, 4, 5, 6]
    accuracy = history["metrics"]["accuracy"]
    # v3 and v6 are retrains: whiskers around them, champion + interval.
    assert accuracy["low"][0] is None and accuracy["low"][2] is not None
    assert accuracy["low"][2] < accuracy["values"][2] < accuracy["high"][2]
    assert f'action="/ui/models/{NAME}/promote"' in html


def test_promote_and_roll_back_with_a_reason(model_site: Any) -> None:
    site, registry, serving = model_site
    site.viewer = Viewer(login="erin", kind="github", repos={REPO: "write"})
    before = registry.current
    csrf = site.csrf(f"/ui/models/{NAME}")
    missing = site.client.post(
        f"/ui/models/{NAME}/promote", data={"csrf": csrf, "version": "1", "reason": ""}
    )
    assert missing.status_code == 422 and registry.current == before
    done = site.client.post(
        f"/ui/models/{NAME}/promote",
        data={"csrf": csrf, "version": "1", "reason": "v1 was better on the holdout"},
    )
    assert done.status_code == 303 and registry.current == 1
    assert serving.refreshed[-1] == NAME
    page = site.client.get(done.headers["location"]).text
    assert "Version 1 is the champion now." in page
    assert "promoted v1 by hand (by erin, because v1 was better on the holdout)" in page
    back = site.client.post(
        f"/ui/models/{NAME}/rollback", data={"csrf": csrf, "reason": "holdout was stale"}
    )
    assert back.status_code == 303 and registry.current == before
    assert "holdout was stale" in site.client.get(back.headers["location"]).text


def test_readers_see_no_forms_and_others_see_nothing(model_site: Any) -> None:
    site, registry, _ = model_site
    site.viewer = Viewer(login="t", kind="token", all_access=True)
    csrf = site.csrf(f"/ui/models/{NAME}")
    site.viewer = Viewer(login="fay", kind="github", repos={REPO: "read"})
    html = site.client.get(f"/ui/models/{NAME}").text
    assert "/promote" not in html and "/rollback" not in html
    forged = site.client.post(
        f"/ui/models/{NAME}/promote", data={"csrf": csrf, "version": "2", "reason": "x"}
    )
    assert forged.status_code == 403 and registry.current != 2
    site.viewer = Viewer(login="gus", kind="github", repos={"acme/other": "admin"})
    assert site.client.get(f"/ui/models/{NAME}").status_code == 404
    assert site.client.get("/ui/models/no-such-model").status_code == 404


def test_a_bad_prediction_input_is_shown_next_to_its_field(model_site: Any) -> None:
    site, _, _ = model_site
    site.viewer = Viewer(login="t", kind="token", all_access=True)
    csrf = site.csrf(f"/ui/models/{NAME}")
    bad = site.client.post(
        f"/ui/models/{NAME}/predict",
        data={"csrf": csrf, "in.age": "forty", "in.colour": "green"},
    )
    assert bad.status_code == 422
    html = bad.text
    age = html[html.index('name="in.age"') :]
    assert 'aria-invalid="true"' in age[:200] and "field-error" in age[:600]
    assert 'value="forty"' in html  # what was typed is kept
    good = site.client.post(
        f"/ui/models/{NAME}/predict", data={"csrf": csrf, "in.age": "40", "in.colour": "red"}
    )
    assert good.status_code == 200 and "rows=1" in good.text


def test_serving_stats_come_from_the_prediction_log(model_site: Any) -> None:
    site, _, _ = model_site
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "model_name": NAME,
            "version": 4,
            "inputs": {},
            "outputs": [0],
            "latency_ms": float(ms),
            "created_at": now - dt.timedelta(seconds=10),
        }
        for ms in range(1, 101)
    ]
    with site.database.session() as session:
        records.log_predictions(session, rows=rows)
    site.viewer = Viewer(login="t", kind="token", all_access=True)
    html = site.client.get(f"/ui/models/{NAME}").text
    assert "p50 50.5 ms" in html and "p99 99.01 ms" in html and "(100)" in html


def test_a_retrain_is_queued_from_the_model_page_with_a_reason(model_site: Any) -> None:
    from modelci.service import jobs
    from modelci.store import audit as audit_store
    from modelci.store import schedules

    site, _, _ = model_site
    site.viewer = Viewer(login="erin", kind="github", repos={REPO: "write"})
    csrf = site.csrf(f"/ui/models/{NAME}")
    unknown = site.client.post(f"/ui/models/{NAME}/retrain", data={"csrf": csrf, "reason": "x"})
    assert unknown.status_code == 409  # no push to its default branch seen yet
    with site.database.session() as session:
        schedules.upsert_repository(
            session,
            repository=REPO,
            clone_url=f"https://example.invalid/{REPO}.git",
            default_branch="main",
            installation_id=7,
        )
    assert site.client.post(f"/ui/models/{NAME}/retrain", data={"reason": "x"}).status_code == 403
    done = site.client.post(
        f"/ui/models/{NAME}/retrain", data={"csrf": csrf, "reason": "new data arrived"}
    )
    assert done.status_code == 303, done.text
    assert "Retrain queued" in site.client.get(done.headers["location"]).text
    (job,) = [j for j in site.queue.list_jobs(limit=50) if j.task_name == jobs.TASK_RETRAIN]
    assert (job.task_kwargs["repo"], job.task_kwargs["ref"], job.task_kwargs["actor"]) == (
        REPO,
        "main",
        "erin",
    )
    with site.database.session() as session:
        logged = audit_store.list_audit(session, limit=5)
    assert any(e.action == "model.retrain" and e.reason == "new data arrived" for e in logged)
    site.viewer = Viewer(login="fay", kind="github", repos={REPO: "read"})
    assert "/retrain" not in site.client.get(f"/ui/models/{NAME}").text
    forged = site.client.post(f"/ui/models/{NAME}/retrain", data={"csrf": csrf, "reason": "x"})
    assert forged.status_code == 403
