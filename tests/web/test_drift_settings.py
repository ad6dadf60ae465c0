"""/ui/models/{name}/drift and /ui/settings."""

from __future__ import annotations

import json

from modelci.web.identity import Viewer
from tests.web import seed
from tests.web.conftest import Site


def test_the_drift_page_shows_the_latest_report_and_the_history(site: Site) -> None:
    seed.add_model(site.database, name="drifty", repo="acme/drift", versions=1)
    seed.add_drift(site.database, name="drifty", windows=5)
    site.viewer = Viewer(login="ivy", kind="github", repos={"acme/drift": "read"})
    try:
        page = site.client.get("/ui/models/drifty/drift")
        assert page.status_code == 200
        html = page.text
        assert 'badge bad">drifted' in html  # the last window drifted
        assert "Wasserstein distance (normed)" in html and "income" in html
        start = html.index('id="drift-data">') + len('id="drift-data">')
        series = json.loads(html[start : html.index("</script>", start)])
        assert len(series["x"]) == 5 and series["drifted"][-1] is True
        assert series["x"] == sorted(series["x"])  # oldest first
        assert site.client.get("/ui/models/drifty").status_code == 200  # not taken for drift
        site.viewer = Viewer(login="jo", kind="github", repos={"acme/other": "read"})
        assert site.client.get("/ui/models/drifty/drift").status_code == 404
    finally:
        site.viewer = None


def test_a_model_without_reports_says_when_they_come(as_admin: Site) -> None:
    seed.add_model(as_admin.database, name="calm", repo="acme/drift", versions=1)
    html = as_admin.client.get("/ui/models/calm/drift").text
    assert "No drift report yet" in html and "monitoring.window" in html


def test_settings_show_the_doctor_checks_to_administrators_only(site: Site) -> None:
    site.viewer = Viewer(login="kim", kind="github", repos={"acme/a": "write"})
    try:
        assert site.client.get("/ui/settings").status_code == 403
        site.viewer = Viewer(login="lea", kind="github", repos={"acme/a": "admin"})
        page = site.client.get("/ui/settings")
        assert page.status_code == 200
        assert "database" in page.text and "sandbox" in page.text.lower()
        assert "MODELCI_GITHUB_APP_ID" in page.text  # GitHub not configured: how to
    finally:
        site.viewer = None
