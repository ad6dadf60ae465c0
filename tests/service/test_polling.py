"""Polling mode against the stand-in GitHub and a real (SQLite) store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from modelci.cli import cli
from modelci.errors import ConfigError
from modelci.github import AppAuth, GitHubClient, PullRequestEvent, PushEvent, classify
from modelci.github.sansio import Delivery
from modelci.service.polling import STATE_FILE, Poller, delivery_id
from modelci.service.pullrequests import EvaluationJob, handle_event
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store.db import Database, open_database
from tests.github import conftest as github_fixtures
from tests.github.conftest import APP_ID, INSTALLATION, REPO, GitHub

# The stand-in GitHub's fixtures, shared with tests/github.
app_key = github_fixtures.app_key
standin_server = github_fixtures.standin_server
github = github_fixtures.github

LABEL = "evaluate"


class FakeQueue:
    """Records what was queued, as ProcrastinateQueue.defer_delivery would receive it."""

    def __init__(self) -> None:
        self.deferred: list[str] = []

    def defer_delivery(self, delivery_id: str) -> int | None:
        self.deferred.append(delivery_id)
        return len(self.deferred)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/s.db"
    if request.param == "postgresql":
        server: str = request.getfixturevalue("postgres_url")
        name = f"modelci_poll_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
    db = open_database(Settings(data_dir=tmp_path, database_url=url))
    yield db
    db.close()


@pytest.fixture
def client(github: GitHub) -> Iterator[GitHubClient]:
    with GitHubClient(github.url, AppAuth(APP_ID, github.key.private_pem)) as c:
        yield c


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


def make_poller(
    client: GitHubClient, database: Database, queue: FakeQueue, tmp_path: Path
) -> Poller:
    return Poller(
        github=client,
        database=database,
        queue=queue,
        repositories=[REPO],
        label=LABEL,
        state_path=tmp_path / STATE_FILE,
        interval_s=60,
    )


@pytest.fixture
def poller(client: GitHubClient, database: Database, queue: FakeQueue, tmp_path: Path) -> Poller:
    return make_poller(client, database, queue, tmp_path)


def event_of(database: Database, delivery_id: str) -> PullRequestEvent | PushEvent:
    with database.session() as session:
        stored = store.get_delivery(session, delivery_id=delivery_id)
        assert stored is not None
        assert stored.dispatched_at is not None  # queued, like a webhook delivery
        delivery = Delivery(delivery_id, stored.event, dict(stored.payload))
    event = classify(delivery)
    assert isinstance(event, PullRequestEvent | PushEvent)
    return event


def test_newly_labeled_pull_request_gives_one_labeled_delivery_by_the_labeler(
    github: GitHub, poller: Poller, database: Database, queue: FakeQueue
) -> None:
    github.state.add_pull(REPO, 5, head_sha="c" * 40)
    github.state.add_pull(REPO, 6, labels=("bug",))
    assert poller.poll_once() == []  # nothing labeled with the trigger label yet

    github.state.label_pull(REPO, 5, LABEL, by="alice")
    created = poller.poll_once()

    assert len(created) == 1
    assert queue.deferred == created
    event = event_of(database, created[0])
    assert isinstance(event, PullRequestEvent)
    assert (event.action, event.label, event.sender) == ("labeled", LABEL, "alice")
    assert event.installation_id == INSTALLATION
    assert event.pull_request.head_sha == "c" * 40
    assert event.repo.full_name == REPO
    assert event.repo.clone_url == f"https://github.com/{REPO}.git"
    assert LABEL in event.pull_request.labels


def test_nothing_changed_costs_no_rate_limit_and_stores_nothing(
    github: GitHub, poller: Poller, queue: FakeQueue
) -> None:
    github.state.add_pull(REPO, 5, labels=(LABEL,))
    assert len(poller.poll_once()) == 1
    used = github.state.rate_used_by(INSTALLATION)
    before = len(github.state.requests)

    assert poller.poll_once() == []

    assert github.state.rate_used_by(INSTALLATION) == used  # only 304s were answered
    sent = github.state.requests[before:]
    assert sent and all("if-none-match" in r.headers for r in sent)
    assert len(queue.deferred) == 1


def test_new_head_on_labeled_pull_request_gives_synchronize(
    github: GitHub, poller: Poller, database: Database
) -> None:
    github.state.add_pull(REPO, 5, labels=(LABEL,), author="carol")
    github.state.add_pull(REPO, 6)
    poller.poll_once()

    github.state.push_pull(REPO, 5, "d" * 40)
    github.state.push_pull(REPO, 6, "e" * 40)  # not labeled: nothing to do
    created = poller.poll_once()

    assert len(created) == 1
    event = event_of(database, created[0])
    assert isinstance(event, PullRequestEvent)
    assert event.action == "synchronize"
    assert event.pull_request.head_sha == "d" * 40
    assert event.sender == "carol"  # the API does not name the pusher: the author answers


def test_unlabel_then_relabel(github: GitHub, poller: Poller, database: Database) -> None:
    github.state.add_pull(REPO, 5, labels=(LABEL,))
    first = poller.poll_once()

    github.state.unlabel_pull(REPO, 5, LABEL, by="bob")
    created = poller.poll_once()
    assert len(created) == 1
    event = event_of(database, created[0])
    assert isinstance(event, PullRequestEvent)
    assert (event.action, event.label, event.sender) == ("unlabeled", LABEL, "bob")

    # Applied again on the same commit: a new evaluation, not a duplicate of the first.
    github.state.label_pull(REPO, 5, LABEL, by="alice")
    again = poller.poll_once()
    assert len(again) == 1
    assert again != first
    relabeled = event_of(database, again[0])
    assert (relabeled.action, relabeled.sender) == ("labeled", "alice")


def test_merge_gives_closed_merged_and_a_push_to_the_default_branch(
    github: GitHub, poller: Poller, database: Database
) -> None:
    github.state.add_pull(REPO, 5, head_sha="f" * 40, labels=(LABEL,))
    github.state.add_pull(REPO, 6)
    poller.poll_once()

    github.state.close_pull(REPO, 5, merged=True)
    github.state.close_pull(REPO, 6)
    events = [event_of(database, d) for d in poller.poll_once()]

    closed = {e.pull_request.number: e for e in events if isinstance(e, PullRequestEvent)}
    assert {n: (e.action, e.pull_request.merged) for n, e in closed.items()} == {
        5: ("closed", True),
        6: ("closed", False),
    }
    pushes = [e for e in events if isinstance(e, PushEvent)]
    assert len(pushes) == 1
    assert pushes[0].to_default_branch
    assert (pushes[0].before, pushes[0].after) == ("b" * 40, "f" * 40)
    assert poller.poll_once() == []  # closed ones are forgotten, not reported again


def test_restart_does_not_duplicate(
    github: GitHub,
    client: GitHubClient,
    database: Database,
    queue: FakeQueue,
    tmp_path: Path,
) -> None:
    github.state.add_pull(REPO, 5, labels=(LABEL,))
    assert len(make_poller(client, database, queue, tmp_path).poll_once()) == 1
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["repos"][REPO]["etag"]

    restarted = make_poller(client, database, queue, tmp_path)
    used = github.state.rate_used_by(INSTALLATION)
    assert restarted.poll_once() == []
    # The restart only looks up the repository once (installation and details).
    assert github.state.rate_used_by(INSTALLATION) - used == 1

    # Even with the state lost, the deterministic delivery ids dedupe in the store.
    (tmp_path / STATE_FILE).unlink()
    assert make_poller(client, database, queue, tmp_path).poll_once() == []
    assert len(queue.deferred) == 1


def test_low_quota_pauses_polling_until_the_reset(github: GitHub, poller: Poller) -> None:
    github.state.rate_used[("installation", INSTALLATION)] = 4_550  # 450 of 5,000 left
    github.state.add_pull(REPO, 5, labels=(LABEL,))
    poller.poll_once()
    assert poller.pause_s() > 3000  # the stand-in resets an hour from now
    poller.poll_once()  # 304s only
    assert poller.pause_s() == 60


def test_unreadable_state_starts_over(
    github: GitHub, client: GitHubClient, database: Database, queue: FakeQueue, tmp_path: Path
) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    github.state.add_pull(REPO, 5, labels=(LABEL,))
    assert len(make_poller(client, database, queue, tmp_path).poll_once()) == 1


def test_bad_repository_names_are_refused(
    client: GitHubClient, database: Database, queue: FakeQueue, tmp_path: Path
) -> None:
    for repositories in ([], ["not a repo"]):
        with pytest.raises(ConfigError, match="MODELCI_POLL_REPOSITORIES"):
            Poller(
                github=client,
                database=database,
                queue=queue,
                repositories=repositories,
                label=LABEL,
                state_path=tmp_path / STATE_FILE,
            )


def test_serve_poll_without_repositories_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELCI_POLL_REPOSITORIES", raising=False)
    monkeypatch.setenv("MODELCI_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["serve", "--poll"])
    assert result.exit_code != 0
    assert "MODELCI_POLL_REPOSITORIES" in result.output
    assert "Traceback" not in result.output


class Workflow:
    """The workflow's queue and GitHub actions: real permission checks, recorded effects."""

    def __init__(self, client: GitHubClient) -> None:
        self.client = client
        self.queued: list[EvaluationJob] = []
        self.said: list[str] = []

    def enqueue_evaluation(self, job: EvaluationJob) -> int:
        self.queued.append(job)
        return len(self.queued)

    def cancel_evaluations(self, *, repo: str, number: int) -> int:
        return 0

    def can_write(self, repo: str, username: str, installation_id: int | None) -> bool:
        return self.client.has_write_access(
            repo, username=username, installation_id=installation_id
        )

    def say(self, job_or_pr: object, body: str) -> None:
        self.said.append(body)


