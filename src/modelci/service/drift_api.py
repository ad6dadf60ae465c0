"""The drift routes: a model's latest drift report as a page and as JSON.

- ``GET /api/models/{name}/drift``: the latest report (each column's test,
  score, threshold, verdict and distributions), the drift share over the last
  windows, and each window's live metric recomputed with the labels in by now.
  A bearer token, as every ``/api`` route.
- ``GET /models/{name}/drift``: the same as a self-contained HTML page
  (``monitor.report.render_html``: inline SVG, no CDN), asked for a token only
  with ``MODELCI_PREDICT_AUTH=token``, as the model's other pages.

Registered before the serving routes, whose ``/models/{name:path}`` would take
``NAME/drift`` for a model's name otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from modelci.service.api import predict_auth

if TYPE_CHECKING:
    from modelci.store.db import Database

__all__ = ["drift_routes"]

HISTORY = 50  # windows in the "drift over time" chart
_HISTORY_FIELDS = ("id", "version", "window_end", "rows", "share_drifted", "drifted", "live")


def _reports(database: Database, name: str, limit: int) -> list[dict[str, Any]]:
    from modelci.monitor.watch import live_for_report
    from modelci.store import monitoring as store

    with database.session() as session:
        rows = store.list_drift_reports(session, model_name=name, limit=limit)
        out = []
        for row in rows:
            live = live_for_report(session, name, row.report)
            out.append(
                {
                    "id": row.id,
                    "version": row.version,
                    "window_start": row.window_start.isoformat() if row.window_start else None,
                    "window_end": row.window_end.isoformat() if row.window_end else None,
                    "rows": row.rows,
                    "share_drifted": row.share_drifted,
                    "drifted": row.drifted,
                    "live": [metric.as_json() for metric in live],
                    "report": row.report,
                }
            )
        return out


def _latest(database: Database, name: str, limit: int) -> list[dict[str, Any]]:
    found = _reports(database, name, limit)
    if not found:
        raise HTTPException(
            404,
            f"no drift report for model {name!r} yet: windows are checked once the champion "
            "has served monitoring.window rows (and was registered with reference data)",
        )
    return found


def drift_routes(app: FastAPI, database: Database) -> None:
    @app.get("/api/models/{name:path}/drift", tags=["monitoring"], summary="A model's drift")
    def drift_json(name: str, windows: int = Query(default=20, ge=1, le=500)) -> dict[str, Any]:
        found = _latest(database, name, windows)
        latest = found[0]
        return {
            "model": name,
            "latest": latest,
            "history": [
                {
                    k: r[k]
                    for k in (
                        "id",
                        "version",
                        "window_end",
                        "rows",
                        "share_drifted",
                        "drifted",
                        "live",
                    )
                }
                for r in found
            ],
        }

    @app.get(
        "/models/{name:path}/drift",
        tags=["monitoring"],
        summary="A model's drift report (HTML)",
        response_class=HTMLResponse,
        dependencies=[Depends(predict_auth)],
    )
    def drift_page(name: str) -> HTMLResponse:
        from modelci.monitor.report import render_html
        from modelci.monitor.verdicts import DriftReport

        found = _latest(database, name, HISTORY)
        report = DriftReport.from_json(found[0]["report"])
        history = [
            (r["window_end"] or f"#{r['id']}", float(r["share_drifted"])) for r in reversed(found)
        ]
        return HTMLResponse(render_html(report, history=history))
