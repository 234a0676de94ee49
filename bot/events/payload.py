"""Fields read out of a delivery's payload: types checked, sizes capped, whole strings matched.

Anyone who can open a pull request shapes the payloads the bot reads, so a handler never
trusts a field's type: a ``clone_url`` that is an object, a ``number`` that is ``true``, or
a commit id followed by a newline is a :class:`PayloadError` (400), not a 500 later.
"""

from __future__ import annotations

import re
from typing import Any

from bot.events.delivery import PayloadError
from bot.events.router import get

SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: a branch as git allows it, minus what a refspec or a shell would read as syntax
BRANCH_REF = re.compile(r"refs/heads/(?!.*\.\.)(?!.*//)[^\x00-\x20\x7f~^:?*\[\\]{1,240}(?<![./])")
TEXT_MAX = 2048


def sha(payload: Any, *path: str) -> str:
    """A commit id (SHA-1 or SHA-256, lowercase hex, the whole string)."""
    value = get(payload, *path)
    if not isinstance(value, str) or not SHA.fullmatch(value):
        raise PayloadError(f"{'.'.join(path)} is not a commit id")
    return value


def text(payload: Any, *path: str, limit: int = TEXT_MAX) -> str | None:
    """An optional string field (a URL, a login): None when absent, refused when of another type."""
    value = get(payload, *path)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise PayloadError(f"{'.'.join(path)} must be a line of text of at most {limit} characters")
    return value


def number(payload: Any, *path: str) -> int | None:
    """An optional positive integer (an issue or pull-request number); ``true`` is not 1."""
    value = get(payload, *path)
    if value is None:
        return None
    if type(value) is not int or not 0 < value < 2**63:
        raise PayloadError(f"{'.'.join(path)} is not a positive integer")
    return value
