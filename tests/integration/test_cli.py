"""The installed console scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import PROJECT

ROOT = PROJECT
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"console script {name} is not installed (pip install -e .)"
    return found


def test_ka_install_names_itself_and_refuses_an_unknown_host(tmp_path: Path) -> None:
    res = subprocess.run([script("ka-install"), "--help"], capture_output=True, text=True)
    assert res.stdout.startswith("usage: ka-install ") and "--rollback" in res.stdout and "--dry-run" in res.stdout
    repo = tmp_path / "r"
    shutil.copytree(ROOT / "fleet", repo / "fleet")
    shutil.copytree(ROOT / "patches", repo / "patches")
    res = subprocess.run([script("ka-install"), "nosuch"], cwd=repo, capture_output=True, text=True)
    assert res.returncode == 2 and "unknown host 'nosuch'" in res.stderr and "ampere" in res.stderr
    assert not (repo / "out").exists()


def test_ka_promote_and_status_scripts_in_the_sample_repo(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    shutil.copytree(ROOT / "fleet", repo / "fleet")
    shutil.copytree(ROOT / "patches", repo / "patches")
    res = subprocess.run([script("ka-promote"), "--all"], cwd=repo / "patches", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "3 hosts, 0 failed"
    assert (repo / "out/ampere/ampere-cumulative.patch").is_file()
    res = subprocess.run([script("ka-status")], cwd=repo, capture_output=True, text=True)
    assert res.returncode == 0
    assert [ln.split()[0] for ln in res.stdout.splitlines()] == ["HOST", "ampere", "fresnel", "ohm"]
    res = subprocess.run([script("ka"), "--version"], capture_output=True, text=True)
    assert res.stdout.startswith("kernel-agent ")


def test_ka_promote_usage_names_itself() -> None:
    res = subprocess.run([script("ka-promote"), "--help"], capture_output=True, text=True)
    assert res.stdout.startswith("usage: ka-promote ")
