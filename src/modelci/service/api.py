"""The HTTP edge: GitHub's webhook receiver and a small JSON API for jobs.

The only service module that imports FastAPI. A delivery is verified
(signature first, before anything is parsed or stored), stored keyed by its
``X-GitHub-Delivery`` id, queued, and answered 202 within milliseconds; a
redelivery of a stored id is answered 200 "duplicate" and not processed
again. Its body is read as a stream and refused past 25 MB (GitHub's own
payload limit), and a request without a signature header is refused before
any of its body is read.

``POST /api/repositories/{owner}/{name}/retrain`` queues a retrain (202 and
the job's id), ``/api/repositories/{owner}/{name}/retrain-schedule`` shows, sets
or drops the schedule set on the server, and ``/plots/retrains/{token}.png`` is
a retrain's history plot: public, as GitHub shows it in the commit comment,
behind a random token only the comment knows.

Everything under ``/api`` needs a bearer token (``modelci tokens create``),
checked by :func:`require_token`; the serving routes use :func:`predict_auth`,
which asks for one only when ``MODELCI_PREDICT_AUTH=token``. The webhook (its
signature), ``/healthz``, ``/readyz`` and the OpenAPI pages stay open.

Bad input gets a 4xx that says what was wrong: path and query parameters are
typed and bounded (FastAPI answers 422), modelci's own errors become their
``http_status``; nothing answers with a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelci.errors import ModelCIError, Unauthorized
from modelci.github import BadDelivery, InvalidSignature, parse_delivery, verify_signature
from modelci.github.sansio import SIGNATURE_HEADER
from modelci.runner.config import CronSchedule, TimeZoneName
from modelci.service.intake import submit_delivery
from modelci.service.jobs import JobConflict, JobNotFound, ProcrastinateQueue
from modelci.service.retrains import plot_png
from modelci.service.tokens import TokenVerifier
from modelci.store import records as store
from modelci.store.db import Database

__all__ = ["WEBHOOK_MAX_BODY", "ApiContext", "create_app", "predict_auth", "require_token"]

WEBHOOK_MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
_LOG_TAIL = 2_000_000  # bytes of a run's log the API returns
# Procrastinate's job ids are bigint; runs.id is a 32-bit integer.
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A job id, from GET /api/jobs")]
RunId = Annotated[int, Path(ge=1, le=2**31 - 1, description="A run id, from a job's evaluations")]
RepoPart = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_.-]{1,100}$", description="The repository's owner or name")
]
PlotToken = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
JobStatus = Literal["todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted"]

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `modelci tokens create NAME`, sent as `Authorization: Bearer TOKEN`",
)

# Declares the scheme in the OpenAPI document; _authorize reads the header itself.
_BearerHeader = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


@dataclass
class ApiContext:
    database: Database
    queue: ProcrastinateQueue
    webhook_secret: bytes
    predict_auth: Literal["none", "token"] = "none"
    token_cache_s: float = 5.0  # a revoked token keeps working this long at most
    public_url: str | None = None
    signin: Any = None  # web.signin.SignIn: the dashboard's sessions (web.auth.mount_auth)


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
    error: str | None  # why its latest attempt failed


class JobDetail(JobPublic):
    evaluations: list[dict[str, Any]]


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_./-]+$",
        description="The branch, tag or commit to retrain; the default branch if left out",
    )

    @field_validator("ref")
    @classmethod
    def _not_an_option(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith(("-", "/")) or ".." in value):
            raise ValueError("a ref does not start with '-' or '/' and holds no '..'")
        return value


class RetrainQueued(BaseModel):
    job_id: int
    repository: str
    ref: str


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: CronSchedule = Field(
        max_length=200, description='Five cron fields, e.g. "0 3 * * 1"; null: no schedule'
    )
    timezone: TimeZoneName = Field(default="UTC", max_length=100, description="An IANA time zone")


class ScheduleView(BaseModel):
    repository: str
    default_branch: str
    schedule: str | None
    timezone: str
    source: str  # "config" (modelci.yaml of the default branch) or "server"
    last_slot: str
    config_error: str | None


async def _authorize(request: Request) -> str:
    verifier: TokenVerifier | None = getattr(request.app.state, "tokens", None)
    if verifier is None:  # an app without a token store: nothing can be verified
        raise Unauthorized("this server has no API tokens", hint="run it with `modelci serve`")
    header = request.headers.get("authorization")
    # W1 (issue 14): without a bearer token, a dashboard session cookie signs in
    # (web.auth.api_session checks its repository access and CSRF header).
    if not header and getattr(request.app.state, "signin", None) is not None:
        from modelci.web.auth import api_session

        session_name = await api_session(request)
        if session_name is not None:
            return session_name
    name = verifier.cached(header)
    if name is None:
        name = await run_in_threadpool(verifier.verify, header)
    return name


async def require_token(request: Request, _: _BearerHeader) -> str:
    """The dependency of every ``/api`` route: the name of a valid bearer token, or a 401."""
    return await _authorize(request)


async def predict_auth(request: Request) -> str | None:
    """The dependency of the serving routes: a token only with ``MODELCI_PREDICT_AUTH=token``.

    It declares no security scheme itself: the OpenAPI document asks for a token
    on these routes only when one is required (``serving.http`` adds it then).
    """
    if getattr(request.app.state, "predict_auth", "none") != "token":
        return None
    return await _authorize(request)


async def _guard_api_paths(request: Request) -> None:
    # Every route of the app runs this, so a route added under /api later (by
    # another module, without require_token) still cannot be reached without a token.
    route = request.scope.get("route")
    if str(getattr(route, "path", request.url.path)).startswith("/api/"):
        await _authorize(request)


def _job_public(job: Any, failures: dict[int, store.JobFailure]) -> dict[str, Any]:
    failure = failures.get(job.id)
    return {
        "id": job.id,
        "task": job.task_name,
        "status": str(job.status),
        "queue": job.queue,
        "attempts": job.attempts,
        "args": job.task_kwargs,
        "scheduled_at": job.scheduled_at.isoformat() if job.scheduled_at else None,
        "error": failure.error if failure is not None else None,
    }


def _read_tail(path: FilePath, size: int) -> str:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - size))
        return handle.read().decode(errors="replace")


async def _read_capped(request: Request, cap: int) -> bytes | None:
    """The body, or None as soon as it passes ``cap`` bytes (the rest is never read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)


