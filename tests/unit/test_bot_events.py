"""Verifying and parsing deliveries: a pure function, tested with recorded Forgejo deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.events.delivery import PayloadError, SignatureError, parse, verify
from tests.support.botkit import SECRET, all_samples, sample
from tests.support.fuzz import examples


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


# --- fuzzing (hardening issue): any body, headers and signature give an Event or a documented error ---

_HEADER_NAMES = st.sampled_from([
    "Content-Type", "X-Forgejo-Event", "X-Gitea-Event", "X-GitHub-Event", "X-Forgejo-Event-Type", "X-Forgejo-Delivery",
    "X-Forgejo-Signature", "X-Gitea-Signature", "X-Hub-Signature-256", "X-Gogs-Event", "Content-Length"])
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                  max_size=4), max_leaves=30)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """A body (JSON objects with and without a repository, other JSON, raw bytes, forms) and headers."""
    kind = draw(st.sampled_from(["object", "json", "bytes", "form", "deep"]))
    if kind == "object":
        payload = draw(st.dictionaries(st.sampled_from(["repository", "action", "ref", "after", "x"]), _JSON))
        if draw(st.booleans()):
            payload["repository"] = {"full_name": draw(st.text(max_size=30) | st.integers())}
        body = json.dumps(payload).encode()
    elif kind == "json":
        body = json.dumps(draw(_JSON)).encode()
    elif kind == "deep":
        depth = draw(st.integers(1, 3000))
        body = b'{"repository": {"full_name": "a/b"}, "x": ' + b"[" * depth + b"]" * depth + b"}"
    else:
        body = draw(st.binary(max_size=300))
        if kind == "form":
            body = b"payload=" + quote(body.decode("latin-1")).encode()
    headers = draw(st.dictionaries(_HEADER_NAMES, st.text(max_size=40), max_size=6))
    if draw(st.booleans()):  # half of them signed right, so parsing goes on past the signature
        digest = hmac.new(SECRET.encode(), body if kind != "form" else unquote_payload(body), hashlib.sha256)
        headers[draw(st.sampled_from(["X-Forgejo-Signature", "X-Gitea-Signature"]))] = digest.hexdigest()
        headers.setdefault("X-Forgejo-Event", draw(st.sampled_from(["push", "pull_request", "Push", "ä", ""])))
        if kind == "form":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
    return headers, body


def unquote_payload(body: bytes) -> bytes:
    from urllib.parse import parse_qs

    return parse_qs(body.decode("latin-1"), keep_blank_values=True).get("payload", [""])[0].encode("utf-8")


@settings(max_examples=examples(10_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
@example(({"X-Forgejo-Signature": "é"}, b"{}"))  # non-ASCII signature: compare_digest refuses str
@example(({"X-Forgejo-Event": "push", "X-Forgejo-Signature": hmac.new(
    SECRET.encode(), b"[" * 1000 + b"]" * 1000, hashlib.sha256).hexdigest()}, b"[" * 1000 + b"]" * 1000))
def test_parse_never_raises_anything_undocumented(delivery: tuple[dict[str, str], bytes]) -> None:
    headers, body = delivery
    try:
        event = parse(headers, body, SECRET.encode())
    except (SignatureError, PayloadError) as exc:
        assert str(exc) and len(str(exc)) < 500
        return
    assert isinstance(event.payload, dict) and isinstance(event.repo, str)
    assert event.name and event.type and len(event.delivery_id) <= 100
