"""Pure functions over GitHub's HTTP messages: no sockets, no clocks, no sleeping.

Webhook side: :func:`verify_signature` and :func:`parse_delivery` turn the raw
headers and body of a delivery into a :class:`Delivery` (the typed events are
in :mod:`modelci.github.events`). REST side: :func:`rate_limit_wait` decides
how long a rate-limited response asks us to wait, :func:`error_from_response`
turns an error response into a :class:`GitHubError`.

Modelled on gidgethub's ``sansio`` module, so the web layer and the tests can
use these without any HTTP library.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelci.errors import ConfigError
from modelci.github.errors import BadDelivery, GitHubError, InvalidSignature

__all__ = [
    "SIGNATURE_HEADER",
    "Delivery",
    "error_from_response",
    "lower_headers",
    "parse_delivery",
    "rate_limit_wait",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE = re.compile(r"^sha256=([0-9a-f]{64})$")
_SETTINGS_HINT = (
    "the webhook secret in the GitHub App's settings must equal MODELCI_GITHUB_WEBHOOK_SECRET"
)


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with lower-case names: HTTP header names are case-insensitive."""
    return {name.lower(): value for name, value in headers.items()}


def sign(body: bytes, secret: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, signature_header: str | None, secret: bytes) -> None:
    """Check that ``body`` was signed with ``secret``; raise :class:`InvalidSignature` if not.

    Only SHA-256 is accepted: the legacy SHA-1 ``X-Hub-Signature`` is weaker and
    GitHub always sends both.
    """
    if not secret:
        # An empty key would make any body "verify" against a forger's HMAC.
        raise ConfigError(
            "the GitHub webhook secret is empty",
            hint="set MODELCI_GITHUB_WEBHOOK_SECRET to the secret configured in the GitHub App",
        )
    if signature_header is None or not signature_header.strip():
        raise InvalidSignature(
            f"the delivery has no {SIGNATURE_HEADER} header, so it cannot be authenticated",
            hint="set a webhook secret in the GitHub App's settings (GitHub signs only then); "
            + _SETTINGS_HINT,
        )
    match = _SIGNATURE.match(signature_header.strip().lower())
    if match is None:
        raise InvalidSignature(
            f"the {SIGNATURE_HEADER} header is malformed: expected 'sha256=' and 64 hex digits",
            hint="make sure a proxy in front of modelci passes the header through unchanged",
        )
    if not hmac.compare_digest(sign(body, secret), "sha256=" + match.group(1)):
        raise InvalidSignature(
            "the delivery's signature does not match its body: wrong secret or altered body",
            hint=_SETTINGS_HINT + "; the body must reach modelci byte for byte as GitHub sent it",
        )


@dataclass(frozen=True)
class Delivery:
    """One authenticated webhook delivery.

    ``delivery_id`` is GitHub's ``X-GitHub-Delivery`` GUID; a redelivery keeps
    it, so it is the key to make handling idempotent.
    """

    delivery_id: str
    event: str
    payload: dict[str, Any] = field(repr=False)
    hook_id: str | None = None

    @property
    def action(self) -> str | None:
        action = self.payload.get("action")
        return action if isinstance(action, str) else None


def _decode_payload(content_type: str, body: bytes) -> object:
    media_type = content_type.split(";", 1)[0].strip().lower()
    try:
        if media_type == "application/json":
            return json.loads(body)
        if media_type == "application/x-www-form-urlencoded":
            form = urllib.parse.parse_qs(body.decode("utf-8"), strict_parsing=False)
            if "payload" not in form:
                raise BadDelivery(
                    "the form-encoded delivery has no 'payload' field",
                    hint="set the webhook content type to application/json in the App's settings",
                )
            return json.loads(form["payload"][0])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadDelivery(
            f"the delivery body is not valid JSON: {exc}",
            hint="only GitHub's own deliveries are expected on this URL",
        ) from exc
    except RecursionError as exc:
        raise BadDelivery("the delivery body is nested too deeply to parse") from exc
    raise BadDelivery(
        f"the delivery has content type {content_type!r}; expected application/json",
        hint="set the webhook content type to application/json in the GitHub App's settings",
    )


