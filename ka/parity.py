"""Parity: is the cumulative patch the one the hand-built package shipped?"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ka.cumulative import Cumulative, b2sum

MATCH, MISMATCH, UNSET = "match", "mismatch", "unset"
_EXCERPT_LINES = 3


@dataclass(frozen=True)
class ParityResult:
    """The parity verdict and, on mismatch, where the bytes first differ."""

    state: str
    expected_b2sum: str | None = None
    offset: int | None = None
    patch: str | None = None
    line: int | None = None
    excerpt: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        """The located facts as JSON-ready data."""
        return {"state": self.state, "expected_b2sum": self.expected_b2sum, "offset": self.offset,
                "patch": self.patch, "line": self.line, "excerpt": self.excerpt, "reason": self.reason}


def first_difference(a: bytes, b: bytes) -> int | None:
    """Offset of the first byte where ``a`` and ``b`` differ, or None when equal."""
    if a == b:
        return None
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # binary search on equal prefixes: C-speed compares, no Python byte loop
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def excerpt(ours: bytes, theirs: bytes, offset: int) -> str:
    """A short unified diff around the line holding ``offset``."""
    line = ours.count(b"\n", 0, offset)
    a = ours.decode("utf-8", "replace").splitlines()
    b = theirs.decode("utf-8", "replace").splitlines()
    lo = max(0, line - _EXCERPT_LINES)
    hi = line + _EXCERPT_LINES + 1
    diff = difflib.unified_diff(b[lo:hi], a[lo:hi], "canonical", "cumulative", lineterm="", n=_EXCERPT_LINES)
    return "\n".join(diff)


def compare(cumulative: Cumulative, expected_b2sum: str | None, canonical: bytes | None,
            canonical_name: str = "canonical") -> ParityResult:
    """Compare with a b2sum and/or canonical bytes; unset when neither is given."""
    ours = cumulative.b2sum
    if canonical is not None:
        offset = first_difference(cumulative.data, canonical)
        if offset is not None:
            return _located(cumulative, canonical, offset, canonical_name)
        if expected_b2sum and expected_b2sum != b2sum(canonical):
            return ParityResult(MISMATCH, expected_b2sum,
                                reason=f"{canonical_name} matches but parity.b2sum names other bytes")
    if expected_b2sum and expected_b2sum != ours:
        return ParityResult(MISMATCH, expected_b2sum,
                            reason=f"b2sum {ours[:16]}… is not the expected {expected_b2sum[:16]}…")
    if canonical is None and not expected_b2sum:
        return ParityResult(UNSET)
    return ParityResult(MATCH, expected_b2sum or b2sum(canonical or b""))


def _located(cumulative: Cumulative, canonical: bytes, offset: int, name: str) -> ParityResult:
    where = cumulative.locate(offset)
    if where is None:
        reason = (f"{name} goes on past the end of the cumulative patch (byte {offset})"
                  if len(canonical) > len(cumulative.data) else f"{name} ends at byte {offset}")
        return ParityResult(MISMATCH, b2sum(canonical), offset=offset, reason=reason,
                            excerpt=excerpt(cumulative.data, canonical, offset))
    patch, line = where
    return ParityResult(MISMATCH, b2sum(canonical), offset=offset, patch=patch, line=line,
                        reason=f"first difference at byte {offset}: {patch} line {line}",
                        excerpt=excerpt(cumulative.data, canonical, offset))
