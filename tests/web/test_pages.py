"""The dashboard in a real browser (chromium through Playwright): pages load nothing
from outside loopback, a running evaluation's log streams into the page before it
finishes, charts draw, and a job is cancelled through its form."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from modelci.service.pullrequests import RetrainJob
from modelci.store import records
from tests.web import seed
from tests.web.browser import CHROMIUM, browser_page, served
from tests.web.conftest import Site

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium"
)


@pytest.fixture(scope="module")
def base_url(site: Site) -> Iterator[str]:
    with served(site.app) as url:
        yield url


def _loopback_only(page: object, hosts: set[str]) -> None:
    page.on("request", lambda request: hosts.add(urlsplit(request.url).hostname or ""))  # type: ignore[attr-defined]


def test_a_running_evaluations_log_streams_into_the_page(
    as_admin: Site, base_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "head.log"
    log.write_text("installing requirements\n")
    evaluation_id = seed.add_evaluation(
        as_admin.database, repo="acme/pw", running=True, logs={"head": log}, number=3
    )
    hosts: set[str] = set()
    with browser_page() as page:
        _loopback_only(page, hosts)
        page.goto(f"{base_url}/ui/evaluations/{evaluation_id}")
        pre = page.locator("#log-head")
        assert "installing requirements" in pre.inner_text()
        with log.open("a") as handle:
            handle.write("epoch 1 loss 0.42\n")
        page.wait_for_function(
            "document.getElementById('log-head').textContent.includes('epoch 1 loss 0.42')",
            timeout=10_000,
        )
        with as_admin.database.session() as session:
            records.finish_evaluation(
                session,
                evaluation_id=evaluation_id,
                status="succeeded",
                passed=True,
                report={**seed.report_json(0.9, passed=True), "logs": {"head": str(log)}},
            )
        # The stream ends with the evaluation and the page reloads with its comparison.
        page.wait_for_selector("table.comparison", timeout=10_000)
        assert "epoch 1 loss 0.42" in page.locator("#log-head").inner_text()
        assert page.locator("svg.ibar").count() >= 1
    assert hosts == {"127.0.0.1"}, f"requests left loopback: {hosts}"


def test_the_model_chart_draws_and_nothing_loads_from_a_cdn(as_admin: Site, base_url: str) -> None:
    seed.add_model(as_admin.database, name="pw-model", repo="acme/pw", versions=9)
    hosts: set[str] = set()
    with browser_page() as page:
        _loopback_only(page, hosts)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base_url}/ui/models/pw-model")
        page.wait_for_selector("#history-chart canvas", timeout=10_000)
        assert errors == []
        page.goto(f"{base_url}/ui/")
        assert page.locator("a[href='/ui/models/pw-model']").count() >= 1
    assert hosts == {"127.0.0.1"}


def test_a_job_is_cancelled_from_the_jobs_page(as_admin: Site, base_url: str) -> None:
    job_id = as_admin.queue.enqueue_retrain(
        RetrainJob(
            repo="acme/pw",
            ref=f"b{time.time_ns()}",
            clone_url="https://x/acme/pw.git",
            installation_id=None,
            trigger="manual",
            actor="t",
        )
    )
    assert job_id is not None
    with browser_page() as page:
        page.goto(f"{base_url}/ui/jobs?repo=acme/pw")
        page.locator(f"tr[data-job='{job_id}'] button", has_text="Cancel").click()
        page.wait_for_selector(".notice")
        assert f"Job {job_id} cancelled" in page.locator(".notice").inner_text()
    assert str(as_admin.queue.get_job(job_id).status) == "cancelled"
