"""The HTTP API on a real store and a real Procrastinate (the test PostgreSQL): tokens,
bounded parameters, reruns, hidden housekeeping, webhook limits, and a Schemathesis run."""

from __future__ import annotations

import collections
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
import uvicorn
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import make_url

from modelci.github import BadDelivery
from modelci.service import jobs
from modelci.service.api import WEBHOOK_MAX_BODY, ApiContext, create_app, predict_auth
from modelci.service.tokens import create_token, revoke_token
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store import schedules
from modelci.store.db import Database, open_database
from tests.github.helpers import TEST_SECRET, signed_delivery
from tests.service.test_jobs import Engine, Recorder, wait_until, worker


@dataclass
class Api:
    database: Database
    engine: Engine
    app: FastAPI
    client: TestClient
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def api_database_url(postgres_url: str) -> Iterator[str]:
    name = f"modelci_api_{uuid.uuid4().hex[:8]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def api_parts(api_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    database = open_database(
        Settings(data_dir=tmp_path_factory.mktemp("data"), database_url=api_database_url)
    )
    app = jobs.make_job_app(api_database_url)
    jobs.apply_schema(app)
    with app.open():
        yield database, Engine(api_database_url, app)
    database.close()


def make_api(api_parts: Any, **options: Any) -> Api:
    database, engine = api_parts
    options.setdefault("token_cache_s", 0)  # a revoked token is refused at once
    context = ApiContext(database, engine.queue(), TEST_SECRET, **options)
    app = create_app(context)
    token = create_token(database, f"test-{uuid.uuid4().hex[:8]}")
    return Api(database, engine, app, TestClient(app), token)


@pytest.fixture
def api(api_parts: Any) -> Api:
    return make_api(api_parts)


def test_the_jobs_api_needs_a_bearer_token(api: Api) -> None:
    missing = api.client.get("/api/jobs")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "modelci tokens create" in missing.json()["hint"]
    wrong = api.client.get("/api/jobs", headers={"Authorization": "Bearer mci_not-a-token"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.json()["detail"]
    basic = api.client.post("/api/jobs/1/cancel", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    assert api.client.get("/api/jobs", headers=api.auth).status_code == 200
    assert api.client.get("/healthz").status_code == 200
    assert "bearerAuth" not in str(api.client.get("/openapi.json").json()["paths"]["/healthz"])


def test_a_revoked_token_is_refused_and_last_use_is_recorded(api: Api) -> None:
    name = "revoke-me"
    token = create_token(api.database, name)
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/jobs", headers=headers).status_code == 200
    with api.database.session() as session:
        (found,) = [t for t in store.list_api_tokens(session) if t.name == name]
        assert found.last_used_at is not None
        assert found.token_sha256 != token and token not in found.token_sha256
    revoke_token(api.database, name)
    assert api.client.get("/api/jobs", headers=headers).status_code == 401


def test_a_route_added_under_api_later_needs_a_token_too(api: Api) -> None:
    @api.app.get("/api/added-later/{name}")
    def added_later(name: str) -> list[str]:
        return [name]

    assert api.client.get("/api/added-later/m").status_code == 401
    assert api.client.get("/api/added-later/m", headers=api.auth).json() == ["m"]


@pytest.mark.parametrize("mode", ["none", "token"])
def test_predict_auth_is_a_server_setting(api_parts: Any, mode: str) -> None:
    api = make_api(api_parts, predict_auth=mode)

    @api.app.post("/predict", dependencies=[Depends(predict_auth)])
    def predict() -> dict[str, int]:
        return {"predictions": 1}

    anonymous = api.client.post("/predict")
    assert anonymous.status_code == (200 if mode == "none" else 401)
    assert api.client.post("/predict", headers=api.auth).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/jobs?status=bogus",
        "/api/jobs?limit=0",
        "/api/jobs?limit=100000",
        f"/api/jobs/{2**63}",
        "/api/jobs/0",
        f"/api/runs/{2**31}/log",
        f"/api/runs/{10**30}/log",
    ],
)
def test_bad_parameters_are_a_422_not_a_500(api: Api, path: str) -> None:
    response = api.client.get(path, headers=api.auth)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] in ("query", "path")


def test_unknown_ids_are_404(api: Api) -> None:
    for method, path in [
        ("GET", f"/api/jobs/{2**63 - 1}"),
        ("POST", f"/api/jobs/{2**63 - 1}/retry"),
        ("POST", f"/api/jobs/{2**63 - 1}/cancel"),
        ("GET", f"/api/runs/{2**31 - 1}/log"),
    ]:
        assert api.client.request(method, path, headers=api.auth).status_code == 404, path


def test_retry_runs_an_ended_job_again(api: Api) -> None:
    recorder = Recorder()
    jobs.install_services(recorder.services())
    queue = api.engine.queue()
    first = queue.defer_delivery("rerun-me")
    assert first is not None
    with worker(api.engine):
        wait_until(lambda: api.engine.status(first) == "succeeded")
        again = api.client.post(f"/api/jobs/{first}/retry", headers=api.auth)
        assert again.status_code == 200, again.text
        rerun = again.json()
        assert rerun["id"] != first
        assert rerun["args"] == {"delivery_id": "rerun-me"}
        assert rerun["task"] == jobs.TASK_DELIVERY
        wait_until(lambda: api.engine.status(rerun["id"]) == "succeeded")
    assert recorder.deliveries == ["rerun-me", "rerun-me"]
    ended = api.client.post(f"/api/jobs/{first}/cancel", headers=api.auth)
    assert ended.status_code == 409 and "nothing to cancel" in ended.json()["detail"]
    queued = queue.defer_delivery("still-queued")
    busy = api.client.post(f"/api/jobs/{queued}/retry", headers=api.auth)
    assert busy.status_code == 409 and "todo" in busy.json()["detail"]


