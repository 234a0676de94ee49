"""``ka pkgdiff A B``: are two packages the same, modulo when and where they were built?

Ignored: member mtimes, ``builddate`` in ``.PKGINFO``, ``builddate``, ``builddir`` and
``startdir`` in ``.BUILDINFO``, and in ``.MTREE`` the ``time=`` fields and the entries of those
two files (whose digests change with them); of a ``.deb``, member mtimes only.  Everything else
counts: the members, their content, mode, owner and link target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ka.packages.files import Member, members


@dataclass
class PkgDiff:
    """The differences between two packages (none: the same modulo timestamps)."""

    a: Path
    b: Path
    differences: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, object]:
        return {"a": str(self.a), "b": str(self.b), "same": self.same, "differences": self.differences}


def compare(a: Path, b: Path) -> PkgDiff:
    """Compare two packages member by member."""
    left = {m.name: m for m in members(a)}
    right = {m.name: m for m in members(b)}
    diff = PkgDiff(a, b)
    for name in sorted(left.keys() | right.keys()):
        if name not in right:
            diff.differences.append(f"only in {a.name}: {name}")
        elif name not in left:
            diff.differences.append(f"only in {b.name}: {name}")
        else:
            diff.differences += _member(left[name], right[name])
    return diff


def _member(x: Member, y: Member) -> list[str]:
    found = []
    if x.kind != y.kind:
        found.append(f"{x.name}: {x.kind} against {y.kind}")
    if x.mode != y.mode:
        found.append(f"{x.name}: mode {x.mode:o} against {y.mode:o}")
    if x.owner != y.owner:
        found.append(f"{x.name}: owner {x.owner} against {y.owner}")
    if x.link != y.link:
        found.append(f"{x.name}: link to {x.link} against {y.link}")
    if x.digest != y.digest:
        found.append(f"{x.name}: content differs ({x.size} against {y.size} bytes)")
    return found
