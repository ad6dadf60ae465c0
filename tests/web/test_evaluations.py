"""/ui/evaluations/{id}: the comparison with interval bars, phases, and logs streamed
as server-sent events while the evaluation runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from modelci.store import records
from modelci.web.identity import Viewer
from tests.web import seed
from tests.web.conftest import Site


def test_a_finished_evaluation_shows_its_comparison_phases_and_log(
    as_admin: Site, tmp_path: Path
) -> None:
    log = tmp_path / "head.log"
    log.write_text("epoch 1 loss 0.5\nepoch 2 loss 0.4\n")
    evaluation_id = seed.add_evaluation(
        as_admin.database, repo="acme/ev", passed=False, logs={"head": log}, number=7
    )
    page = as_admin.client.get(f"/ui/evaluations/{evaluation_id}")
    assert page.status_code == 200
    html = page.text
    assert "failed gates" in html
    assert '<svg class="ibar ibar-bad"' in html  # accuracy fell, interval below zero
    assert "epoch 2 loss 0.4" in html
    assert "training" in html and "2.5" in html  # a phase and its seconds
    assert 'href="https://github.com/acme/ev/commit/' in html
    assert "data-stream" not in html  # finished: nothing streams


def test_a_viewer_without_access_gets_404(site: Site) -> None:
    evaluation_id = seed.add_evaluation(site.database, repo="acme/ev-secret", number=8)
    site.viewer = Viewer(login="hal", kind="github", repos={"acme/ev": "admin"})
    try:
        answer = site.client.get(f"/ui/evaluations/{evaluation_id}")
        assert answer.status_code == 404 and "acme/ev-secret" not in answer.text
        stream = site.client.get(f"/ui/evaluations/{evaluation_id}/logs/head")
        assert stream.status_code == 404
    finally:
        site.viewer = None


def test_the_log_streams_while_running_and_the_stream_ends_with_the_evaluation(
    as_admin: Site, tmp_path: Path
) -> None:
    log = tmp_path / "live.log"
    log.write_text("starting\n")
    evaluation_id = seed.add_evaluation(
        as_admin.database, repo="acme/ev-live", running=True, logs={"head": log}, number=9
    )
    page = as_admin.client.get(f"/ui/evaluations/{evaluation_id}").text
    assert "data-stream" in page and "starting" in page

    def run_on() -> None:
        time.sleep(0.3)
        with log.open("a") as handle:
            handle.write("epoch 1 ")  # half a line: not sent until it is whole
            handle.flush()
            time.sleep(0.6)
            handle.write("loss 0.3\n")
        time.sleep(0.6)
        with as_admin.database.session() as session:
            records.finish_evaluation(
                session, evaluation_id=evaluation_id, status="succeeded", passed=True
            )

    writer = threading.Thread(target=run_on)
    writer.start()
    offset = len("starting\n")
    received: list[str] = []
    started = time.monotonic()
    with as_admin.client.stream(
        "GET", f"/ui/evaluations/{evaluation_id}/logs/head", params={"offset": offset}
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            received.append(line)
            if line == "event: end":
                break
    writer.join()
    assert time.monotonic() - started < 10
    text = "\n".join(received)
    assert "data: epoch 1 loss 0.3" in text  # one whole line, in one event
    assert "starting" not in text  # from the offset on
    whole = len("epoch 1 loss 0.3\n")
    assert f"id: {offset + whole}" in text
    assert received[-1] == "event: end"
