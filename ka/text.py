"""Untrusted text in messages: escaped and capped, so a hostile name or value cannot flood a log,
a commit status or a terminal, nor carry bytes that do not encode."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

ECHO_MAX = 200


def cap(text: str, limit: int = ECHO_MAX) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when something was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: object, limit: int = ECHO_MAX) -> str:
    """``repr(value)`` capped: how a message quotes a value it refuses."""
    if isinstance(value, str | bytes) and len(value) > limit * 2:
        value = value[: limit * 2]  # repr of a 100 MB string would cost 100 MB before the cut
    return cap(repr(value), limit)


def encodable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (surrogates from undecodable file names) as ``\\udcxx``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(text: str, limit: int = ECHO_MAX) -> str:
    """Plain ASCII: file names that are not valid UTF-8 (kept as surrogates), control
    characters and non-ASCII bytes become ``\\xNN``; capped at ``limit``."""
    raw = text.encode("utf-8", "surrogateescape")
    out = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw[: limit * 4])
    return cap(out, limit)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` when one of ``choices`` is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word[:60], list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
