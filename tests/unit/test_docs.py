"""The documentation holds together: links resolve, runnable blocks are run by tests, the front door is short."""

from __future__ import annotations

import re

import pytest

from tests.support import PROJECT
from tests.support.docs import Block, anchors, blocks, documents, links


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.name)
def test_every_relative_link_resolves_to_a_file_and_heading(path: object) -> None:
    assert hasattr(path, "parent")
    broken = []
    for line, target in links(path):  # type: ignore[arg-type]
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not this test's business
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path  # type: ignore[attr-defined]
        if not dest.exists():
            broken.append(f"{path.name}:{line}: {target}: no such file")  # type: ignore[attr-defined]
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{path.name}:{line}: {target}: no heading #{anchor} there")  # type: ignore[attr-defined]
    assert not broken, "\n".join(broken)


def _tests_text() -> str:
    files = [p for p in (PROJECT / "tests").rglob("*.py") if p.name not in ("docs.py", "test_docs.py")]
    return "\n".join(p.read_text() for p in files)


@pytest.mark.parametrize("block", blocks(), ids=lambda b: b.name)
def test_every_runnable_block_is_run_by_a_test(block: Block) -> None:
    assert f'runnable("{block.name}")' in _tests_text(), \
        f"{block.path.name}:{block.line}: block {block.name} is marked runnable, but no test runs it"


def test_the_runnable_blocks_are_found_and_named_once() -> None:
    names = [b.name for b in blocks()]
    assert "quick-start" in names and len(names) == len(set(names)), names


def test_the_front_door_fits_on_a_few_screens() -> None:
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) < 150 and len(readme) < 12_000, "move the details into docs/"
    assert {p.name for p in (PROJECT / "docs").glob("*.md")} >= {
        "fleet.md", "promote.md", "build.md", "install.md", "bot.md", "security.md", "benchmarks.md",
        "architecture.md", "testing.md", "faults.md"}
