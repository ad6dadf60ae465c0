"""/ui/: the latest of everything, limited to the repositories the viewer may read."""

from __future__ import annotations

from modelci.web.identity import Viewer
from tests.web import seed
from tests.web.conftest import Site


def test_the_overview_shows_each_kind_of_record_and_hides_other_repositories(site: Site) -> None:
    seen = seed.add_evaluation(site.database, repo="acme/ov-seen", passed=False, number=1)
    hidden = seed.add_evaluation(site.database, repo="acme/ov-hidden", number=2)
    seed.add_model(site.database, name="ov-model", repo="acme/ov-seen", versions=4)
    seed.add_model(site.database, name="ov-secret", repo="acme/ov-hidden", versions=2)
    seed.add_drift(site.database, name="ov-model", windows=3)
    site.viewer = Viewer(login="dora", kind="github", repos={"acme/ov-seen": "read"})
    try:
        page = site.client.get("/ui/")
    finally:
        site.viewer = None
    assert page.status_code == 200
    html = page.text
    assert f'href="/ui/evaluations/{seen}"' in html and "failed gates" in html
    assert f'href="/ui/evaluations/{hidden}"' not in html
    assert "ov-secret" not in html and "acme/ov-hidden" not in html
    assert 'href="/ui/models/ov-model"' in html
    assert "drifted" in html  # the last window of the seeded drift
    assert "schedule" in html  # a retrain's trigger


def test_root_redirects_to_the_dashboard_and_signed_out_goes_to_sign_in(site: Site) -> None:
    root = site.client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    site.viewer = None
    answer = site.client.get("/ui/")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_mounting_again_keeps_one_set_of_routes(site: Site) -> None:
    from modelci.web.app import WebContext, mount_web

    before = len(site.app.router.routes)
    again = mount_web(site.app, WebContext(database=site.database))
    assert again is site.web and len(site.app.router.routes) == before
    assert site.web.settings is not None  # what the first mount knew is kept
