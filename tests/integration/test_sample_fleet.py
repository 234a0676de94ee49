"""The shipped sample fleet against a real Linux 6.12 tree (Debian's linux-source-6.12)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import PROJECT
from tests.support.docs import runnable
from tests.support.fleet import sample_repo
from tests.support.kernel import TARBALL, git
from tests.support.needs import require

ROOT = PROJECT

pytestmark = pytest.mark.kernel


def test_import_has_every_file(real_kernel: tuple[Path, str]) -> None:
    tree, ref = real_kernel
    listed = git(tree, "ls-tree", "-r", "--name-only", "-z", ref).count(b"\0")
    members = subprocess.run(["tar", "-tJf", str(TARBALL)], capture_output=True, check=True).stdout
    files = [m for m in members.decode().splitlines() if not m.endswith("/")]
    assert listed == len(files)
    assert git(tree, "cat-file", "-e", f"{ref}:.gitignore") == b""


def _full_config(repo: Path) -> None:
    """Host ampere built from fleet/configs/ampere.config as a full config (as written there), committed."""
    manifest = repo / "fleet/ampere.yaml"
    text = manifest.read_text()
    manifest.write_text(text[:text.index("  config:")] + "  config: fleet/configs/ampere.config\n"
                        + text[text.index("install:"):])
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "full"],
                   check=True)


def _render(repo: Path, tree: Path, host: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ka", "build", host, "--render-only", str(out), "--repo", str(repo),
                           "--kernel-tree", str(tree)], capture_output=True, text=True)


def test_every_sample_host_applies(real_kernel: tuple[Path, str], tmp_path: Path) -> None:
    tree, ref = real_kernel
    repo = sample_repo(tmp_path / "fleet-repo", ref)
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
    res = _render(sample_repo(tmp_path / "fleet-repo", ref), tree, host, tmp_path / "out")
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
    repo = sample_repo(tmp_path / "fleet-repo", ref)
    (repo / "fleet/configs/ampere.config").write_text(
        '# a full config, cut short\nCONFIG_LOCALVERSION="-ampere"\n# CONFIG_MMC is not set\nCONFIG_MMC_DW_ROCKCHIP=y\n'
        "CONFIG_NO_SUCH_OPTION=m\nCONFIG_MODULES=y\n")
    _full_config(repo)
    res = _render(repo, tree, "ampere", tmp_path / "out")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "CONFIG_MMC_DW_ROCKCHIP: asked y, got not set (fleet/configs/ampere.config:4)" in res.stderr
    assert "CONFIG_NO_SUCH_OPTION: asked m, but no Kconfig defines it (fleet/configs/ampere.config:5)" in res.stderr
    assert "2 of 5 requested options are not in the final .config" in res.stderr
    assert "CONFIG_MODULES" not in res.stderr and "CONFIG_MMC:" not in res.stderr  # those hold


def _retagged(tree: Path, ref: str, root: Path, tag: str, path: str, edit: Callable[[str], str]) -> Path:
    """A shared clone of ``tree`` (the real tree is not touched) where ``tag`` names ``ref`` with ``path``
    edited, and ``ref`` itself is gone when it is not ``tag``: how Debian's next linux-source-6.12 looks."""
    newer = root / f"linux-{tag}.git"
    subprocess.run(["git", "clone", "-q", "--bare", "--shared", str(tree), str(newer)], check=True)
    env = {**os.environ, "GIT_INDEX_FILE": str(root / f"index-{tag}"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def g(*argv: str, data: bytes | None = None) -> str:
        return subprocess.run(["git", "--git-dir", str(newer), *argv], input=data, env=env, capture_output=True,
                              check=True).stdout.decode().strip()
    g("read-tree", ref)
    blob = g("hash-object", "-w", "--stdin", data=edit(g("show", f"{ref}:{path}") + "\n").encode())
    g("update-index", "--cacheinfo", f"100644,{blob},{path}")
    commit = g("commit-tree", g("write-tree"), "-p", f"{ref}^{{commit}}", "-m", f"Linux {tag[1:]}")
    g("tag", "-d", ref)
    g("tag", tag, commit)
    return newer


def _next(ref: str) -> str:
    major, minor, sub = ref.removeprefix("v").split(".")
    return f"v{major}.{minor}.{int(sub) + 1}"


def test_run_moves_the_sample_fleet_to_the_release_debian_serves(real_kernel: tuple[Path, str],
                                                                  tmp_path: Path) -> None:
    """Debian's linux-source-6.12 moved past the release the sample manifests name: ./run moves the sample
    fleet with ka baseline bump in a clone, says so and which baseline it used, and every host is green."""
    tree, ref = real_kernel
    tag = _next(ref)
    sub = ref.rsplit(".", 1)[1]
    newer = _retagged(tree, ref, tmp_path, tag, "Makefile",
                      lambda text: text.replace(f"SUBLEVEL = {sub}", f"SUBLEVEL = {int(sub) + 1}", 1))
    before = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True).stdout
    env = {**os.environ, "KA_KERNEL_TREE": str(newer), "KA_STATE_DIR": str(tmp_path / "state")}
    res = subprocess.run([str(ROOT / "run"), "promote"], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"has {tag}, not {ref}, which the sample manifests name: moving the sample fleet to {tag}" in res.stderr
    assert f"checking the sample fleet against Linux {tag} from {newer}" in res.stderr
    moved = tmp_path / "state/sample-fleet"
    for host in ("ampere", "fresnel", "ohm"):
        assert f"{host}: moved {ref} -> {tag}" in res.stderr
        assert f"  ref: {tag}\n" in (moved / f"fleet/{host}.yaml").read_text()
    assert "error" not in res.stdout.lower() and "3 hosts" in res.stdout + res.stderr, res.stdout + res.stderr
    after = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True).stdout
    assert after == before  # this checkout is not changed


def test_run_shows_a_promote_failure(real_kernel: tuple[Path, str], tmp_path: Path) -> None:
    """A baseline on which a sample host's patches do not apply ends ./run with the failure and its exit
    code, not a warning that scrolls past before the bot starts."""
    tree, ref = real_kernel
    broken = _retagged(tree, ref, tmp_path, ref, "drivers/staging/Kconfig",
                       lambda text: text.replace('source "drivers/staging/vme_user/Kconfig"', "# vme_user gone"))
    env = {**os.environ, "KA_KERNEL_TREE": str(broken), "KA_STATE_DIR": str(tmp_path / "state")}
    res = subprocess.run([str(ROOT / "run"), "promote"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "patches/driver/bes2600/staging-build.patch" in res.stdout + res.stderr
    assert "run: ka-promote --all failed (exit 1): the sample fleet is not green" in res.stderr


def test_a_full_config_from_another_machine_passes_the_audit(real_kernel: tuple[Path, str], tmp_path: Path) -> None:
    """A full config (tests/samples/qemu/virt.config, written by olddefconfig on another machine) lists what
    Kconfig computes from that machine's toolchain too (RUSTC_VERSION, CC_CAN_LINK, …): not requests, so
    they are counted apart; every option that has a prompt must hold."""
    require(all(shutil.which(t) for t in ("gcc", "flex", "bison")), "gcc, flex and bison (scripts/setup test)")
    tree, ref = real_kernel
    repo = sample_repo(tmp_path / "fleet-repo", ref)
    shutil.copy(ROOT / "tests/samples/qemu/virt.config", repo / "fleet/configs/ampere.config")
    _full_config(repo)
    assert "CONFIG_RUSTC_VERSION=" in (repo / "fleet/configs/ampere.config").read_text()
    res = _render(repo, tree, "ampere", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    audit = next(ln.strip() for ln in res.stdout.splitlines() if "config audit:" in ln)
    assert audit.startswith("config audit: all ") and "that Kconfig computes, not checked)" in audit, audit


def test_the_readme_quick_start_runs_as_written(real_kernel: tuple[Path, str], tmp_path: Path) -> None:
    """README.md's quick start, step 4, in a fleet repository with the kernel tree where ./run imports it and an
    ssh config whose hosts do not answer (none exist yet): each command ends 0 and says what it promises."""
    require(all(shutil.which(t) for t in ("gcc", "flex", "bison")), "gcc, flex and bison (scripts/setup test)")
    tree, ref = real_kernel
    repo = sample_repo(tmp_path / "fleet-repo", ref)
    home = tmp_path / "home"
    (home / ".cache/kernel-agent").mkdir(parents=True)
    (home / ".cache/kernel-agent/linux-6.12.git").symlink_to(tree)
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh/config").write_text("Host *\n  HostName 127.0.0.1\n  Port 1\n")  # a closed port: nothing answers
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KA_")}, "HOME": str(home),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    block = runnable("quick-start")
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"baseline {ref} " in res.stdout and ": applies" in res.stdout and "parity: match" in res.stdout
    assert "config audit: all " in res.stdout and (repo / "out/ampere/build/PKGBUILD").is_file()
    assert "ampere: install dry-run: dry run: nothing was changed; not checked: 4 (below)" in res.stdout
    assert "  - write /boot/extlinux/extlinux.conf: kernel-agent (" in res.stdout
