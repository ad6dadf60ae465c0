"""Reading the prediction log back: ``modelci predictions`` and the JSON API route."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from modelci.cli import cli
from modelci.errors import ConfigError
from modelci.service.api import ApiContext, create_app
from modelci.service.tokens import create_token
from modelci.serving.predictions import parse_since
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store.db import Database, open_database

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def test_since_reads_durations_and_iso_times() -> None:
    assert parse_since("30m", now=NOW) == NOW - dt.timedelta(minutes=30)
    assert parse_since("2d", now=NOW) == NOW - dt.timedelta(days=2)
    assert parse_since("2026-11-20") == dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    assert parse_since("2026-11-20T08:00:00+01:00") == dt.datetime(2026, 11, 20, 7, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="cannot read 'yesterday'") as caught:
        parse_since("yesterday")
    assert "30m" in str(caught.value)  # how to fix it


@pytest.fixture
def logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    url = f"sqlite:///{tmp_path}/s.db"
    monkeypatch.setenv("MODELCI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MODELCI_DATABASE_URL", url)
    database = open_database(Settings(data_dir=tmp_path, database_url=url))
    now = dt.datetime.now(dt.UTC)
    with database.session() as session:
        store.log_predictions(
            session,
            rows=[
                {
                    "model_name": "churn",
                    "version": version,
                    "inputs": {"x": [float(version)]},
                    "outputs": [version % 2],
                    "latency_ms": 2.5,
                    "created_at": now - dt.timedelta(hours=hours),
                }
                for version, hours in ((1, 50), (2, 3), (3, 1))
            ],
        )
    yield database
    database.close()


def test_the_cli_lists_them_newest_first(logged: Database) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["predictions", "churn", "--format", "json", "--since", "1d"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert [(p["version"], p["inputs"], p["outputs"]) for p in found] == [
        (3, {"x": [3.0]}, [1]),
        (2, {"x": [2.0]}, [0]),
    ]
    result = runner.invoke(cli, ["predictions", "churn", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert "churn" in result.output and "2.5 ms" in result.output
    bad = runner.invoke(cli, ["predictions", "churn", "--since", "last week"])
    assert bad.exit_code == 2 and "cannot read 'last week'" in bad.output
    assert "Traceback" not in bad.output


def test_the_api_route_returns_json(logged: Database) -> None:
    client = TestClient(create_app(ApiContext(logged, None, b"secret")))  # type: ignore[arg-type]
    assert client.get("/api/models/churn/predictions").status_code == 401  # a token is needed
    client.headers["Authorization"] = f"Bearer {create_token(logged, 'reader')}"
    answer = client.get("/api/models/churn/predictions", params={"limit": 2})
    assert answer.status_code == 200
    assert [p["version"] for p in answer.json()] == [3, 2]
    assert client.get("/api/models/churn/predictions?since=2h").json()[0]["version"] == 3
    assert client.get("/api/models/nothing/predictions").json() == []
    bad = client.get("/api/models/churn/predictions?since=soon")
    assert bad.status_code == 422 and "cannot read 'soon'" in bad.json()["detail"]
    assert client.get("/api/models/churn/predictions?limit=0").status_code == 422


def test_webhooks_without_a_secret_say_github_is_not_configured(logged: Database) -> None:
    client = TestClient(create_app(ApiContext(logged, None, b"")))  # type: ignore[arg-type]
    answer = client.post("/webhooks/github", content=b"{}", headers={"X-GitHub-Event": "ping"})
    assert answer.status_code == 503
    assert "GitHub is not configured" in answer.json()["detail"]
    assert "MODELCI_GITHUB_WEBHOOK_SECRET_PATH" in answer.json()["hint"]