def _webhook_routes(app: FastAPI, context: ApiContext) -> None:
    @app.post(
        "/webhooks/github",
        status_code=202,
        response_model=DeliveryAccepted,
        responses={200: {"model": DeliveryAccepted}, 400: {}, 401: {}, 413: {}, 503: {}},
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
        signature = request.headers.get(SIGNATURE_HEADER)
        try:
            if signature is None:
                # Refused before the body is read: an unsigned request costs nothing.
                verify_signature(b"", None, context.webhook_secret)
            body = await _read_capped(request, WEBHOOK_MAX_BODY)
            if body is None:
                return JSONResponse(
                    {
                        "detail": f"the body is over {WEBHOOK_MAX_BODY >> 20} MB, GitHub's "
                        "limit for a webhook payload: this is not a GitHub delivery"
                    },
                    status_code=413,
                )
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


def _jobs_router(context: ApiContext) -> APIRouter:
    router = APIRouter(prefix="/api", dependencies=[Depends(require_token)], tags=["jobs"])
    queue = context.queue

    def public(jobs: list[Any]) -> list[dict[str, Any]]:
        with context.database.session() as session:
            failures = store.job_failures(session, job_ids=[j.id for j in jobs])
        return [_job_public(j, failures) for j in jobs]

    def get_job(job_id: int) -> Any:
        try:
            return queue.get_job(job_id)
        except JobNotFound:
            raise HTTPException(404, f"no job {job_id}") from None

    @router.get("/jobs", response_model=list[JobPublic])
    def list_jobs(
        status: JobStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        housekeeping: Annotated[
            bool, Query(description="Include the periodic stalled-job check's runs")
        ] = False,
    ) -> list[dict[str, Any]]:
        return public(queue.list_jobs(status=status, housekeeping=housekeeping, limit=limit))

    @router.get("/jobs/{job_id}", response_model=JobDetail)
    def show_job(job_id: JobId) -> dict[str, Any]:
        (job,) = public([get_job(job_id)])
        with context.database.session() as session:
            evaluations = store.evaluations_for_job(session, job_id=job_id)
        return {**job, "evaluations": evaluations}

    @router.post("/jobs/{job_id}/cancel", response_model=JobPublic, responses={409: {}})
    def cancel_job(job_id: JobId) -> dict[str, Any]:
        get_job(job_id)
        try:
            return public([queue.cancel_job(job_id)])[0]
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from None

    @router.post("/jobs/{job_id}/retry", response_model=JobPublic, responses={409: {}})
    def retry_job(job_id: JobId) -> dict[str, Any]:
        """Run an ended job again: answers the new job (same task and arguments)."""
        get_job(job_id)
        try:
            return public([queue.rerun_job(job_id)])[0]
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from None

    @router.get("/runs/{run_id}/log", response_class=PlainTextResponse)
    def run_log(run_id: RunId) -> str:
        with context.database.session() as session:
            run = store.get_run(session, run_id=run_id)
            log_path = run.log_path if run else None
        if not log_path or not FilePath(log_path).is_file():
            raise HTTPException(404, f"run {run_id} has no log")
        return _read_tail(FilePath(log_path), _LOG_TAIL)

    @router.get("/models/{name:path}/predictions")
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

    return router


def _schedule_view(row: Any) -> dict[str, Any]:
    return {
        "repository": row.repository,
        "default_branch": row.default_branch,
        "schedule": row.cron,
        "timezone": row.timezone,
        "source": row.source,
        "last_slot": row.last_slot.isoformat(),
        "config_error": row.config_error,
    }


def _retrain_router(context: ApiContext) -> APIRouter:
    from modelci.store import schedules

    router = APIRouter(
        prefix="/api/repositories/{owner}/{name}",
        dependencies=[Depends(require_token)],
        tags=["retrains"],
    )
    unknown = (
        "modelci knows a repository once it delivered a push to its default branch; "
        "install the App on it and push, or check the owner/name"
    )

    @router.post(
        "/retrain", status_code=202, response_model=RetrainQueued, responses={404: {}, 409: {}}
    )
    def retrain(
        owner: RepoPart, name: RepoPart, request: RetrainRequest | None = None
    ) -> dict[str, Any]:
        """Queue a retrain of the repository's default branch (or ``ref``)."""
        from modelci.service.retrains import known_retrain

        repository = f"{owner}/{name}"
        job = known_retrain(
            context.database,
            repository,
            trigger="manual",
            actor="api",
            ref=request.ref if request else None,
        )
        if job is None:
            raise HTTPException(404, f"modelci does not know {repository}: {unknown}")
        job_id = context.queue.enqueue_retrain(job)
        if job_id is None:
            raise HTTPException(409, f"a retrain of {repository} at {job.ref} is queued already")
        return {"job_id": job_id, "repository": repository, "ref": job.ref}

    def found(row: Any, repository: str) -> dict[str, Any]:
        if row is None:
            raise HTTPException(404, f"modelci does not know {repository}: {unknown}")
        return _schedule_view(row)

    @router.get("/retrain-schedule", response_model=ScheduleView, responses={404: {}})
    def show_schedule(owner: RepoPart, name: RepoPart) -> dict[str, Any]:
        with context.database.session() as session:
            row = schedules.get_schedule(session, repository=f"{owner}/{name}")
            return found(row, f"{owner}/{name}")

    @router.put("/retrain-schedule", response_model=ScheduleView, responses={404: {}})
    def set_schedule(owner: RepoPart, name: RepoPart, request: ScheduleRequest) -> dict[str, Any]:
        """Set the schedule on the server; it wins over modelci.yaml's until deleted."""
        with context.database.session() as session:
            row = schedules.set_server_schedule(
                session,
                repository=f"{owner}/{name}",
                cron=request.schedule,
                timezone=request.timezone,
            )
            return found(row, f"{owner}/{name}")

    @router.delete("/retrain-schedule", response_model=ScheduleView, responses={404: {}})
    def drop_schedule(owner: RepoPart, name: RepoPart) -> dict[str, Any]:
        """Drop the server's schedule: the next delivered push sets modelci.yaml's."""
        with context.database.session() as session:
            row = schedules.use_config_schedule(session, repository=f"{owner}/{name}")
            return found(row, f"{owner}/{name}")

    return router


def _plot_routes(app: FastAPI, context: ApiContext) -> None:
    @app.get(
        "/plots/retrains/{token}.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {}},
        tags=["retrains"],
    )
    def retrain_plot(token: PlotToken) -> Response:
        """A retrain's metric history (public: the token is the secret, from the comment)."""
        png = plot_png(context.database, token)
        if png is None:
            raise HTTPException(404, "no retrain has this plot")
        # The history up to that retrain never changes.
        return Response(png, media_type="image/png", headers={"cache-control": "max-age=86400"})


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="modelci",
        version="0.1.0",
        description="Webhook receiver and job API of modelci.",
        dependencies=[Depends(_guard_api_paths)],
    )
    app.state.tokens = TokenVerifier(context.database, cache_s=context.token_cache_s)
    app.state.predict_auth = context.predict_auth

    @app.exception_handler(ModelCIError)
    async def _modelci_error(request: Request, exc: ModelCIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(
            {"detail": exc.message, "hint": exc.hint}, status_code=exc.http_status, headers=headers
        )

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    _webhook_routes(app, context)
    app.include_router(_jobs_router(context))
    app.include_router(_retrain_router(context))
    _plot_routes(app, context)
    from modelci.service.drift_api import drift_routes  # it imports predict_auth from here

    drift_routes(app, context.database)
    # The dashboard: its sign-in (/login, /oauth/callback, /logout), then its pages
    # (/ui/, and / redirects there). Imported here: web/ imports predict_auth from here.
    from modelci.web.app import mount_web
    from modelci.web.auth import mount_auth

    mount_auth(app, context)
    mount_web(app, context)
    return app
