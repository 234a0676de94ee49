"""Verifying and parsing deliveries: a pure function, tested with recorded Forgejo deliveries."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

import pytest
from botkit import SECRET, all_samples, sample

from bot.events import PayloadError, SignatureError, parse, verify


def test_github_documented_test_vector() -> None:
    # docs.github.com "Validating webhook deliveries": this secret and body give this signature
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    verify({"X-Hub-Signature-256": good}, body, secret)
    with pytest.raises(SignatureError):
        verify({"X-Hub-Signature-256": good[:-1] + "8"}, body, secret)


@pytest.mark.parametrize("name", [n for n in all_samples() if sample(n)["secret"]])
def test_every_signed_sample_verifies_with_its_secret(name: str) -> None:
    data = sample(name)
    event = parse(data["headers"], data["raw_body"].encode(), data["secret"].encode())
    assert event.name == data["event"]
    assert event.payload == data["payload"]


def _headers(body: bytes, **extra: str) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Forgejo-Event": "push", "X-Forgejo-Delivery": "d1", "X-Forgejo-Signature": digest, **extra}


BODY = b'{"repository": {"full_name": "o/r"}, "ref": "refs/heads/main"}'


@pytest.mark.parametrize(("change", "error"), [
    ({"X-Forgejo-Signature": None}, "no signature"),
    ({"X-Forgejo-Signature": "0" * 64}, "does not match"),
    ({"X-Forgejo-Signature": ""}, "no signature"),
    ({"X-Forgejo-Signature": None, "X-Hub-Signature-256": "sha256="}, "no signature"),
    ({"X-Forgejo-Signature": None, "X-Hub-Signature": "sha1=abc"}, "no signature"),
])
def test_bad_signatures(change: dict[str, str | None], error: str) -> None:
    headers = _headers(BODY)
    for key, value in change.items():
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    with pytest.raises(SignatureError, match=error):
        parse(headers, BODY, SECRET.encode())


@pytest.mark.parametrize("header", ["X-Forgejo-Signature", "X-Gitea-Signature", "X-Hub-Signature-256"])
def test_any_one_signature_header_is_enough(header: str) -> None:
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    value = "sha256=" + digest if header == "X-Hub-Signature-256" else digest.upper()
    event = parse({"X-Gitea-Event": "push", header: value}, BODY, SECRET.encode())
    assert event.repo == "o/r"
    assert event.delivery_id.startswith("sha256:")  # no delivery header: derived from the body


def test_form_encoded_fallback_signs_the_json() -> None:
    form = b"payload=" + quote(BODY.decode()).encode()
    event = parse(_headers(BODY, **{"Content-Type": "application/x-www-form-urlencoded"}), form, SECRET.encode())
    assert event.payload["ref"] == "refs/heads/main"


@pytest.mark.parametrize(("body", "headers", "error"), [
    (b"{not json", {}, "not JSON"),
    (b"[1, 2]", {}, "not a JSON object"),
    (b'{"ref": "x"}', {}, "no repository.full_name"),
    (BODY, {"X-Forgejo-Event": ""}, "no X-Forgejo-Event"),
    (BODY, {"Content-Type": "text/plain"}, "unsupported content type"),
    (b"other=1", {"Content-Type": "application/x-www-form-urlencoded"}, "without a payload= field"),
])
def test_unreadable_deliveries(body: bytes, headers: dict[str, str], error: str) -> None:
    all_headers = {**_headers(body), **headers}
    if "X-Forgejo-Event" in headers and not headers["X-Forgejo-Event"]:
        all_headers.pop("X-Forgejo-Event")
    with pytest.raises(PayloadError, match=error):
        parse(all_headers, body, None)


def test_event_type_falls_back_to_event() -> None:
    data = sample("issue_comment-created-pr-legacy")
    event = parse(data["headers"], data["raw_body"].encode(), None)
    assert (event.name, event.type, event.action) == ("issue_comment", "issue_comment", "created")
    data = sample("pull_request-synchronized-gitea-1.22")
    event = parse(data["headers"], data["raw_body"].encode(), SECRET.encode())
    assert (event.name, event.type, event.action) == ("pull_request", "pull_request_sync", "synchronized")


def test_non_ascii_signature_is_a_401_not_a_crash() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify({"X-Forgejo-Signature": "é" * 64}, BODY, SECRET.encode())
