"""``/ui/evaluations/{id}``: a pull request's evaluation — the comparison table with
each interval drawn around zero, both runs' phases and times, and each side's log,
streamed as server-sent events while it runs and kept afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, StreamingResponse
from markupsafe import Markup

from modelci.store import dashboard
from modelci.web.app import WebContext
from modelci.web.auth import require_repo
from modelci.web.charts import interval_bar
from modelci.web.identity import Viewer
from modelci.web.logstream import read_from, sse_event, tail
from modelci.web.render import UI, page
from modelci.web.summaries import phases
from modelci.web.views.common import SignedIn

__all__ = ["POLL_S", "router"]

POLL_S = 0.5  # how often a stream looks for new lines, and whether the run ended
EvaluationId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Role = Literal["head", "base"]


def _visible(web: WebContext, viewer: Viewer, evaluation_id: int) -> dict[str, Any]:
    with web.database.session() as session:
        found = dashboard.evaluation_detail(session, evaluation_id=evaluation_id)
    if found is None:
        raise HTTPException(404, f"no evaluation {evaluation_id}")
    require_repo(viewer, found["repo"])
    return found


def _metric_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for metric in report.get("metrics") or []:
        ci = metric.get("ci") or {}
        bar = interval_bar(
            ci.get("low"), ci.get("high"), metric.get("delta"), direction=metric.get("direction")
        )
        rows.append({**metric, "ci": ci, "bar": Markup(bar)})  # noqa: S704  (numbers only)
    return rows


def _sides(found: dict[str, Any]) -> list[dict[str, Any]]:
    report = found["report"]
    sides = report.get("sides") or {}
    logs = report.get("logs") or {}
    out = []
    for role in ("head", "base"):
        side = sides.get(role) or {}
        run = found["runs"].get(role) or {}
        timings = side.get("timings") or run.get("timings") or {}
        path = logs.get(role) or side.get("log") or run.get("log_path")
        text, size, cut = tail(FilePath(path)) if path else ("", 0, False)
        out.append(
            {
                "role": role,
                "sha": found["head_sha"] if role == "head" else found["base_sha"],
                "phases": phases(timings),
                "skipped": side.get("skipped"),
                "reused_from": side.get("reused_from"),
                "error": side.get("error") or run.get("error"),
                "has_log": bool(path),
                "log": text,
                "log_size": size,
                "log_cut": cut,
            }
        )
    return out


def router(web: WebContext) -> APIRouter:
    routes = APIRouter(prefix=f"{UI}/evaluations", include_in_schema=False)

    @routes.get("/{evaluation_id}", response_class=HTMLResponse)
    def evaluation(evaluation_id: EvaluationId, request: Request, viewer: SignedIn) -> HTMLResponse:
        found = _visible(web, viewer, evaluation_id)
        report = found["report"]
        return page(
            request,
            "evaluation.html",
            viewer=viewer,
            e=found,
            report=report,
            metrics=_metric_rows(report),
            sides=_sides(found),
            github=web.github_url.rstrip("/"),
        )

    @routes.get("/{evaluation_id}/logs/{role}")
    async def log_stream(
        evaluation_id: EvaluationId,
        role: Role,
        request: Request,
        viewer: SignedIn,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> StreamingResponse:
        await run_in_threadpool(_visible, web, viewer, evaluation_id)
        resumed = request.headers.get("last-event-id", "")
        start = int(resumed) if resumed.isdigit() else offset

        def state() -> tuple[str, str | None]:
            with web.database.session() as session:
                found = dashboard.evaluation_status(session, evaluation_id=evaluation_id)
            if found is None:
                return "gone", None
            status, report = found
            return status, (report.get("logs") or {}).get(role)

        async def events() -> AsyncIterator[str]:
            position = start
            while not await request.is_disconnected():
                status, path = await run_in_threadpool(state)
                running = status == "running"
                if path is not None:
                    text, position = await run_in_threadpool(
                        read_from, FilePath(path), position, final=not running
                    )
                    if text:
                        yield sse_event("log", text, event_id=position)
                        continue  # more may be waiting: read again before sleeping
                if not running:
                    yield sse_event("end", status)
                    return
                await asyncio.sleep(POLL_S)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return routes
