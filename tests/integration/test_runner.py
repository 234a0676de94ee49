"""ka/io/runner.py: the one door for local processes."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from ka.packages.files import members


def _package(folder: Path) -> Path:
    """A package-like .tar.zst of 8 MB: decompressed, many pipes full."""
    tree = folder / "tree"
    tree.mkdir()
    for i in range(2000):
        (tree / f"file{i:04}").write_bytes(bytes([i % 251]) * 4096)
    subprocess.run(["tar", "-cf", str(folder / "p.tar"), "-C", str(tree), "."], check=True)
    subprocess.run(["zstd", "-q", "--rm", str(folder / "p.tar")], check=True)
    return folder / "p.tar.zst"


def test_a_reader_that_stops_early_does_not_wait_for_the_rest(tmp_path: Path) -> None:
    """``any(...)`` over a package's members stops at the first match and closes the stream: the decompressor,
    blocked writing the rest, must not hang the reader (found by ka-build's check of a real 60 MB headers
    package)."""
    package, done = _package(tmp_path), []
    reader = threading.Thread(target=lambda: done.append(any(True for _ in members(package))), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive() and done == [True]


def test_a_reader_that_reads_everything_gets_everything(tmp_path: Path) -> None:
    assert sum(1 for m in members(_package(tmp_path)) if m.kind == "file") == 2000
