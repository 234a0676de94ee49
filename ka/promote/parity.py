"""Parity: is the cumulative patch the one the hand-built package shipped?

A mismatch is located by the offset of the first differing byte, the patch and line of ours
there and both b2sums; never by the reference's own bytes.  A parity reference may be a file
on a host that nobody else may read, and these results end up on public statuses and pages.
"""

from __future__ import annotations

from dataclasses import dataclass

from ka.promote.cumulative import Cumulative, b2sum

MATCH, MISMATCH, UNSET = "match", "mismatch", "unset"
_OURS_MAX = 200


@dataclass(frozen=True)
class ParityResult:
    """The parity verdict and, on mismatch, where the bytes first differ."""

    state: str
    expected_b2sum: str | None = None
    offset: int | None = None
    patch: str | None = None
    line: int | None = None
    ours: str = ""  # our cumulative patch's line at the first difference (ours is public; the reference is not)
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        """The located facts as JSON-ready data."""
        return {"state": self.state, "expected_b2sum": self.expected_b2sum, "offset": self.offset,
                "patch": self.patch, "line": self.line, "ours": self.ours, "reason": self.reason}


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


def our_line(ours: bytes, offset: int) -> str:
    """The line of our cumulative patch that holds ``offset`` (capped), or "" past its end."""
    if offset >= len(ours):
        return ""
    start = ours.rfind(b"\n", 0, offset) + 1
    end = ours.find(b"\n", offset)
    text = ours[start: end if end >= 0 else len(ours)].decode("utf-8", "replace")
    return text if len(text) <= _OURS_MAX else text[:_OURS_MAX] + "…"


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
    theirs = b2sum(canonical)
    where = cumulative.locate(offset)
    if where is None:
        reason = (f"{name} goes on past the end of the cumulative patch (byte {offset})"
                  if len(canonical) > len(cumulative.data) else f"{name} ends at byte {offset}")
        return ParityResult(MISMATCH, theirs, offset=offset, reason=reason, ours=our_line(cumulative.data, offset))
    patch, line = where
    return ParityResult(MISMATCH, theirs, offset=offset, patch=patch, line=line,
                        reason=f"first difference at byte {offset}: {patch} line {line}",
                        ours=our_line(cumulative.data, offset))