def test_the_labelers_permission_decides_as_for_a_webhook(
    github: GitHub, poller: Poller, database: Database, client: GitHubClient
) -> None:
    github.state.set_role(REPO, "maintainer", "write")
    github.state.set_role(REPO, "drive-by", "triage")  # may label, may not run code
    github.state.add_pull(REPO, 5, labels=(LABEL,), labeled_by="maintainer")
    github.state.add_pull(REPO, 6, labels=(LABEL,), labeled_by="drive-by")
    workflow = Workflow(client)

    outcomes = {}
    for created in poller.poll_once():
        event = event_of(database, created)
        outcomes[event.pull_request.number] = handle_event(  # type: ignore[union-attr]
            event, label=LABEL, queue=workflow, github=workflow
        ).action

    assert outcomes == {5: "queued", 6: "refused"}
    assert [job.number for job in workflow.queued] == [5]
    assert workflow.queued[0].installation_id == INSTALLATION
    assert any("drive-by" in said for said in workflow.said)


def test_long_delivery_ids_are_hashed_to_fit_the_store() -> None:
    short = "poll:octo/model#5:labeled:1001"
    assert delivery_id(short) == short
    long = "poll:" + "o" * 39 + "/" + "n" * 100 + "#5:closed:" + "a" * 40
    assert len(delivery_id(long)) <= 100
    assert delivery_id(long) == delivery_id(long) != delivery_id(long + "b")
