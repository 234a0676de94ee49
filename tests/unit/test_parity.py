"""Parity helpers."""

from __future__ import annotations

import pytest

from ka.promote.cumulative import Cumulative, Span, b2sum
from ka.promote.parity import first_difference


@pytest.mark.parametrize(("a", "b", "offset"), [
    (b"abc", b"abc", None),
    (b"abc", b"abd", 2),
    (b"abc", b"xbc", 0),
    (b"abc", b"abcd", 3),
    (b"abcd", b"abc", 3),
    (b"", b"a", 0),
    (b"a" * 10000 + b"b", b"a" * 10000 + b"c", 10000),
])
def test_first_difference(a: bytes, b: bytes, offset: int | None) -> None:
    assert first_difference(a, b) == offset


def test_locate_maps_offsets_to_file_and_line() -> None:
    c = Cumulative(b"a\nb\nc\nd\n", (Span(0, 4, "one.patch"), Span(4, 8, "two.patch")))
    assert c.locate(0) == ("one.patch", 1)
    assert c.locate(2) == ("one.patch", 2)
    assert c.locate(4) == ("two.patch", 1)
    assert c.locate(7) == ("two.patch", 2)
    assert c.locate(8) is None


def test_b2sum_matches_the_b2sum_program_known_value() -> None:
    # b2sum of the empty input, as `b2sum /dev/null` prints it
    assert b2sum(b"").startswith("786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419")
