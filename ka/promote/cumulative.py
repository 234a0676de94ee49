"""The cumulative patch: the host's series concatenated byte for byte."""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property

from ka.fleet.series import Series


@dataclass(frozen=True)
class Span:
    """Where one patch file sits inside the cumulative patch."""

    start: int
    end: int
    path: str


@dataclass(frozen=True)
class Cumulative:
    """The concatenated bytes, their b2sum and the span of each patch file."""

    data: bytes
    spans: tuple[Span, ...]

    @cached_property
    def b2sum(self) -> str:
        return b2sum(self.data)

    def locate(self, offset: int) -> tuple[str, int] | None:
        """The patch file and 1-based line within it that byte ``offset`` falls in."""
        starts = [s.start for s in self.spans]
        i = bisect_right(starts, offset) - 1
        if i < 0 or offset >= self.spans[i].end:
            return None
        span = self.spans[i]
        return span.path, self.data.count(b"\n", span.start, offset) + 1


def b2sum(data: bytes) -> str:
    """BLAKE2b-512 in hex, as ``b2sum`` and makepkg's ``b2sums`` print it."""
    return hashlib.blake2b(data, digest_size=64).hexdigest()


def concatenate(series: list[Series]) -> Cumulative:
    """Concatenate the patch files of ``series`` (already in apply order) unchanged."""
    parts, spans, pos = [], [], 0
    for s in series:
        for patch in s.patches:
            parts.append(patch.data)
            spans.append(Span(pos, pos + len(patch.data), patch.path))
            pos += len(patch.data)
    return Cumulative(b"".join(parts), tuple(spans))
