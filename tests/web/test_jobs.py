"""/ui/jobs on real Procrastinate jobs: filters, permissions, cancel and retry."""

from __future__ import annotations

import uuid

from modelci.service.pullrequests import RetrainJob
from modelci.store import records
from modelci.web.identity import Viewer
from tests.web.conftest import Site


def _retrain(site: Site, repo: str) -> int:
    job = RetrainJob(
        repo=repo,
        ref=f"branch-{uuid.uuid4().hex[:8]}",
        clone_url=f"https://github.com/{repo}.git",
        installation_id=None,
        trigger="manual",
        actor="test",
    )
    job_id = site.queue.enqueue_retrain(job)
    assert job_id is not None
    return job_id


def _rows(html: str) -> set[int]:
    marker = 'data-job="'
    found, start = set(), 0
    while (start := html.find(marker, start)) >= 0:
        start += len(marker)
        found.add(int(html[start : html.index('"', start)]))
    return found


def test_jobs_are_listed_filtered_and_cancelled_then_retried(as_admin: Site) -> None:
    site = as_admin
    mine, other = _retrain(site, "acme/jobs-a"), _retrain(site, "acme/jobs-b")
    page = site.client.get("/ui/jobs")
    assert page.status_code == 200
    assert {mine, other} <= _rows(page.text)
    only_a = site.client.get("/ui/jobs", params={"repo": "acme/jobs-a"}).text
    assert mine in _rows(only_a) and other not in _rows(only_a)
    todo = site.client.get("/ui/jobs", params={"status": "todo", "kind": "modelci.retrain"}).text
    assert {mine, other} <= _rows(todo)

    csrf = site.csrf("/ui/jobs")
    done = site.client.post(f"/ui/jobs/{mine}/cancel", data={"csrf": csrf})
    assert done.status_code == 303
    assert done.headers["location"] == f"/ui/jobs?done=cancelled&id={mine}"
    assert str(site.queue.get_job(mine).status) == "cancelled"
    shown = site.client.get(done.headers["location"]).text
    assert f"Job {mine} cancelled" in shown
    cancelled = site.client.get("/ui/jobs", params={"status": "cancelled"}).text
    assert mine in _rows(cancelled) and other not in _rows(cancelled)

    again = site.client.post(f"/ui/jobs/{mine}/retry", data={"csrf": csrf})
    assert again.status_code == 303
    new_id = int(again.headers["location"].rsplit("new=", 1)[1])
    assert new_id > mine and str(site.queue.get_job(new_id).status) == "todo"
    twice = site.client.post(f"/ui/jobs/{other}/retry", data={"csrf": csrf})
    assert twice.status_code == 409 and "will run anyway" in twice.text


def test_a_reader_sees_only_its_repositories_jobs_and_no_buttons(site: Site) -> None:
    mine, hidden = _retrain(site, "acme/read-a"), _retrain(site, "acme/read-b")
    csrf = site.csrf("/ui/jobs")
    site.viewer = Viewer(login="bob", kind="github", repos={"acme/read-a": "read"})
    try:
        page = site.client.get("/ui/jobs").text
        assert mine in _rows(page) and hidden not in _rows(page)
        assert "acme/read-b" not in page  # not even the name
        assert f"/ui/jobs/{mine}/cancel" not in page  # read access: no buttons
        assert (
            site.client.get("/ui/jobs", params={"repo": "acme/read-b"}).text.count("data-job=") == 0
        )
        forged = site.client.post(f"/ui/jobs/{mine}/cancel", data={"csrf": csrf})
        assert forged.status_code == 403 and "write access" in forged.text
        unseen = site.client.post(f"/ui/jobs/{hidden}/cancel", data={"csrf": csrf})
        assert unseen.status_code == 404 and "acme/read-b" not in unseen.text
    finally:
        site.viewer = Viewer(login="carol", kind="github", repos={"acme/read-a": "write"})
    try:
        page = site.client.get("/ui/jobs").text
        assert f"/ui/jobs/{mine}/cancel" in page
        assert site.client.post(f"/ui/jobs/{mine}/cancel", data={"csrf": csrf}).status_code == 303
    finally:
        site.viewer = None
    assert str(site.queue.get_job(hidden).status) == "todo"


def test_a_post_without_the_csrf_token_changes_nothing(as_admin: Site) -> None:
    job_id = _retrain(as_admin, "acme/csrf")
    refused = as_admin.client.post(f"/ui/jobs/{job_id}/cancel", data={})
    assert refused.status_code == 403
    assert str(as_admin.queue.get_job(job_id).status) == "todo"


def test_bad_filters_say_what_was_wrong(as_admin: Site) -> None:
    answer = as_admin.client.get("/ui/jobs", params={"status": "exploded"})
    assert answer.status_code == 422 and "status" in answer.text


def test_failed_jobs_show_why(as_admin: Site) -> None:
    job_id = _retrain(as_admin, "acme/failing")
    as_admin.queue.cancel_job(job_id)
    with as_admin.database.session() as session:
        records.record_job_failure(
            session, job_id=job_id, task_name="modelci.retrain", error="boom: exit 1", retried=False
        )
    page = as_admin.client.get("/ui/jobs", params={"repo": "acme/failing"}).text
    assert "boom: exit 1" in page
