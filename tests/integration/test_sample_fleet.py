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


def _sample_repo(repo: Path, ref: str) -> Path:
    """A copy of the sample fleet (a git repository) on ``ref``."""
    shutil.copytree(ROOT / "fleet", repo / "fleet")
    shutil.copytree(ROOT / "patches", repo / "patches")
    if ref != SAMPLE_REF:  # a newer Debian point release: the sample patches must still apply on it
        for m in (repo / "fleet").glob("*.yaml"):
            m.write_text(m.read_text().replace(f"ref: {SAMPLE_REF}", f"ref: {ref}"))
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True)
    return repo


def _render(repo: Path, tree: Path, host: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ka", "build", host, "--render-only", str(out), "--repo", str(repo),
                           "--kernel-tree", str(tree)], capture_output=True, text=True)


def test_every_sample_host_applies(real_kernel: tuple[Path, str], tmp_path: Path) -> None:
    tree, ref = real_kernel
    repo = _sample_repo(tmp_path / "fleet-repo", ref)
    res = subprocess.run([sys.executable, "-m", "ka", "promote", "--all", "--json", "--repo", str(repo),
                          "--kernel-tree", str(tree)], capture_output=True, text=True)
    data = json.loads(res.stdout)
    assert res.returncode == 0, res.stderr + res.stdout
    assert [d["host"] for d in data] == ["ampere", "fresnel", "ohm"]
    assert all(d["applies"] is True for d in data)
    assert [d["parity"] for d in data] == ["match", "match", "unset"]
    assert all(d["seconds"] < 5 for d in data)


@pytest.mark.parametrize("host", ["ampere", "fresnel", "ohm"])
def test_every_sample_host_config_holds(real_kernel: tuple[Path, str], tmp_path: Path, host: str) -> None:
    """Kconfig of the patched 6.12 tree keeps everything each sample host asks for: modules, MMC, ext4, the
    initramfs, its SoC's drivers, and the BES2600 driver its patches add."""
    require(all(shutil.which(t) for t in ("gcc", "flex", "bison")), "gcc, flex and bison (scripts/setup test)")
    tree, ref = real_kernel
    res = _render(_sample_repo(tmp_path / "fleet-repo", ref), tree, host, tmp_path / "out")
    assert res.returncode == 0, res.stderr
    audit = [ln.strip() for ln in res.stdout.splitlines() if "config audit:" in ln]
    assert len(audit) == 1 and audit[0].startswith("config audit: all ") and audit[0].endswith(
        " requested options hold in the final .config"), res.stdout
    assert int(audit[0].split()[3]) >= 20
    requested = (tmp_path / "out" / "config.requested").read_text()
    for symbol in ("CONFIG_MODULES", "CONFIG_MMC", "CONFIG_EXT4_FS", "CONFIG_BLK_DEV_INITRD", "CONFIG_ARCH_ROCKCHIP"):
        assert f"{symbol}\ty\tfleet/configs/fleet.config:" in requested


def test_an_option_kconfig_drops_fails_before_compiling(real_kernel: tuple[Path, str], tmp_path: Path) -> None:
    """What the old sample config did, silently: MMC_DW_ROCKCHIP asked for with MMC off is gone after
    olddefconfig; the audit names the option, both values and the line that asked, and nothing is built."""
    require(all(shutil.which(t) for t in ("gcc", "flex", "bison")), "gcc, flex and bison (scripts/setup test)")
    tree, ref = real_kernel
    repo = _sample_repo(tmp_path / "fleet-repo", ref)
    (repo / "fleet/configs/ampere.config").write_text(
        '# a full config, cut short\nCONFIG_LOCALVERSION="-ampere"\n# CONFIG_MMC is not set\nCONFIG_MMC_DW_ROCKCHIP=y\n'
        "CONFIG_NO_SUCH_OPTION=m\nCONFIG_MODULES=y\n")
    manifest = repo / "fleet/ampere.yaml"
    text = manifest.read_text()
    start = text.index("  config:")
    manifest.write_text(text[:start] + "  config: fleet/configs/ampere.config\n" + text[text.index("install:"):])
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "full"],
                   check=True)
    res = _render(repo, tree, "ampere", tmp_path / "out")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "CONFIG_MMC_DW_ROCKCHIP: asked y, got not set (fleet/configs/ampere.config:4)" in res.stderr
    assert "CONFIG_NO_SUCH_OPTION: asked m, but no Kconfig defines it (fleet/configs/ampere.config:5)" in res.stderr
    assert "2 of 5 requested options are not in the final .config" in res.stderr
    assert "CONFIG_MODULES" not in res.stderr and "CONFIG_MMC:" not in res.stderr  # those hold