def test_housekeeping_jobs_are_hidden_unless_asked_for(api: Api) -> None:
    queue = api.engine.queue()
    real = queue.defer_delivery(f"real-{uuid.uuid4()}")
    ticks = []
    for n in range(150):  # one queued at a time (its queueing lock): cancel each, as if run
        ticks.append(api.engine.app.configure_task(jobs.TASK_RETRY_STALLED).defer(timestamp=n))
        api.engine.app.job_manager.cancel_job_by_id(ticks[-1])
    listed = api.client.get("/api/jobs", headers=api.auth).json()
    assert listed[0]["id"] == real
    assert all(job["task"] != jobs.TASK_RETRY_STALLED for job in listed)
    shown = api.client.get("/api/jobs?housekeeping=true&limit=5", headers=api.auth).json()
    assert [job["id"] for job in shown] == sorted(ticks, reverse=True)[:5]
    todo = api.client.get("/api/jobs?status=todo&limit=1000", headers=api.auth).json()
    assert real in [job["id"] for job in todo]


def test_a_failed_jobs_reason_is_shown(api: Api) -> None:
    delivery_id = f"bad-{uuid.uuid4()}"
    with api.database.session() as session:
        store.record_delivery(
            session, delivery_id=delivery_id, event="pull_request", action=None, payload={}
        )

    def malformed(_: str) -> None:
        raise BadDelivery("the pull_request payload has no 'pull_request' object")

    services = Recorder().services()
    services.process_delivery, services.database = malformed, api.database
    jobs.install_services(services)
    job_id = api.engine.queue().defer_delivery(delivery_id)
    assert job_id is not None
    with worker(api.engine):
        wait_until(lambda: api.engine.status(job_id) == "failed")
    shown = api.client.get(f"/api/jobs/{job_id}", headers=api.auth).json()
    assert shown["attempts"] == 1  # a malformed delivery is not retried
    assert "no 'pull_request' object" in shown["error"]
    with api.database.session() as session:
        stored = store.get_delivery(session, delivery_id=delivery_id)
        assert stored is not None and stored.outcome == "failed"
        assert "no 'pull_request' object" in (stored.detail or "")


# -- the webhook --------------------------------------------------------------------


def post_webhook(
    api: Api,
    *,
    delivery_id: str | None = None,
    event: str = "ping",
    payload: dict[str, Any] | None = None,
) -> Any:
    headers, body = signed_delivery(
        payload or {"zen": "hi", "hook_id": 1}, event=event, delivery_id=delivery_id
    )
    return api.client.post("/webhooks/github", headers=headers, content=body)


def test_signed_deliveries_with_oversized_headers_are_a_400_naming_them(api: Api) -> None:
    long_id = post_webhook(api, delivery_id="d" * 10_000)
    assert long_id.status_code == 400
    assert "X-GitHub-Delivery header is 10,000 characters" in long_id.json()["detail"]
    long_event = post_webhook(api, event="e" * 10_000)
    assert long_event.status_code == 400
    assert "X-GitHub-Event header" in long_event.json()["detail"]
    nul = post_webhook(api, payload={"zen": "a\x00b"})
    assert nul.status_code == 400 and "NUL" in nul.json()["detail"]
    assert post_webhook(api, payload={"zen": "a\\u0000b"}).status_code == 202


@pytest.fixture
def live_api(api: Api) -> Iterator[str]:
    """The app behind a real uvicorn on loopback (TestClient buffers request bodies)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_an_unsigned_webhook_is_refused_before_its_body_is_read(live_api: str) -> None:
    port = int(live_api.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        # 300 MB announced, none sent: the answer comes without waiting for it.
        conn.sendall(
            b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-GitHub-Event: ping\r\nX-GitHub-Delivery: d\r\nContent-Length: 314572800\r\n\r\n"
        )
        answer = b""
        while b"Signature" not in answer and (chunk := conn.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert b"has no X-Hub-Signature-256 header" in answer


def test_a_chunked_webhook_body_over_25_mb_is_a_413(live_api: str) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        while sent <= WEBHOOK_MAX_BODY + (1 << 20):
            sent += 1 << 20
            yield b" " * (1 << 20)

    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "big",
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
    }
    try:
        response = httpx.post(
            f"{live_api}/webhooks/github", headers=headers, content=chunks(), timeout=30
        )
    except httpx.WriteError:  # the server answered and closed while we still sent
        pytest.fail("the server closed the connection without a 413")
    assert response.status_code == 413, response.text
    assert "25 MB" in response.json()["detail"]


# -- Schemathesis over the served OpenAPI -------------------------------------------

_counts: collections.Counter[str] = collections.Counter()


@pytest.fixture
def api_schema(api_parts: Any) -> Any:
    api = make_api(api_parts, token_cache_s=60)
    queue = api.engine.queue()
    for n in range(3):  # real ids for the generator's examples to hit now and then
        queue.defer_delivery(f"fuzz-{uuid.uuid4()}-{n}")
    with api.database.session() as session:  # a known repository for the retrain routes
        schedules.upsert_repository(
            session,
            repository="octo/model",
            clone_url="https://example.invalid/octo/model.git",
            default_branch="main",
            installation_id=7,
        )
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    schema.config.generation.update(
        modes=[
            schemathesis.GenerationMode.POSITIVE,
            schemathesis.GenerationMode.NEGATIVE,
        ],
        max_examples=60,
    )
    schema.config.update(headers=api.auth)
    return schema


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@fuzzed.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_for_any_generated_request(case: Any) -> None:
    response = case.call()
    _counts["cases"] += 1
    _counts[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)


def test_zz_report_schemathesis_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\nSchemathesis: {dict(sorted(_counts.items()))}")
