"""The documentation as the tests read it: its command blocks marked runnable, its links, its headings.

A fenced block whose info string is ``sh runnable:NAME`` is a promise that some test runs it as written
(:func:`runnable` hands a test its text); ``tests/unit/test_docs.py`` checks that every such block is
named by a test, and that every relative link resolves to a file and heading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.support import PROJECT

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_OPEN = re.compile(r"^\s*```sh runnable:([a-z0-9-]+)\s*$")


@dataclass(frozen=True)
class Block:
    """A runnable command block: where it is, its name, its lines (indentation removed)."""

    path: Path
    line: int
    name: str
    text: str


def documents() -> list[Path]:
    """README.md and every page of docs/."""
    return [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]


def text() -> str:
    """README.md and docs/, one text (for a test that checks that something is documented as the code has it)."""
    return "\n".join(p.read_text() for p in documents())


def blocks() -> list[Block]:
    """Every runnable block of the documentation."""
    found = []
    for path in documents():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = _OPEN.match(line)
            if not m:
                continue
            indent = len(line) - len(line.lstrip())
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            body = "\n".join(ln[indent:] for ln in lines[i + 1:end])
            found.append(Block(path, i + 1, m.group(1), body + "\n"))
    return found


def runnable(name: str) -> Block:
    """The runnable block called ``name`` (a test runs its text as written)."""
    return next(b for b in blocks() if b.name == name)


def slug(title: str) -> str:
    """A heading's anchor as Forgejo and GitHub make it."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings (outside code blocks)."""
    out, fence = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link outside code blocks."""
    out, fence = [], False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence:
            out += [(n, m.group(1)) for m in _LINK.finditer(re.sub(r"`[^`]*`", "", line))]
    return out
