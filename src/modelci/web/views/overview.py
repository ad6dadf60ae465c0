"""``/ui/``: repositories, the latest evaluations, deliveries and retrains, failing
jobs, and the served models with their health and drift."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from modelci.service.jobs import HOUSEKEEPING_TASKS
from modelci.store import dashboard
from modelci.web.app import WebContext
from modelci.web.render import UI, page
from modelci.web.summaries import visible_retrains
from modelci.web.views.common import SignedIn, readable_models, readable_repos

__all__ = ["router"]

LATEST = 10


def _served(web: WebContext, name: str) -> dict[str, Any] | None:
    if web.serving is None or name not in web.serving.services:
        return None
    status = web.serving.get(name).status()
    return {"state": status["state"], "version": status["version"]}


def router(web: WebContext) -> APIRouter:
    routes = APIRouter(prefix=UI, include_in_schema=False)

    @routes.get("/", response_class=HTMLResponse)
    def overview(request: Request, viewer: SignedIn) -> HTMLResponse:
        repos = readable_repos(web, viewer)
        models = readable_models(web, viewer)
        allowed = None if repos is None else frozenset(repos)
        with web.database.session() as session:
            known = dashboard.repository_names(session)
            evaluations = dashboard.latest_evaluations(session, repos=repos, limit=LATEST)
            events = dashboard.latest_model_events(session, models=list(models), limit=LATEST)
            retrains = visible_retrains(
                dashboard.latest_retrains(session, limit=LATEST), allowed, LATEST
            )
            failing = dashboard.list_jobs(
                session,
                repos=repos,
                status="failed",
                hidden_tasks=HOUSEKEEPING_TASKS,
                limit=LATEST,
            )
            drift = dashboard.latest_drift(session, models=list(models))
        served = [
            {"name": name, "repo": repo, "serving": _served(web, name), "drift": drift.get(name)}
            for name, repo in models.items()
        ]
        return page(
            request,
            "overview.html",
            viewer=viewer,
            repositories=viewer.visible(known),
            evaluations=evaluations,
            events=events,
            retrains=retrains,
            failing=failing,
            models=served,
        )

    return routes
