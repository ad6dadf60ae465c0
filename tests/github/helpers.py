"""Test helpers: recorded payloads re-signed as GitHub would send them, a fake clock."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TEST_SECRET = b"test webhook secret"


def sample_names() -> list[str]:
    """Every recorded sample, as paths relative to tests/samples (derived ones included)."""
    return sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*.json"))


def load_sample(name: str) -> dict[str, Any]:
    """A sample payload by file name, e.g. ``"pull_request.labeled.json"``."""
    data = json.loads((SAMPLES / name).read_text())
    assert isinstance(data, dict)
    return data


def event_of(name: str) -> str:
    """The X-GitHub-Event of a sample: its file name up to the first dot."""
    return Path(name).name.split(".", 1)[0]


def signed_delivery(
    sample: str | dict[str, Any],
    *,
    secret: bytes = TEST_SECRET,
    event: str | None = None,
    delivery_id: str | None = None,
    form: bool = False,
) -> tuple[dict[str, str], bytes]:
    """(headers, body) as GitHub sends a delivery of ``sample``, signed with ``secret``.

    ``sample`` is a sample file name or a payload dict (then ``event`` is needed).
    ``form=True`` sends it as ``application/x-www-form-urlencoded`` with a
    ``payload`` field, the other content type GitHub offers.
    """
    if isinstance(sample, str):
        payload = load_sample(sample)
        event = event or event_of(sample)
    else:
        payload = sample
    assert event, "a payload dict needs event="
    # GitHub sends compact JSON; the signature covers these exact bytes.
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    if form:
        body = urllib.parse.urlencode({"payload": text}).encode()
        content_type = "application/x-www-form-urlencoded"
    else:
        body = text.encode()
        content_type = "application/json"
    installation = payload.get("installation") or {}
    headers = {
        "Host": "modelci.example.invalid",
        "User-Agent": "GitHub-Hookshot/7d3a4b1",
        "Content-Type": content_type,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Event": event,
        "X-GitHub-Hook-ID": "109948940",
        "X-GitHub-Hook-Installation-Target-ID": str(installation.get("id", 21031067)),
        "X-GitHub-Hook-Installation-Target-Type": "integration" if installation else "repository",
        "X-Hub-Signature": "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
    }
    return headers, body


class FakeClock:
    """A clock tests move by hand; callable like ``time.time``."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """A ``time.sleep`` stand-in that records the waits and advances a fake clock."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.waits: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)
