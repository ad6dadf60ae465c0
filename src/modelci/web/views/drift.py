"""``/ui/models/{name}/drift``: the latest drift report (each column's test, score,
threshold and verdict, the live metric) and the share of drifted columns over time.

The same data as ``service.drift_api`` (``/api/models/{name}/drift``), read from
the store; registered before the model page, whose ``{name:path}`` would take
``NAME/drift`` for a model's name otherwise.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from modelci.store import dashboard
from modelci.store import monitoring as monitoring_store
from modelci.web.app import WebContext
from modelci.web.charts import drift_series
from modelci.web.render import UI, page
from modelci.web.views.common import SignedIn, model_repository

__all__ = ["HISTORY", "router"]

HISTORY = 100  # windows in the chart


def _latest(web: WebContext, name: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    from modelci.monitor.watch import live_for_report

    with web.database.session() as session:
        history = dashboard.drift_history(session, model_name=name, limit=HISTORY)
        found = monitoring_store.list_drift_reports(session, model_name=name, limit=1)
        if not found:
            return None, history
        record = found[0]
        live = [metric.as_json() for metric in live_for_report(session, name, record.report)]
        return {"report": dict(record.report), "live": live, **history[0]}, history


def router(web: WebContext) -> APIRouter:
    routes = APIRouter(prefix=f"{UI}/models", include_in_schema=False)

    @routes.get("/{name:path}/drift", response_class=HTMLResponse)
    def drift(name: str, request: Request, viewer: SignedIn) -> HTMLResponse:
        repo = model_repository(web, viewer, name)
        latest, history = _latest(web, name)
        series = json.dumps(drift_series(history)).replace("</", "<\\/")
        return page(
            request,
            "drift.html",
            viewer=viewer,
            name=name,
            repo=repo,
            latest=latest,
            history=history,
            series=Markup(series),  # noqa: S704  (JSON with "</" escaped)
        )

    return routes