def parse_delivery(headers: Mapping[str, str], body: bytes, *, secret: bytes) -> Delivery:
    """Authenticate and decode a delivery from its raw headers and body.

    The signature is checked before anything else is looked at, so nothing
    from an unauthenticated request reaches the JSON parser.
    """
    lowered = lower_headers(headers)
    verify_signature(body, lowered.get(SIGNATURE_HEADER.lower()), secret)
    delivery_id = lowered.get("x-github-delivery", "").strip()
    if not delivery_id:
        raise BadDelivery(
            "the delivery has no X-GitHub-Delivery header",
            hint="only GitHub's own deliveries are expected on this URL",
        )
    event = lowered.get("x-github-event", "").strip()
    if not event:
        raise BadDelivery(
            "the delivery has no X-GitHub-Event header",
            hint="only GitHub's own deliveries are expected on this URL",
        )
    content_type = lowered.get("content-type", "").strip()
    if not content_type:
        raise BadDelivery(
            "the delivery has no Content-Type header",
            hint="set the webhook content type to application/json in the GitHub App's settings",
        )
    payload = _decode_payload(content_type, body)
    if not isinstance(payload, dict):
        raise BadDelivery(
            f"the delivery's JSON is a {type(payload).__name__}, not an object",
            hint="only GitHub's own deliveries are expected on this URL",
        )
    return Delivery(
        delivery_id=delivery_id,
        event=event,
        payload=payload,
        hook_id=lowered.get("x-github-hook-id"),
    )


# -- REST responses -----------------------------------------------------------------


def _is_secondary_limit(message: str) -> bool:
    lowered = message.lower()
    return "secondary rate limit" in lowered or "abuse" in lowered


def rate_limit_wait(
    status: int,
    headers: Mapping[str, str],
    message: str,
    *,
    now: float,
    secondary_attempt: int = 0,
) -> float | None:
    """Seconds to wait before retrying, or ``None`` when the response is no rate limit.

    Follows GitHub's documented order: ``retry-after``; else, with
    ``x-ratelimit-remaining: 0``, until ``x-ratelimit-reset``; else, for a
    secondary limit, at least a minute, doubling with each further attempt.
    A 403 that is none of these is a permission error and is not retried.
    """
    if status not in (403, 429):
        return None
    lowered = lower_headers(headers)
    retry_after = lowered.get("retry-after", "").strip()
    if retry_after.isdigit():
        return float(retry_after)
    if lowered.get("x-ratelimit-remaining", "").strip() == "0":
        try:
            reset = float(lowered["x-ratelimit-reset"])
        except (KeyError, ValueError):
            reset = now + 60.0
        # One second of slack: the reset time is rounded to whole seconds.
        return max(0.0, reset - now) + 1.0
    if status == 429 or _is_secondary_limit(message):
        return 60.0 * 2.0**secondary_attempt
    return None


_HINTS = {
    401: "the credentials were refused: check the App id and private key, or the token "
    "(installation tokens expire after an hour), and that this machine's clock is right "
    "(App JWTs are only valid for ten minutes)",
    403: "the App or token lacks a permission this call needs: grant it in the App's settings "
    "(issues, pull requests, checks, commit statuses: write; metadata, contents: read)",
    404: "the repository does not exist or the App is not installed on it",
    422: "GitHub rejected the request's content; see the errors above",
}


def _describe_errors(errors: list[Any]) -> str:
    parts = []
    for error in errors:
        if isinstance(error, dict):
            text = error.get("message") or " ".join(
                str(error[k]) for k in ("resource", "field", "code") if k in error
            )
            parts.append(str(text))
        else:
            parts.append(str(error))
    return "; ".join(parts)


def error_from_response(
    method: str, path: str, status: int, body: bytes, *, cls: type[GitHubError] = GitHubError
) -> GitHubError:
    """The error to raise for an unsuccessful response, with GitHub's message and docs link."""
    try:
        data = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        data = None
    github_message = documentation_url = None
    errors: list[Any] = []
    if isinstance(data, dict):
        if isinstance(data.get("message"), str):
            github_message = data["message"]
        if isinstance(data.get("documentation_url"), str):
            documentation_url = data["documentation_url"]
        if isinstance(data.get("errors"), list):
            errors = data["errors"]
    text = f"GitHub answered {status} to {method} {path}"
    if github_message:
        text += f": {github_message.strip()}"
    if errors:
        text += f" ({_describe_errors(errors)})"
    if documentation_url:
        text += f" [see {documentation_url}]"
    hint = _HINTS.get(status) or (
        "GitHub had an internal problem; retry later" if status >= 500 else None
    )
    return cls(
        text,
        hint=hint,
        status=status,
        github_message=github_message,
        documentation_url=documentation_url,
        errors=[e for e in errors if isinstance(e, dict)],
    )
