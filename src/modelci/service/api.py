"""The HTTP edge: GitHub's webhook receiver and a small JSON API for jobs.

The only module that imports FastAPI. A delivery is verified (signature
first, before anything is parsed or stored), stored keyed by its
``X-GitHub-Delivery`` id, queued, and answered 202 within milliseconds; a
redelivery of a stored id is answered 200 "duplicate" and not processed
again. Bad input gets a 4xx that says what was wrong; modelci's own errors
become their ``http_status``; nothing answers with a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from modelci.errors import ModelCIError
from modelci.github import BadDelivery, InvalidSignature, parse_delivery
from modelci.service.intake import submit_delivery
from modelci.service.jobs import ProcrastinateQueue
from modelci.store import records as store
from modelci.store.db import Database

__all__ = ["ApiContext", "create_app"]

log = logging.getLogger(__name__)


@dataclass
class ApiContext:
    database: Database
    queue: ProcrastinateQueue
    webhook_secret: bytes


class DeliveryAccepted(BaseModel):
    delivery_id: str
    status: str  # "queued" or "duplicate"
    event: str


class JobPublic(BaseModel):
    id: int
    task: str
    status: str
    queue: str
    attempts: int
    args: dict[str, Any]
    scheduled_at: str | None


class JobDetail(JobPublic):
    evaluations: list[dict[str, Any]]


def _job_public(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task_name,
        "status": job.status,
        "queue": job.queue,
        "attempts": job.attempts,
        "args": job.task_kwargs,
        "scheduled_at": job.scheduled_at.isoformat() if job.scheduled_at else None,
    }


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="modelci", version="0.1.0", description="Webhook receiver and job API of modelci."
    )

    @app.exception_handler(ModelCIError)
    async def _modelci_error(request: Request, exc: ModelCIError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "hint": exc.hint}, status_code=exc.http_status)

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/webhooks/github",
        status_code=202,
        response_model=DeliveryAccepted,
        responses={200: {"model": DeliveryAccepted}, 400: {}, 401: {}, 503: {}},
    )
    async def github_webhook(request: Request) -> Any:
        if not context.webhook_secret:
            return JSONResponse(
                {
                    "detail": "GitHub is not configured on this server: webhooks are refused",
                    "hint": "set MODELCI_GITHUB_WEBHOOK_SECRET_PATH and GitHub credentials "
                    "(MODELCI_GITHUB_APP_ID and MODELCI_GITHUB_PRIVATE_KEY_PATH, or "
                    "MODELCI_GITHUB_TOKEN), then restart modelci serve",
                },
                status_code=503,
            )
        body = await request.body()
        try:
            delivery = parse_delivery(dict(request.headers), body, secret=context.webhook_secret)
        except InvalidSignature as exc:
            return JSONResponse({"detail": str(exc)}, status_code=401)
        except BadDelivery as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        # The database work runs in a thread: done on the event loop, it would
        # serialise every delivery behind the one being stored.
        created = await run_in_threadpool(
            submit_delivery,
            context.database,
            context.queue,
            delivery_id=delivery.delivery_id,
            event=delivery.event,
            action=delivery.action,
            payload=delivery.payload,
        )
        status = "queued" if created else "duplicate"
        return JSONResponse(
            DeliveryAccepted(
                delivery_id=delivery.delivery_id, status=status, event=delivery.event
            ).model_dump(),
            status_code=202 if created else 200,
        )

    @app.get("/api/jobs", response_model=list[JobPublic])
    def list_jobs(status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        jobs = context.queue.app.job_manager.list_jobs(status=status)
        return [_job_public(j) for j in sorted(jobs, key=lambda j: -(j.id or 0))[:limit]]

    def _get_job(job_id: int) -> Any:
        found = context.queue.app.job_manager.list_jobs(id=job_id)
        if not found:
            raise HTTPException(404, f"no job {job_id}")
        return found[0]

    @app.get("/api/jobs/{job_id}", response_model=JobDetail)
    def show_job(job_id: int) -> dict[str, Any]:
        job = _get_job(job_id)
        with context.database.session() as session:
            evaluations = store.evaluations_for_job(session, job_id=job_id)
        return {**_job_public(job), "evaluations": evaluations}

    @app.post("/api/jobs/{job_id}/cancel", response_model=JobPublic)
    def cancel_job(job_id: int) -> dict[str, Any]:
        job = _get_job(job_id)
        if job.status not in ("todo", "doing"):
            raise HTTPException(409, f"job {job_id} is {job.status}: nothing to cancel")
        context.queue.app.job_manager.cancel_job_by_id(job_id, abort=job.status == "doing")
        return _job_public(_get_job(job_id))

    @app.post("/api/jobs/{job_id}/retry", response_model=JobPublic)
    def retry_job(job_id: int) -> dict[str, Any]:
        import datetime

        job = _get_job(job_id)
        if job.status in ("todo", "doing"):
            raise HTTPException(409, f"job {job_id} is {job.status}: it will run anyway")
        context.queue.app.job_manager.retry_job_by_id(
            job_id, retry_at=datetime.datetime.now(datetime.UTC)
        )
        return _job_public(_get_job(job_id))

    @app.get("/api/runs/{run_id}/log", response_class=PlainTextResponse)
    def run_log(run_id: int) -> str:
        with context.database.session() as session:
            run = store.get_run(session, run_id=run_id)
            log_path = run.log_path if run else None
        if not log_path or not Path(log_path).exists():
            raise HTTPException(404, f"run {run_id} has no log")
        return Path(log_path).read_text(errors="replace")[-2_000_000:]

    @app.get("/api/models/{name:path}/predictions")
    def model_predictions(
        name: str, limit: int = 100, since: str | None = None
    ) -> list[dict[str, Any]]:
        """Logged predictions of a model, newest first (``since``: ISO time or 1h/2d)."""
        from modelci.serving.predictions import parse_since, prediction_json

        if not 1 <= limit <= 10_000:
            raise HTTPException(422, f"limit must be between 1 and 10000, not {limit}")
        after = parse_since(since) if since else None
        with context.database.session() as session:
            found = store.list_predictions(session, model_name=name, limit=limit, since=after)
            return [prediction_json(row) for row in found]

    return app
