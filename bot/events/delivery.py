"""Verify and parse one webhook delivery: a pure function, no I/O (the gidgethub lesson).

Forgejo signs the JSON bytes with HMAC-SHA256 and sends the hex digest bare in
``X-Forgejo-Signature`` / ``X-Gitea-Signature`` and as ``sha256=<hex>`` in
``X-Hub-Signature-256``.  For form-encoded hooks the signature is still over
the JSON inside ``payload=``, never over the form encoding.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

_PREFIXES = ("x-forgejo-", "x-gitea-", "x-gogs-", "x-github-")
#: Forgejo's deliveries nest about 6 levels; deeper is hostile (and 1,000 levels exhaust the parser)
MAX_DEPTH = 32
_EVENT = re.compile(r"[a-z_]{1,40}")


class DeliveryError(Exception):
    """A delivery the bot refuses; ``status`` is the HTTP answer."""

    status = 400


class SignatureError(DeliveryError):
    """Missing or wrong signature."""

    status = 401


class PayloadError(DeliveryError):
    """A body the bot cannot read."""

    status = 400


@dataclass(frozen=True)
class Event:
    """A verified delivery."""

    delivery_id: str
    name: str
    type: str
    payload: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False, default=b"")

    @property
    def action(self) -> str | None:
        value = self.payload.get("action")
        return value if isinstance(value, str) else None

    @property
    def repo(self) -> str | None:
        repo = self.payload.get("repository")
        name = repo.get("full_name") if isinstance(repo, dict) else None
        return name if isinstance(name, str) else None


def _header(headers: Mapping[str, str], suffix: str) -> str | None:
    for prefix in _PREFIXES:
        value = headers.get(prefix + suffix)
        if value:
            return value
    return None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _json_bytes(headers: dict[str, str], body: bytes) -> bytes:
    ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if "payload" not in form:
            raise PayloadError("form-encoded delivery without a payload= field")
        return form["payload"][0].encode("utf-8")
    if ctype not in ("application/json", ""):
        raise PayloadError(f"unsupported content type {ctype!r}: set the webhook to POST application/json")
    return body


def verify(headers: Mapping[str, str], data: bytes, secret: bytes) -> None:
    """Check the HMAC-SHA256 signature of ``data`` in constant time; raise :class:`SignatureError`."""
    headers = _lower(headers)
    expected = hmac.new(secret, data, hashlib.sha256).hexdigest()
    offered = [v.strip().lower() for v in (headers.get("x-forgejo-signature"), headers.get("x-gitea-signature"))
               if v]
    hub = headers.get("x-hub-signature-256", "")
    if hub.lower().startswith("sha256=") and len(hub) > 7:
        offered.append(hub[7:].strip().lower())
    if not offered:
        raise SignatureError("no signature: set the webhook secret in Forgejo to the bot's")
    # bytes, not str: compare_digest refuses non-ASCII str, which a client could send to cause a 500
    if not any(hmac.compare_digest(expected.encode(), value.encode("utf-8", "replace")) for value in offered):
        raise SignatureError("signature does not match: the webhook secret differs from the bot's")


def parse(headers: Mapping[str, str], body: bytes, secret: bytes | None) -> Event:
    """Verify and parse a delivery.  ``secret=None`` skips verification (``--insecure`` only)."""
    low = _lower(headers)
    data = _json_bytes(low, body)
    if secret is not None:
        verify(low, data, secret)
    name = _header(low, "event")
    if not name:
        raise PayloadError("no X-Forgejo-Event / X-Gitea-Event header")
    if not _EVENT.fullmatch(name.strip().lower()):
        raise PayloadError("the event header is not an event name")
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise PayloadError(f"body is nested deeper than JSON parsing allows (over {MAX_DEPTH} levels)") from None
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object")
    _check_shape(payload)
    delivery = _header(low, "delivery") or "sha256:" + hashlib.sha256(data).hexdigest()
    kind = (_header(low, "event-type") or name).strip().lower()
    event = Event(delivery_id=delivery[:100], name=name.strip().lower(),
                  type=kind if _EVENT.fullmatch(kind) else name.strip().lower(), payload=payload, body=data)
    if event.repo is None:
        raise PayloadError("payload has no repository.full_name")
    return event


def _check_shape(value: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` and text that is not Unicode (lone surrogates from
    ``\\udcff`` escapes, which no database or page can store); iterative: no recursion to exhaust."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadError(f"body is nested deeper than {MAX_DEPTH} levels (a Forgejo delivery has about 6)")
        if isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str) and not _encodable(item):
            raise PayloadError("body holds text that is not Unicode (a lone surrogate escape)")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sign(secret: bytes, data: bytes) -> dict[str, str]:
    """The signature headers Forgejo would send for ``data``."""
    hexdigest = hmac.new(secret, data, hashlib.sha256).hexdigest()
    return {"X-Forgejo-Signature": hexdigest, "X-Gitea-Signature": hexdigest,
            "X-Hub-Signature-256": "sha256=" + hexdigest}
