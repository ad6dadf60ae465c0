"""``/ui/models/{name}``: a model's versions, champion, metric history, events, serving
status and prediction form; promote and roll back with a reason (write access).

The page reads the store only (events, retrains, the prediction log): MLflow is
asked nothing until someone promotes or rolls back, through ``Deliverer``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup

from modelci.errors import BadRequest, ModelCIError
from modelci.store import dashboard
from modelci.web.app import WebContext
from modelci.web.auth import audit, require_repo
from modelci.web.charts import history_series
from modelci.web.identity import Viewer
from modelci.web.render import UI, page
from modelci.web.summaries import model_page
from modelci.web.views.common import CsrfChecked, SignedIn, back_to, model_repository, outcome

__all__ = ["router"]

STATS_WINDOW = dt.timedelta(minutes=5)  # serving rate and latency over this long
EVENTS_SHOWN = 30
# Versions listed unless all are asked for (the chart always has every one): a table
# row costs more to render than anything else on the page.
VERSIONS_SHOWN = 50
Reason = Annotated[str, Form(min_length=1, max_length=1000)]


def _script_json(value: Any) -> Markup:
    """JSON safe inside <script type="application/json"> ("</" cannot close it)."""
    return Markup(json.dumps(value).replace("</", "<\\/"))  # noqa: S704  (escaped here)


def _serving(web: WebContext, name: str) -> dict[str, Any] | None:
    if web.serving is None or name not in web.serving.services:
        return None
    return web.serving.status(name)


def _coerce(raw: str, kind: str) -> Any:
    """A form field's text as the column's type; left as text when it does not parse,
    so that the validator names the field and what it expected."""
    text = raw.strip()
    try:
        if kind in ("long", "integer"):
            return int(text)
        if kind in ("double", "float"):
            return float(text)
    except ValueError:
        return raw
    if kind == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return raw


def _field_errors(
    errors: list[dict[str, Any]], columns: list[str]
) -> tuple[dict[str, str], list[str]]:
    """Each problem next to the column its ``loc`` names; the rest for the whole form."""
    by_field: dict[str, str] = {}
    general: list[str] = []
    for error in errors:
        named = [part for part in error.get("loc", []) if isinstance(part, str) and part in columns]
        message = str(error.get("msg", "invalid"))
        if named:
            by_field.setdefault(named[-1], message)
        else:
            general.append(message)
    return by_field, general


def _said(exc: ModelCIError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


def _model_view(
    web: WebContext, request: Request, viewer: Viewer, name: str, **extra: Any
) -> HTMLResponse:
    repo = model_repository(web, viewer, name)
    since = dt.datetime.now(dt.UTC) - STATS_WINDOW
    with web.database.session() as session:
        events = dashboard.model_events(session, model_name=name)
        stats = dashboard.serving_stats(session, model_name=name, since=since)
    model = model_page(events, shown=EVENTS_SHOWN)
    serving = _serving(web, name)
    status_code = extra.pop("status_code", 200)
    every = extra.pop("all_versions", False)
    return page(
        request,
        "model.html",
        viewer=viewer,
        status_code=status_code,
        name=name,
        repo=repo,
        model=model,
        events=model["events"],
        versions=model["versions"] if every else model["versions"][:VERSIONS_SHOWN],
        writable=viewer.can_write(repo),
        can_change=web.deliverer is not None,
        serving=serving,
        stats=stats,
        history=_script_json(history_series(model["versions_oldest_first"])),
        form=extra.pop("form", {}),
        field_errors=extra.pop("field_errors", {}),
        form_errors=extra.pop("form_errors", []),
        prediction=extra.pop("prediction", None),
        notice=extra.pop("notice", None),
    )


def router(web: WebContext) -> APIRouter:
    routes = APIRouter(prefix=f"{UI}/models", include_in_schema=False)

    def change(viewer: Viewer, name: str) -> str:
        repo = model_repository(web, viewer, name)
        require_repo(viewer, repo, write=True)
        if web.deliverer is None:
            raise HTTPException(503, "this server cannot change champions (no model registry)")
        return repo

    @routes.post("/{name:path}/promote", dependencies=[CsrfChecked])
    def promote(
        name: str,
        viewer: SignedIn,
        version: Annotated[int, Form(ge=1, le=2**31 - 1)],
        reason: Reason,
    ) -> RedirectResponse:
        repo = change(viewer, name)
        assert web.deliverer is not None
        try:
            web.deliverer.promote(name, version, actor=viewer.login, reason=reason)
        except ModelCIError as exc:
            raise HTTPException(409, _said(exc)) from None
        audit(
            web.database,
            viewer=viewer,
            action="model.promote",
            target=f"model:{name}",
            reason=reason,
            details={"version": version, "repository": repo},
        )
        if web.serving is not None:
            web.serving.refresh(name)
        return back_to(f"{UI}/models/{name}", "promoted", version)

    @routes.post("/{name:path}/rollback", dependencies=[CsrfChecked])
    def rollback(name: str, viewer: SignedIn, reason: Reason) -> RedirectResponse:
        repo = change(viewer, name)
        assert web.deliverer is not None
        try:
            chosen = web.deliverer.rollback(name, actor=viewer.login, reason=reason)
        except ModelCIError as exc:
            raise HTTPException(409, _said(exc)) from None
        audit(
            web.database,
            viewer=viewer,
            action="model.rollback",
            target=f"model:{name}",
            reason=reason,
            details={"version": chosen.version, "repository": repo},
        )
        if web.serving is not None:
            web.serving.refresh(name)
        return back_to(f"{UI}/models/{name}", "rolled_back", chosen.version)

    @routes.post("/{name:path}/retrain", dependencies=[CsrfChecked])
    def retrain(name: str, viewer: SignedIn, reason: Reason) -> RedirectResponse:
        """Queue a retrain of the model's repository's default branch (trigger manual),
        as ``POST /api/repositories/{owner}/{name}/retrain`` does."""
        from modelci.service.retrains import known_retrain

        repo = model_repository(web, viewer, name)
        require_repo(viewer, repo, write=True)
        job = known_retrain(web.database, repo, trigger="manual", actor=viewer.login)
        if job is None or web.queue is None:
            raise HTTPException(
                409,
                f"modelci has not seen a push to {repo}'s default branch, so it does not know "
                f"where to clone it from: retrain it with `modelci retrain` instead",
            )
        job_id = web.queue.enqueue_retrain(job)
        audit(
            web.database,
            viewer=viewer,
            action="model.retrain",
            target=f"model:{name}",
            reason=reason,
            details={"repository": repo, "ref": job.ref, "job_id": job_id},
        )
        if job_id is None:
            return back_to(f"{UI}/models/{name}", "retrain_pending", 0)
        return back_to(f"{UI}/models/{name}", "retrain_queued", job_id)

    @routes.post("/{name:path}/predict", response_class=HTMLResponse, dependencies=[CsrfChecked])
    async def predict(name: str, request: Request, viewer: SignedIn) -> HTMLResponse:
        from fastapi.concurrency import run_in_threadpool

        await run_in_threadpool(model_repository, web, viewer, name)
        status = _serving(web, name)
        if status is None or web.serving is None:
            raise HTTPException(409, f"model {name!r} is not served by this server")
        form = await request.form()
        columns = {c["name"]: c["type"] for c in status["columns"]}
        values = {col: str(form.get(f"in.{col}", "")) for col in columns}
        record = {col: _coerce(raw, columns[col]) for col, raw in values.items() if raw != ""}
        outcome_args: dict[str, Any] = {"form": values}
        try:
            result = await web.serving.get(name).predict_async(orjson.dumps({"records": [record]}))
        except BadRequest as exc:
            by_field, general = _field_errors(exc.errors, list(columns))
            outcome_args.update(field_errors=by_field, form_errors=general, status_code=422)
        except ModelCIError as exc:
            outcome_args.update(form_errors=[exc.message], status_code=exc.http_status)
        else:
            outcome_args["prediction"] = {
                "outputs": result.predictions,
                "version": result.version,
                "request_id": result.request_id,
            }
        return await run_in_threadpool(_model_view, web, request, viewer, name, **outcome_args)

    @routes.get("/{name:path}", response_class=HTMLResponse)
    def model(
        name: str,
        request: Request,
        viewer: SignedIn,
        done: str | None = None,
        id: str | None = None,
    ) -> HTMLResponse:
        return _model_view(web, request, viewer, name, notice=outcome(done, id, None))

    return routes
