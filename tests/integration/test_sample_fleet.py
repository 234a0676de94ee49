"""The shipped sample fleet against a real Linux 6.12 tree (Debian's linux-source-6.12)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import PROJECT
from tests.support.kernel import git
from tests.support.needs import require

ROOT = PROJECT
TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
SAMPLE_REF = "v6.12.117"

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="session")
def real_kernel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Debian's 6.12 source imported once per test session (about a minute)."""
    require(TARBALL.is_file(), f"{TARBALL} (apt-get install linux-source-6.12)")
    tree = tmp_path_factory.mktemp("linux") / "linux-6.12.git"
    out = subprocess.run([sys.executable, "-m", "ka", "baseline", "import", str(TARBALL), "--tree", str(tree)],
                         capture_output=True, text=True, check=True).stdout
    ref = out.split(" tag ", 1)[1].split()[0]
    return tree, ref


def test_import_has_every_file(real_kernel: tuple[Path, str]) -> None:
    tree, ref = real_kernel
    listed = git(tree, "ls-tree", "-r", "--name-only", "-z", ref).count(b"\0")
    members = subprocess.run(["tar", "-tJf", str(TARBALL)], capture_output=True, check=True).stdout
    files = [m for m in members.decode().splitlines() if not m.endswith("/")]
    assert listed == len(files)
    assert git(tree, "cat-file", "-e", f"{ref}:.gitignore") == b""


def test_every_sample_host_applies(real_kernel: tuple[Path, str], tmp_path: Path) -> None:
    tree, ref = real_kernel
    repo = tmp_path / "fleet-repo"
    shutil.copytree(ROOT / "fleet", repo / "fleet")
    shutil.copytree(ROOT / "patches", repo / "patches")
    if ref != SAMPLE_REF:  # a newer Debian point release: the sample patches must still apply on it
        for m in (repo / "fleet").glob("*.yaml"):
            m.write_text(m.read_text().replace(f"ref: {SAMPLE_REF}", f"ref: {ref}"))
    res = subprocess.run([sys.executable, "-m", "ka", "promote", "--all", "--json", "--repo", str(repo),
                          "--kernel-tree", str(tree)], capture_output=True, text=True)
    data = json.loads(res.stdout)
    assert res.returncode == 0, res.stderr + res.stdout
    assert [d["host"] for d in data] == ["ampere", "fresnel", "ohm"]
    assert all(d["applies"] is True for d in data)
    assert [d["parity"] for d in data] == ["match", "match", "unset"]
    assert all(d["seconds"] < 5 for d in data)
