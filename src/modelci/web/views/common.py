"""What every page's routes share: the signed-in viewer, the repositories it may read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.responses import RedirectResponse

from modelci.store import dashboard
from modelci.web.app import WebContext
from modelci.web.auth import require_csrf, require_viewer
from modelci.web.identity import Viewer
from modelci.web.summaries import repo_slug

__all__ = [
    "OUTCOMES",
    "CsrfChecked",
    "SignedIn",
    "back_to",
    "model_repository",
    "outcome",
    "readable_models",
    "readable_repos",
]

SignedIn = Annotated[Viewer, Depends(require_viewer)]
CsrfChecked = Depends(require_csrf)


def readable_repos(web: WebContext, viewer: Viewer) -> list[str] | None:
    """The repositories the viewer may read; None for every one (no filter needed)."""
    if viewer.all_access:
        return None
    return sorted(viewer.visible(viewer.repos))


def readable_models(web: WebContext, viewer: Viewer) -> dict[str, str]:
    """Registered models the viewer may read, with their repositories."""
    with web.database.session() as session:
        models = dashboard.model_repositories(session)
    slugs = {name: repo_slug(repo) for name, repo in models.items()}
    return {name: repo for name, repo in sorted(slugs.items()) if viewer.can_read(repo)}


def model_repository(web: WebContext, viewer: Viewer, name: str) -> str:
    """The model's repository; 404 when there is no such model or the viewer may not
    read its repository (the same answer: a name is not revealed)."""
    with web.database.session() as session:
        repo = dashboard.model_repository(session, model_name=name)
    if repo is None or not viewer.can_read(repo_slug(repo)):
        raise HTTPException(404, f"no model named {name!r}")
    return repo_slug(repo)


# What a form did, by code: a page never shows text that came in its URL.
OUTCOMES = {
    "cancelled": "Job {id} cancelled (a running job stops within a second).",
    "retried": "Job {id} queued again as job {new}.",
    "promoted": "Version {id} is the champion now.",
    "rolled_back": "Rolled back: version {id} is the champion again.",
    "retrain_queued": "Retrain queued (job {id}): its report comes on the retrained commit.",
    "retrain_pending": "A retrain of this branch is queued already.",
}


def outcome(done: str | None, ident: str | None, new: str | None) -> str | None:
    """The notice for ``?done=CODE&id=N`` (numbers only), or None."""
    text = OUTCOMES.get(done or "")
    if text is None or not (ident or "").isdigit() or not (new or "0").isdigit():
        return None
    return text.format(id=ident, new=new or "")


def back_to(url: str, done: str, ident: int, new: int | None = None) -> RedirectResponse:
    """After a form: back to the page with what it did (post/redirect/get)."""
    separator = "&" if "?" in url else "?"
    extra = f"&new={new}" if new is not None else ""
    return RedirectResponse(f"{url}{separator}done={done}&id={ident}{extra}", status_code=303)
