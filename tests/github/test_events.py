"""Typed events from every recorded sample, and clear errors for broken payloads."""

from __future__ import annotations

import copy

import pytest

from modelci.github import (
    BadDelivery,
    Ignored,
    InstallationEvent,
    PingEvent,
    PullRequestEvent,
    PushEvent,
    classify,
    parse_delivery,
)
from modelci.github.sansio import Delivery
from tests.github.helpers import TEST_SECRET, event_of, load_sample, sample_names, signed_delivery

EXPECTED_TYPES = {
    "pull_request": PullRequestEvent,
    "push": PushEvent,
    "ping": PingEvent,
    "installation": InstallationEvent,
}


def delivered(name: str) -> Delivery:
    headers, body = signed_delivery(name)
    return parse_delivery(headers, body, secret=TEST_SECRET)


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_classifies_to_its_event_type(name: str) -> None:
    event = classify(delivered(name))
    assert type(event) is EXPECTED_TYPES[event_of(name)]
    assert not isinstance(event, Ignored)
    assert event.delivery_id
    assert event.action == load_sample(name).get("action")


def test_labeled_pull_request() -> None:
    event = classify(delivered("pull_request.labeled.json"))
    assert isinstance(event, PullRequestEvent)
    pr = event.pull_request
    assert (event.action, event.label, event.sender, event.installation_id) == (
        "labeled", "bug", "Codertocat", 1,
    )  # fmt: skip
    assert event.number == pr.number == 2
    assert event.repo.full_name == "Codertocat/Hello-World"
    assert event.repo.clone_url == "https://github.com/Codertocat/Hello-World.git"
    assert event.repo.default_branch == "master"
    assert (pr.head_sha, pr.head_ref) == ("ec26c3e57ca3a959ca5aad62de7213c562f8c821", "changes")
    assert (pr.base_sha, pr.base_ref) == ("f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "master")
    assert pr.labels == ("bug",)
    assert not pr.merged
    assert not pr.is_fork
    assert pr.fetch_ref == "refs/pull/2/head"


def test_fork_head_has_the_forks_clone_url() -> None:
    event = classify(delivered("derived/pull_request.labeled.fork.json"))
    assert isinstance(event, PullRequestEvent)
    assert event.pull_request.is_fork
    assert event.pull_request.head_clone_url == "https://github.com/forker/Hello-World.git"
    assert event.repo.clone_url == "https://github.com/Codertocat/Hello-World.git"


def test_deleted_fork_leaves_no_head_clone_url() -> None:
    payload = load_sample("pull_request.synchronize.json")
    payload["pull_request"]["head"]["repo"] = None
    headers, body = signed_delivery(payload, event="pull_request")
    event = classify(parse_delivery(headers, body, secret=TEST_SECRET))
    assert isinstance(event, PullRequestEvent)
    assert event.pull_request.head_clone_url is None
    assert event.pull_request.is_fork


def test_closed_pull_requests_tell_merged_from_abandoned() -> None:
    merged = classify(delivered("derived/pull_request.closed.merged.json"))
    closed = classify(delivered("pull_request.closed.json"))
    assert isinstance(merged, PullRequestEvent)
    assert isinstance(closed, PullRequestEvent)
    assert merged.pull_request.merged
    assert not closed.pull_request.merged
    assert merged.label is None


def test_repository_webhook_has_no_installation() -> None:
    event = classify(delivered("pull_request.opened.no-installation.json"))
    assert isinstance(event, PullRequestEvent)
    assert event.installation_id is None


def test_push_to_default_branch_and_deleted_tag() -> None:
    push = classify(delivered("push.json"))
    tag = classify(delivered("push.tag-deleted.json"))
    assert isinstance(push, PushEvent)
    assert isinstance(tag, PushEvent)
    assert (push.branch, push.to_default_branch, push.deleted) == ("master", True, False)
    assert push.after == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert push.installation_id is not None
    assert (tag.branch, tag.deleted, tag.after) == (None, True, "0" * 40)


def test_pings_from_repository_and_organization_hooks() -> None:
    repo_ping = classify(delivered("ping.json"))
    org_ping = classify(delivered("ping.organization.json"))
    assert isinstance(repo_ping, PingEvent)
    assert isinstance(org_ping, PingEvent)
    assert repo_ping.repo_full_name == "Octocoders/Hello-World"
    assert repo_ping.hook_id == 109948940
    assert repo_ping.zen
    assert org_ping.repo_full_name is None


def test_installation_created() -> None:
    event = classify(delivered("installation.created.json"))
    assert isinstance(event, InstallationEvent)
    assert (event.action, event.installation_id, event.account) == ("created", 957387, "Codertocat")
    assert event.repositories == ("Codertocat/Hello-World",)


def test_unknown_events_are_ignored_with_a_reason() -> None:
    headers, body = signed_delivery({"action": "created", "zen": "x"}, event="issue_comment")
    result = classify(parse_delivery(headers, body, secret=TEST_SECRET))
    assert isinstance(result, Ignored)
    assert (result.event, result.action) == ("issue_comment", "created")
    assert "issue_comment" in result.reason


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("pull_request", "head", "sha"), "lacks 'head.sha'"),
        (("repository", "clone_url"), "lacks 'clone_url'"),
        (("pull_request",), "lacks 'pull_request'"),
    ],
)
def test_missing_fields_name_the_field(path: tuple[str, ...], message: str) -> None:
    payload = copy.deepcopy(load_sample("pull_request.labeled.json"))
    parent = payload
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    headers, body = signed_delivery(payload, event="pull_request")
    with pytest.raises(BadDelivery, match=message):
        classify(parse_delivery(headers, body, secret=TEST_SECRET))


def test_wrong_field_type_is_reported() -> None:
    payload = load_sample("pull_request.labeled.json")
    payload["pull_request"]["number"] = "2"
    headers, body = signed_delivery(payload, event="pull_request")
    with pytest.raises(BadDelivery, match="'number' is a str, expected int"):
        classify(parse_delivery(headers, body, secret=TEST_SECRET))
