"""Webhook signature and delivery parsing; rate-limit and error decisions."""

from __future__ import annotations

import json

import pytest

from modelci.errors import ConfigError
from modelci.github import BadDelivery, GitHubError, InvalidSignature, parse_delivery
from modelci.github.sansio import error_from_response, rate_limit_wait, sign, verify_signature
from tests.github.helpers import TEST_SECRET, signed_delivery

VECTOR_SECRET = b"It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_signature_matches_githubs_test_vector() -> None:
    assert sign(VECTOR_BODY, VECTOR_SECRET) == VECTOR_SIGNATURE
    verify_signature(VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_SECRET)
    # Hex case and surrounding blanks do not matter.
    verify_signature(
        VECTOR_BODY, f"  {VECTOR_SIGNATURE.upper().replace('SHA256', 'sha256')} ", VECTOR_SECRET
    )


def test_tampered_body_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(b"Hello, World?", VECTOR_SIGNATURE, VECTOR_SECRET)


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not match") as caught:
        verify_signature(VECTOR_BODY, VECTOR_SIGNATURE, b"another secret")
    assert caught.value.http_status == 401
    assert "How to fix" in str(caught.value)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_signature_is_refused(header: str | None) -> None:
    with pytest.raises(InvalidSignature, match="no X-Hub-Signature-256 header"):
        verify_signature(VECTOR_BODY, header, VECTOR_SECRET)


@pytest.mark.parametrize(
    "header",
    [
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha1=0123456789abcdef0123456789abcdef01234567",
        "sha256=757107ea",
        "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    ],
)
def test_malformed_signature_is_refused(header: str) -> None:
    with pytest.raises(InvalidSignature, match="malformed"):
        verify_signature(VECTOR_BODY, header, VECTOR_SECRET)


def test_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="secret is empty"):
        verify_signature(VECTOR_BODY, VECTOR_SIGNATURE, b"")


def test_parse_delivery_reads_a_real_sample() -> None:
    headers, body = signed_delivery("pull_request.labeled.json", delivery_id="abc-123")
    delivery = parse_delivery(headers, body, secret=TEST_SECRET)
    assert (delivery.delivery_id, delivery.event, delivery.action) == (
        "abc-123",
        "pull_request",
        "labeled",
    )
    assert delivery.hook_id == "109948940"
    assert delivery.payload["number"] == 2


def test_header_names_are_case_insensitive() -> None:
    headers, body = signed_delivery("ping.json")
    lowered = {k.lower(): v for k, v in headers.items()}
    upper = {k.upper(): v for k, v in headers.items()}
    assert parse_delivery(lowered, body, secret=TEST_SECRET).event == "ping"
    assert parse_delivery(upper, body, secret=TEST_SECRET).event == "ping"


def test_form_encoded_delivery_is_accepted() -> None:
    headers, body = signed_delivery("push.json", form=True)
    delivery = parse_delivery(headers, body, secret=TEST_SECRET)
    assert delivery.payload["ref"] == "refs/heads/master"


def test_signature_is_checked_before_the_body_is_parsed() -> None:
    headers, _ = signed_delivery("ping.json")
    with pytest.raises(InvalidSignature):
        parse_delivery(headers, b"{not json", secret=TEST_SECRET)


def _resign(headers: dict[str, str], body: bytes) -> dict[str, str]:
    return {**headers, "X-Hub-Signature-256": sign(body, TEST_SECRET)}


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("X-GitHub-Delivery", "no X-GitHub-Delivery header"),
        ("X-GitHub-Event", "no X-GitHub-Event header"),
        ("Content-Type", "no Content-Type header"),
    ],
)
def test_missing_headers_are_bad_deliveries(drop: str, message: str) -> None:
    headers, body = signed_delivery("ping.json")
    del headers[drop]
    with pytest.raises(BadDelivery, match=message) as caught:
        parse_delivery(headers, body, secret=TEST_SECRET)
    assert caught.value.http_status == 400
    assert caught.value.hint


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", b"{not json", "not valid JSON"),
        ("application/json", b"\xff\xfe", "not valid JSON"),
        ("application/json", b"[1, 2]", "is a list, not an object"),
        ("application/json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not valid JSON"),
        ("text/plain", b"{}", "content type 'text/plain'"),
        ("application/x-www-form-urlencoded", b"other=1", "no 'payload' field"),
    ],
)
def test_unusable_bodies_are_bad_deliveries(content_type: str, body: bytes, message: str) -> None:
    headers, _ = signed_delivery("ping.json")
    headers["Content-Type"] = content_type
    with pytest.raises(BadDelivery, match=message):
        parse_delivery(_resign(headers, body), body, secret=TEST_SECRET)


def test_json_content_type_with_charset_is_accepted() -> None:
    headers, body = signed_delivery("ping.json")
    headers["Content-Type"] = "application/json; charset=utf-8"
    assert parse_delivery(headers, body, secret=TEST_SECRET).event == "ping"


# -- rate limits and errors -------------------------------------------------------------


def test_retry_after_comes_first() -> None:
    headers = {"Retry-After": "7", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "2000"}
    assert rate_limit_wait(403, headers, "", now=1000) == 7


def test_exhausted_quota_waits_until_reset() -> None:
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1100"}
    assert rate_limit_wait(403, headers, "API rate limit exceeded", now=1000) == 101
    assert rate_limit_wait(429, headers, "", now=1200) == 1  # reset already passed


def test_secondary_limit_backs_off_exponentially_from_a_minute() -> None:
    message = "You have exceeded a secondary rate limit."
    waits = [rate_limit_wait(403, {}, message, now=0, secondary_attempt=n) for n in range(3)]
    assert waits == [60, 120, 240]
    assert rate_limit_wait(429, {}, "", now=0) == 60


def test_permission_errors_are_not_rate_limits() -> None:
    assert rate_limit_wait(403, {}, "Resource not accessible by integration", now=0) is None
    assert rate_limit_wait(404, {"retry-after": "5"}, "", now=0) is None


def test_error_carries_githubs_message_and_docs() -> None:
    body = json.dumps(
        {
            "message": "Validation Failed",
            "errors": [{"resource": "IssueComment", "code": "unprocessable", "field": "data",
                        "message": "Body is too long (maximum is 65536 characters)"}],
            "documentation_url": "https://docs.github.com/rest/issues/comments#create-an-issue-comment",
        }
    ).encode()  # fmt: skip
    error = error_from_response("POST", "/repos/o/r/issues/1/comments", 422, body)
    assert isinstance(error, GitHubError)
    assert error.status == 422
    assert error.github_message == "Validation Failed"
    assert error.documentation_url
    assert error.documentation_url.endswith("create-an-issue-comment")
    assert "Body is too long" in error.message
    assert error.errors[0]["field"] == "data"


def test_error_without_json_body_still_says_what_failed() -> None:
    error = error_from_response("GET", "/x", 502, b"<html>bad gateway</html>")
    assert error.status == 502
    assert error.github_message is None
    assert "502" in error.message
    assert "retry later" in str(error)
