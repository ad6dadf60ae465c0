"""``/ui/jobs``: jobs filtered by repository, kind and status (housekeeping hidden),
with cancel and retry for those who may write to the job's repository."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from modelci.service.jobs import (
    HOUSEKEEPING_TASKS,
    TASK_CHECK_DRIFT,
    TASK_CHECK_IMPORTS,
    TASK_DELIVER,
    TASK_DELIVERY,
    TASK_EVALUATE,
    TASK_RETRAIN,
    JobConflict,
    JobNotFound,
)
from modelci.store import dashboard
from modelci.web.app import WebContext
from modelci.web.auth import audit
from modelci.web.identity import Viewer
from modelci.web.render import UI, page
from modelci.web.views.common import CsrfChecked, SignedIn, back_to, outcome, readable_repos

__all__ = ["KINDS", "router"]

# The kinds a person filters by: each task in words. Housekeeping is never listed.
KINDS = {
    TASK_EVALUATE: "evaluation",
    TASK_DELIVER: "delivery",
    TASK_RETRAIN: "retrain",
    TASK_DELIVERY: "webhook",
    TASK_CHECK_IMPORTS: "new-data check",
    TASK_CHECK_DRIFT: "drift check",
}
PAGE = 50
Kind = Literal[
    "modelci.evaluate_pull_request",
    "modelci.deliver_commit",
    "modelci.retrain",
    "modelci.process_delivery",
    "modelci.check_imports",
    "modelci.check_drift",
]
Status = Literal["todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted"]
RepoFilter = Annotated[
    str | None, Query(max_length=201, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]
PENDING = ("todo", "doing")


def _job_repo(web: WebContext, viewer: Viewer, job_id: int, *, write: bool) -> tuple[Any, str]:
    """The job and its repository; 404 unless the viewer may read it, 403 without write."""
    if web.queue is None:
        raise HTTPException(503, "this server runs no job queue")
    try:
        job = web.queue.get_job(job_id)
    except JobNotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    repo = str((job.task_kwargs or {}).get("repo") or "")
    readable = viewer.all_access if not repo else viewer.can_read(repo)
    if not readable:
        raise HTTPException(404, f"no job {job_id}")
    if write and not (viewer.all_access if not repo else viewer.can_write(repo)):
        raise HTTPException(403, f"cancelling or retrying a job of {repo} needs write access to it")
    return job, repo


def router(web: WebContext) -> APIRouter:
    routes = APIRouter(prefix=f"{UI}/jobs", include_in_schema=False)

    @routes.get("", response_class=HTMLResponse)
    def jobs(
        request: Request,
        viewer: SignedIn,
        repo: RepoFilter = None,
        kind: Kind | None = None,
        status: Status | None = None,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        done: Annotated[str | None, Query(max_length=20)] = None,
        id: Annotated[str | None, Query(max_length=20)] = None,
        new: Annotated[str | None, Query(max_length=20)] = None,
    ) -> HTMLResponse:
        repos = readable_repos(web, viewer)
        if repo is not None:
            repos = [repo] if viewer.can_read(repo) else []
        with web.database.session() as session:
            found = dashboard.list_jobs(
                session,
                repos=repos,
                task=kind,
                status=status,
                before_id=before,
                hidden_tasks=HOUSEKEEPING_TASKS,
                limit=PAGE + 1,
            )
            known = viewer.visible(dashboard.repository_names(session))
        shown = found[:PAGE]
        for job in shown:
            repo_of = job["repo"] or ""
            job["kind"] = KINDS.get(job["task"], job["task"])
            job["writable"] = viewer.all_access if not repo_of else viewer.can_write(repo_of)
            job["pending"] = job["status"] in PENDING
        return page(
            request,
            "jobs.html",
            viewer=viewer,
            jobs=shown,
            older=shown[-1]["id"] if len(found) > PAGE else None,
            filters={"repo": repo, "kind": kind, "status": status},
            repositories=known,
            kinds=KINDS,
            statuses=get_args(Status),
            notice=outcome(done, id, new),
        )

    @routes.post("/{job_id}/cancel", dependencies=[CsrfChecked])
    def cancel(job_id: JobId, viewer: SignedIn) -> RedirectResponse:
        _, repo = _job_repo(web, viewer, job_id, write=True)
        assert web.queue is not None
        try:
            web.queue.cancel_job(job_id)
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from None
        audit(
            web.database,
            viewer=viewer,
            action="job.cancel",
            target=f"job:{job_id}",
            reason="",
            details={"repository": repo},
        )
        return back_to(f"{UI}/jobs", "cancelled", job_id)

    @routes.post("/{job_id}/retry", dependencies=[CsrfChecked])
    def retry(job_id: JobId, viewer: SignedIn) -> RedirectResponse:
        _, repo = _job_repo(web, viewer, job_id, write=True)
        assert web.queue is not None
        try:
            again = web.queue.rerun_job(job_id)
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from None
        audit(
            web.database,
            viewer=viewer,
            action="job.retry",
            target=f"job:{job_id}",
            reason="",
            details={"repository": repo, "new_job": again.id},
        )
        return back_to(f"{UI}/jobs", "retried", job_id, again.id)

    return routes
