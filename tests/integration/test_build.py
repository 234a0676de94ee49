"""ka-build with the real programs: sshd build hosts, makepkg as a non-root user, gpg, repo-add, pacman."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from ka.packages.files import members, pkginfo
from tests.support import PROJECT
from tests.support.buildlab import CONFIG, BuildLab, stop_gpg_agent
from tests.support.docs import runnable
from tests.support.fleet import AMPERE, fleet_files
from tests.support.kernel import git, write_fleet
from tests.support.sshhosts import USER, Tripwire, run


def packages(data: dict[str, Any]) -> list[Path]:
    return [Path(a["path"]) for a in data["artifacts"]]


def test_a_build_on_the_primary_is_signed_and_published(built: tuple[Path, dict[str, Any]],
                                                        build_lab: BuildLab) -> None:
    repo, data = built
    assert data["ok"] and data["build_host"] == "boltzmann" and data["fallback"] == []
    assert data["version"] == "6.12.0-1" and data["baseline"] == "v6.12.0"
    assert [a["file"] for a in data["artifacts"]] == ["linux-ampere-6.12.0-1-aarch64.pkg.tar.zst",
                                                     "linux-ampere-headers-6.12.0-1-aarch64.pkg.tar.zst"]
    for a in data["artifacts"]:
        assert a["signer"] == build_lab.fingerprint and Path(a["path"]).stat().st_size == a["size"]
    assert data["repository"]["entries"] == ["linux-ampere-6.12.0-1", "linux-ampere-headers-6.12.0-1"]
    assert set(data["phases"]) == {"promote", "render", "connect", "upload", "source", "makepkg", "fetch", "check",
                                   "sign", "publish"}
    info = pkginfo(packages(data)[0])
    assert info["pkgname"] == ["linux-ampere"] and info["packager"] == ["Fleet Test <fleet@example.org>"]
    assert info["arch"] == ["aarch64"]
    assert (repo / "out/ampere/ampere-cumulative.patch").is_file()  # promote's outputs come first


def test_what_the_kernel_package_holds(built: tuple[Path, dict[str, Any]]) -> None:
    kernel, headers = packages(built[1])
    names = {m.name: m for m in members(kernel)}
    assert {"boot/Image", "boot/dtbs/rockchip/rk3566-pinetab2.dtb", "etc/mkinitcpio.d/linux-ampere.preset",
            "usr/lib/modules/6.12.0-ampere-1/pkgbase",
            "usr/lib/modules/6.12.0-ampere-1/kernel/drivers/input/touchscreen/goodix.ko"} <= set(names)
    assert not [m for m in names.values() if m.kind == "link"]  # modules_install's absolute links are gone
    preset = _member(kernel, "etc/mkinitcpio.d/linux-ampere.preset").decode()
    assert 'ALL_kver="6.12.0-ampere-1"' in preset and "vmlinuz" not in preset.split("\n", 2)[2]
    link = next(m for m in members(headers) if m.name == "usr/lib/modules/6.12.0-ampere-1/build")
    assert (link.kind, link.link) == ("link", "../../../src/linux-ampere")
    held = {m.name for m in members(headers)}
    # what the tree's scripts/package/install-extmod-build gives (in this tree, a stand-in that takes the
    # same kinds of files), then System.map and .config: what building a module needs
    assert {f"usr/src/linux-ampere/{name}" for name in ("Makefile", "Module.symvers", "System.map", ".config",
                                                        "arch/arm64/Makefile", "scripts/kconfig/merge_config.sh",
                                                        "include/linux/mmc/sdio_ids.h")} <= held


def _member(pkg: Path, name: str) -> bytes:
    data = subprocess.run(["zstd", "-dcq", str(pkg)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read()


def test_signatures_verify_with_gpg_and_pacman_key(built: tuple[Path, dict[str, Any]], build_lab: BuildLab) -> None:
    for pkg in packages(built[1]):
        sig = pkg.with_name(pkg.name + ".sig")
        gpg = subprocess.run(["gpg", "--homedir", str(build_lab.gnupghome), "--verify", str(sig), str(pkg)],
                             capture_output=True, text=True)
        assert gpg.returncode == 0, gpg.stderr
        key = subprocess.run(["pacman-key", "--gpgdir", str(build_lab.pacman_keyring), "--verify", str(sig), str(pkg)],
                             capture_output=True, text=True)
        assert key.returncode == 0, key.stdout + key.stderr
    tampered = packages(built[1])[0].with_name("tampered.pkg.tar.zst")
    tampered.write_bytes(packages(built[1])[0].read_bytes() + b"\0")
    bad = subprocess.run(["pacman-key", "--gpgdir", str(build_lab.pacman_keyring), "--verify",
                          str(packages(built[1])[0]) + ".sig", str(tampered)], capture_output=True, text=True)
    assert bad.returncode != 0


def test_pacman_installs_it_from_the_repository_with_signatures_required(built: tuple[Path, dict[str, Any]],
                                                                        build_lab: BuildLab, tmp_path: Path) -> None:
    repo_path = built[1]["repository"]["path"]
    root = tmp_path / "root"
    (root / "var/lib/pacman").mkdir(parents=True)
    conf = tmp_path / "pacman.conf"
    conf.write_text(f"[options]\nRootDir = {root}\nDBPath = {root}/var/lib/pacman\nCacheDir = {root}/cache\n"
                    f"LogFile = {root}/pacman.log\nGPGDir = {build_lab.pacman_keyring}\nHookDir = {root}/hooks\n"
                    "Architecture = aarch64\nSigLevel = Required DatabaseRequired\nLocalFileSigLevel = Required\n\n"
                    f"[fleet]\nServer = file://{repo_path}\n")
    pacman = ["pacman", "--config", str(conf), "--noconfirm"]
    sync = subprocess.run([*pacman, "-Sy", "-dd", "linux-ampere", "linux-ampere-headers"], capture_output=True,
                          text=True)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert (root / "boot/Image").is_file()
    assert (root / "usr/lib/modules/6.12.0-ampere-1/build").resolve() == (root / "usr/src/linux-ampere").resolve()
    listed = subprocess.run([*pacman, "-Q"], capture_output=True, text=True).stdout
    assert "linux-ampere 6.12.0-1" in listed


def test_two_builds_of_the_same_inputs_are_byte_identical(built: tuple[Path, dict[str, Any]],
                                                          build_lab: BuildLab, tmp_path: Path) -> None:
    again = build_lab.fleet(tmp_path / "fleet", "built")  # the same inputs (and commit time), another checkout
    assert git(again, "show", "-s", "--format=%ct") == git(built[0], "show", "-s", "--format=%ct")
    code, data, err = build_lab.build(again, "--no-publish")
    assert code == 0, err
    for a, b in zip(packages(built[1]), packages(data), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_primary_down_falls_back_and_says_why(build_lab: BuildLab, tmp_path: Path) -> None:
    repo = build_lab.fleet(tmp_path / "fleet", "fallback")
    host = build_lab.ssh.hosts["boltzmann"]
    host.stop()
    try:
        code, data, err = build_lab.build(repo, "--no-publish")
    finally:
        host.start()
    assert code == 0, err
    assert data["build_host"] == "fermi"
    assert len(data["fallback"]) == 1
    assert data["fallback"][0].startswith(f"boltzmann (build_hosts[0].ssh, fleet/infra.yaml:2): {host.address}:2222: ")
    assert data["fallback"][0].endswith(f"; from {build_lab.ssh.config}")  # the ssh config that said where it is
    assert "build host boltzmann cannot be reached" in (repo / "out/ampere/build.log").read_text()


def test_both_build_hosts_down_is_a_clear_failure(build_lab: BuildLab, tmp_path: Path) -> None:
    repo = build_lab.fleet(tmp_path / "fleet", "down")
    for name in ("boltzmann", "fermi"):
        build_lab.ssh.hosts[name].stop()
    try:
        res = build_lab.ka("build", "ampere", "--repo", str(repo), "--kernel-tree", str(build_lab.kernel.bare))
    finally:
        for name in ("boltzmann", "fermi"):
            build_lab.ssh.hosts[name].start()
    assert res.returncode == 3
    boltzmann, fermi = (build_lab.ssh.hosts[name].address for name in ("boltzmann", "fermi"))
    assert ("ka: error: no build host can be reached:\n"
            f"  boltzmann (build_hosts[0].ssh, fleet/infra.yaml:2): {boltzmann}:2222: ") in res.stderr
    assert f"\n  fermi (build_hosts[1].ssh, fleet/infra.yaml:4): {fermi}:2222: " in res.stderr


def test_a_source_that_does_not_compile_fails_without_fallback(build_lab: BuildLab, tmp_path: Path) -> None:
    repo = build_lab.fleet(tmp_path / "fleet", "broken", files={"patches/module/oops.patch":
                                                                build_lab.kernel.patches["broken-build"]},
                           includes=("soc/base", "module/oops"))
    res = build_lab.ka("build", "ampere", "--repo", str(repo), "--kernel-tree", str(build_lab.kernel.bare))
    assert res.returncode == 1, res.stderr
    assert "makepkg failed on boltzmann" in res.stderr
    assert "the folder is kept for inspection at boltzmann:" in res.stderr
    assert "goodix.c: error: #error" in res.stderr  # the log's tail
    kept = res.stderr.split("inspection at boltzmann:")[1].split()[0]
    assert Path(kept, "PKGBUILD").is_file()  # really kept (the lab's hosts share this machine's disk)
    assert "fermi" not in (repo / "out/ampere/build.log").read_text()


def test_a_config_the_tree_does_not_hold_stops_before_compiling(build_lab: BuildLab, tmp_path: Path) -> None:
    config = 'CONFIG_LOCALVERSION="-ampere"\nCONFIG_OPTION_1=y\nCONFIG_NOT_IN_KCONFIG=y\n'
    repo = build_lab.fleet(tmp_path / "fleet", "audit", files={"fleet/configs/ampere.config": config})
    code, data, err = build_lab.build(repo)
    assert code == 1, err
    assert ("ampere: the final .config does not hold what fleet/ampere.yaml's package.config asks for; nothing was "
            "compiled") in data["error"]
    finding = "config audit: CONFIG_NOT_IN_KCONFIG: asked y, but no Kconfig defines it (fleet/configs/ampere.config:3)"
    assert finding in data["error"] and data["audit"][0] == finding
    assert "1 of 3 requested options" in data["audit"][-1]
    assert data["artifacts"] == [] and "makepkg failed" not in data["error"]
    log = (repo / "out/ampere/build.log").read_text()
    assert "==> Starting prepare()" in log and "==> Starting build()" not in log  # stopped before compiling


def test_fragments_are_merged_onto_the_trees_defconfig(build_lab: BuildLab, tmp_path: Path) -> None:
    """``make defconfig`` of the patched tree (the arch/defconfig series turns option 10 into a module), then
    the fragments in order: the later one's value wins; the packaged .config is the merge."""
    files = {"fleet/configs/fleet.config": "CONFIG_OPTION_2=m\nCONFIG_OPTION_3=m\n"
                                           "# CONFIG_LOCALVERSION_AUTO is not set\n",
             "fleet/configs/ampere.config": 'CONFIG_LOCALVERSION="-ampere"\n# CONFIG_OPTION_3 is not set\n'}
    repo = build_lab.fleet(tmp_path / "fleet", "frag", files=files, config="{base: defconfig, fragments: "
                           "[fleet/configs/fleet.config, fleet/configs/ampere.config]}")
    code, data, err = build_lab.build(repo, "--no-publish")
    assert code == 0, err
    assert data["audit"] == ["config audit: all 4 requested options hold in the final .config"]
    headers = next(Path(a["path"]) for a in data["artifacts"] if "-headers-" in a["file"])
    config = subprocess.run(["bsdtar", "-xOf", str(headers), "usr/src/linux-ampere/.config"], capture_output=True,
                            check=True, text=True).stdout.splitlines()
    assert "CONFIG_OPTION_10=m" in config and "CONFIG_OPTION_1=y" in config  # the patched defconfig
    assert "CONFIG_OPTION_2=m" in config and "# CONFIG_OPTION_3 is not set" in config
    assert "CONFIG_OPTION_3=m" not in config and "CONFIG_OPTION_2=y" not in config


def test_a_cross_compiling_build_host_rebuilds_the_headers_host_programs(build_lab: BuildLab,
                                                                        tmp_path: Path) -> None:
    """With cross_compile set, install-extmod-build gets CC=<prefix>gcc beside HOSTCC=gcc, and rebuilds
    fixdep, modpost and the rest with it (the stand-in says so), so that they run on the device."""
    infra = build_lab.infra("cross", hosts=("boltzmann",))
    infra = infra.replace("\n    workdir: ", "\n    cross_compile: aarch64-linux-gnu-\n    workdir: ", 1)
    repo = build_lab.fleet(tmp_path / "fleet", "cross", infra=infra)
    code, _, err = build_lab.build(repo, "--no-publish")
    assert code == 0, err
    log = (repo / "out/ampere/build.log").read_text()
    assert "Rebuilding host programs with aarch64-linux-gnu-gcc..." in log


def test_a_patch_that_does_not_apply_is_refused_before_any_ssh(build_lab: BuildLab, tmp_path: Path) -> None:
    nowhere = "build_hosts:\n  - ssh: nowhere.invalid\n    workdir: w\n"
    repo = build_lab.fleet(tmp_path / "fleet", "refused", includes=("soc/base", "module/bad"), infra=nowhere)
    res = build_lab.ka("build", "ampere", "--repo", str(repo), "--kernel-tree", str(build_lab.kernel.bare))
    assert res.returncode == 1
    assert ("ka: error: ampere: the cumulative patch does not apply on v6.12.0: patches/module/bad.patch: "
            "context does not match") in res.stderr and "nothing was built" in res.stderr
    assert "nowhere" not in res.stderr


def test_render_only_is_stable_and_makepkg_reads_it(build_lab: BuildLab, tmp_path: Path) -> None:
    repo = build_lab.fleet(tmp_path / "fleet", "render")
    outs = []
    for n in (1, 2):
        res = build_lab.ka("build", "ampere", "--repo", str(repo), "--render-only", str(tmp_path / f"r{n}"))
        assert res.returncode == 0, res.stderr
        outs.append({p.name: p.read_bytes() for p in sorted((tmp_path / f"r{n}").iterdir())})
    assert outs[0] == outs[1]
    assert set(outs[0]) == {"PKGBUILD", "ampere-cumulative.patch", "config", "config.requested", "kconfig.sh",
                            "linux-ampere.preset", "ka-build.env", "ka-build.folder"}
    srcinfo = subprocess.run(["runuser", "-u", "kabuild", "--", "makepkg", "--printsrcinfo"], cwd=_shared(
        tmp_path / "r1"), capture_output=True, text=True)
    assert srcinfo.returncode == 0, srcinfo.stderr
    assert "pkgbase = linux-ampere" in srcinfo.stdout and "pkgname = linux-ampere-headers" in srcinfo.stdout
    assert f"source = linux::git+{build_lab.source}#tag=v6.12.0" in srcinfo.stdout  # no kernel tree: the tag
    res = build_lab.ka("build", "ampere", "--repo", str(repo), "--render-only", str(tmp_path / "pinned"),
                       "--kernel-tree", str(build_lab.kernel.bare))
    assert res.returncode == 0, res.stderr
    srcinfo = subprocess.run(["runuser", "-u", "kabuild", "--", "makepkg", "--printsrcinfo"],
                             cwd=_shared(tmp_path / "pinned"), capture_output=True, text=True)
    commit = git(build_lab.kernel.bare, "rev-parse", "v6.12.0^{commit}").decode().strip()
    assert f"source = linux::git+{build_lab.source}#commit={commit}" in srcinfo.stdout, srcinfo.stdout


def test_a_moved_tag_does_not_change_what_is_built(built: tuple[Path, dict[str, Any]], build_lab: BuildLab,
                                                   tmp_path: Path) -> None:
    """The source is checked out at the baseline's commit id from the kernel tree, not at the tag: a tag
    re-pointed on the remote (or in a build host's cache) builds nothing else."""
    moved = build_lab.ssh.user_folder("moved-tag") / "linux.git"
    run("git", "clone", "-q", "--mirror", build_lab.source, str(moved), user=USER)
    work = build_lab.ssh.user_folder("moved-tag", "work")
    run("git", "clone", "-q", str(moved), str(work / "w"), user=USER)
    (work / "w/Makefile").write_text((work / "w/Makefile").read_text().replace("kernel-agent test build",
                                                                              "someone else's build"))
    run("git", "-C", str(work / "w"), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "moved",
        user=USER)
    run("git", "-C", str(work / "w"), "push", "-q", "-f", "origin", "HEAD:refs/tags/v6.12.0", user=USER)
    repo = build_lab.fleet(tmp_path / "fleet", "moved-tag")
    (repo / "fleet/ampere.yaml").write_text((repo / "fleet/ampere.yaml").read_text().replace(
        build_lab.source, f"file://{moved}"))
    code, data, err = build_lab.build(repo, "--no-publish")
    assert code == 0, err
    image = _member(packages(data)[0], "boot/Image")
    assert b"someone else's build" not in image and image == _member(packages(built[1])[0], "boot/Image")


def _shared(folder: Path) -> Path:
    """A copy the build user can read (makepkg refuses root)."""
    import shutil
    import tempfile

    copy = Path(tempfile.mkdtemp(prefix="ka-render-"))
    shutil.copytree(folder, copy, dirs_exist_ok=True)
    subprocess.run(["chown", "-R", "kabuild", str(copy)], check=True)
    copy.chmod(0o755)
    return copy


def test_pkgdiff_finds_a_changed_member_and_ignores_a_changed_time(built: tuple[Path, dict[str, Any]],
                                                                  tmp_path: Path, build_lab: BuildLab) -> None:
    kernel = packages(built[1])[0]
    same = build_lab.ka("pkgdiff", str(kernel), str(kernel), "--json")
    assert same.returncode == 0 and json.loads(same.stdout)["same"]
    retimed = _repack(kernel, tmp_path / "retimed.pkg.tar.zst", lambda name, data: data, mtime=12345)
    assert build_lab.ka("pkgdiff", str(kernel), str(retimed)).returncode == 0
    changed = _repack(kernel, tmp_path / "changed.pkg.tar.zst",
                      lambda name, data: data + b"x" if name == "boot/Image" else data)
    res = build_lab.ka("pkgdiff", str(kernel), str(changed))
    assert res.returncode == 1 and "boot/Image: content differs" in res.stdout


def _repack(pkg: Path, out: Path, edit: Any, mtime: int | None = None) -> Path:
    data = subprocess.run(["zstd", "-dcq", str(pkg)], capture_output=True, check=True).stdout
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, \
            tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            content = src.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            if mtime is not None:
                info.mtime = mtime
            if content is not None:
                content = edit(info.name, content)
                info.size = len(content)
            dst.addfile(info, io.BytesIO(content) if content is not None else None)
    out.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=buf.getvalue(), capture_output=True,
                                   check=True).stdout)
    return out


def test_an_unknown_host_key_stops_the_build(build_lab: BuildLab, tmp_path: Path) -> None:
    repo = build_lab.fleet(tmp_path / "fleet", "keys")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    res = build_lab.ka("build", "ampere", "--repo", str(repo), "--known-hosts", str(empty), "--kernel-tree",
                       str(build_lab.kernel.bare))
    assert res.returncode == 3
    assert "host key ssh-ed25519 SHA256:" in res.stderr and "is not in" in res.stderr


def test_a_host_without_a_package_section_is_named(build_lab: BuildLab, tmp_path: Path) -> None:
    repo = write_fleet(tmp_path / "fleet", {"ampere": AMPERE}, fleet_files(build_lab.kernel))
    res = build_lab.ka("build", "ampere", "--repo", str(repo))
    assert res.returncode == 2 and "fleet/ampere.yaml: package: missing: ka-build needs a package section" in res.stderr


def test_check_against_a_previous_package(built: tuple[Path, dict[str, Any]], build_lab: BuildLab,
                                          tmp_path: Path) -> None:
    repo = build_lab.fleet(tmp_path / "fleet", "check")
    kernel = packages(built[1])[0]
    code, data, err = build_lab.build(repo, "--no-publish", "--check-against", str(kernel))
    assert code == 0 and data["pkgdiff"]["same"], err
    other = _repack(kernel, tmp_path / "other.pkg.tar.zst",
                    lambda name, content: content + b"\n" if name.endswith("modules.dep") else content)
    code, data, err = build_lab.build(repo, "--no-publish", "--check-against", str(other))
    assert code == 1 and "modules.dep: content differs" in err


def test_a_rev_off_head_builds_as_a_pull_request_with_the_checkouts_settings(build_lab: BuildLab,
                                                                              tmp_path: Path) -> None:
    """The bot's "by hand" line for a pull request is ``ka-build HOST --rev SHA``: run by an operator, it must
    neither take the pull request's infra.yaml nor sign and publish its code."""
    repo = build_lab.fleet(tmp_path / "fleet", "cli-rev")
    git(repo, "checkout", "-q", "-b", "topic")
    (repo / "fleet/infra.yaml").write_text("build_hosts:\n  - ssh: ampere\n    workdir: /tmp\n")
    git(repo, "commit", "-qam", "build on a fleet host")
    topic = git(repo, "rev-parse", "HEAD").decode().strip()
    git(repo, "checkout", "-q", "main")
    code, data, err = build_lab.build(repo, "--rev", topic)
    assert code == 0, err
    assert "is not HEAD or one of its ancestors: built as a pull request's commit" in err
    assert data["build_host"] == "planck" and data["repository"] is None
    assert data["unpublished"] and all(a["signer"] is None for a in data["artifacts"])
    code, data, err = build_lab.build(repo, "--rev", "HEAD", "--no-publish")
    assert code == 0 and data["build_host"] == "boltzmann", err


def test_parity_canonical_on_a_build_host_over_sftp(build_lab: BuildLab, tmp_path: Path) -> None:
    folder = build_lab.ssh.user_folder("canonical", "src")
    repo = build_lab.fleet(tmp_path / "fleet", "canonical", infra=build_lab.infra("canonical", references=str(folder)))
    assert build_lab.ka("promote", "ampere", "--repo", str(repo)).returncode == 0
    cumulative = (repo / "out/ampere/ampere-cumulative.patch").read_bytes()
    remote = folder / "0001-bes2600-cumulative-series.patch"
    remote.write_bytes(cumulative)
    manifest = (repo / "fleet/ampere.yaml").read_text()
    (repo / "fleet/ampere.yaml").write_text(manifest + f"parity:\n  canonical: boltzmann:{remote}\n")
    res = build_lab.ka("promote", "ampere", "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["parity"] == "match"
    remote.write_bytes(cumulative.replace(b"wifi", b"WIFI", 1))
    res = build_lab.ka("promote", "ampere", "--repo", str(repo), "--json")
    data = json.loads(res.stdout)
    assert res.returncode == 1 and data["parity"] == "mismatch"
    assert data["parity_detail"]["patch"] == "patches/board/pinetab2/0001-wifi.patch"
    assert b"WIFI" in remote.read_bytes() and "WIFI" not in res.stdout  # where, never the reference's bytes
    (repo / "fleet/ampere.yaml").write_text(manifest + f"parity:\n  canonical: boltzmann:{folder}/none.patch\n")
    res = build_lab.ka("promote", "ampere", "--repo", str(repo))
    assert res.returncode == 3 and f"parity.canonical: boltzmann:{folder}/none.patch: no such file" in res.stderr


def test_a_parity_reference_outside_the_allowed_folders_is_never_read(build_lab: BuildLab, tmp_path: Path) -> None:
    """parity.canonical may name only files inside infra.yaml's parity_references: no connection otherwise,
    and a symlink inside the folder that leads out of it is not followed."""
    folder = build_lab.ssh.user_folder("allowed", "refs")
    secret = build_lab.ssh.user_folder("allowed", "private") / "key"
    secret.write_text("PRIVATE KEY MATERIAL\n")
    tripwire = Tripwire()
    config = tmp_path / "ssh_config"
    config.write_text(build_lab.ssh.config.read_text() + tripwire.config())
    repo = build_lab.fleet(tmp_path / "fleet", "allowed", infra=build_lab.infra("allowed", references=str(folder)))
    manifest = (repo / "fleet/ampere.yaml").read_text()
    try:
        for target in (f"tripwire:{folder}/x.patch", f"boltzmann:{secret}", f"boltzmann:{folder}x/y.patch",
                       "boltzmann:.ssh/authorized_keys"):
            (repo / "fleet/ampere.yaml").write_text(manifest + f"parity:\n  canonical: {target}\n")
            res = build_lab.ka("promote", "ampere", "--repo", str(repo), "--ssh-config", str(config))
            assert res.returncode == 2, res.stderr
            assert f"parity.canonical: {target} is not inside a folder of parity_references in " \
                   "fleet/infra.yaml: nothing was read" in res.stderr
        assert tripwire.connections == 0
    finally:
        tripwire.close()
    (folder / "evil.patch").symlink_to(secret)
    (repo / "fleet/ampere.yaml").write_text(manifest + f"parity:\n  canonical: boltzmann:{folder}/evil.patch\n")
    res = build_lab.ka("promote", "ampere", "--repo", str(repo), "--json")
    assert res.returncode == 3 and "outside" in res.stderr and "(a symlink)" in res.stderr, res.stderr
    assert "PRIVATE KEY" not in res.stdout + res.stderr


def readme_recipe() -> list[str]:
    """The documented manual build, as written: the block under "Building by hand" in docs/build.md."""
    return runnable("build-by-hand").text.splitlines()


def test_the_readmes_manual_recipe_gives_the_same_package_as_ka_build(build_lab: BuildLab, tmp_path: Path) -> None:
    repo = build_lab.fleet(tmp_path / "fleet", "by-hand")
    code, data, err = build_lab.build(repo, "--no-publish")
    assert code == 0, err
    lines = readme_recipe()
    assert lines[0].startswith("host=ampere build_host=boltzmann ")  # the one line a user edits
    workdir = build_lab.ssh.user_folder("by-hand", "manual")
    lines[0] = f"host=ampere build_host=boltzmann workdir={workdir} key={build_lab.fingerprint} " \
               f"tree={build_lab.kernel.bare}"
    wrappers = tmp_path / "bin"  # the user's ssh and scp, with this lab's ssh config
    wrappers.mkdir()
    for tool in ("ssh", "scp"):
        (wrappers / tool).write_text(f"#!/bin/sh\nexec /usr/bin/{tool} -F {build_lab.ssh.config} \"$@\"\n")
        (wrappers / tool).chmod(0o755)
    venv = Path(sys.executable).parent
    env = {**build_lab.env(), "PATH": f"{wrappers}:{venv}:{os.environ['PATH']}"}
    script = "set -eu\n" + "\n".join(lines) + "\n"
    res = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the same, modulo when and where they were built" in res.stdout
    by_hand = sorted((repo / "out/ampere/by-hand").glob("*.pkg.tar.zst"))
    assert [p.name for p in by_hand] == [a["file"] for a in data["artifacts"]]
    for ours, theirs in zip(by_hand, packages(data), strict=True):
        assert build_lab.ka("pkgdiff", str(ours), str(theirs)).returncode == 0, ours.name
        assert ours.with_name(ours.name + ".sig").is_file()


def test_the_sample_fleet_renders_for_makepkg(build_lab: BuildLab, tmp_path: Path) -> None:
    root = PROJECT
    for host in ("ampere", "fresnel", "ohm"):
        res = build_lab.ka("build", host, "--render-only", str(tmp_path / host), cwd=root)
        assert res.returncode == 0, res.stderr
        srcinfo = subprocess.run(["runuser", "-u", "kabuild", "--", "makepkg", "--printsrcinfo"],
                                 cwd=_shared(tmp_path / host), capture_output=True, text=True)
        assert srcinfo.returncode == 0, srcinfo.stderr
        assert f"pkgbase = linux-{host}" in srcinfo.stdout and "pkgver = 6.12.117" in srcinfo.stdout


def _repository(build_lab: BuildLab, tag: str) -> dict[str, str]:
    """Every file of a repository folder and its sha256 (symlinks by target): the repository byte for byte."""
    root = build_lab.ssh.user_folder(tag, "repo")
    return {str(p.relative_to(root)): (f"-> {os.readlink(p)}" if p.is_symlink() else
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if not p.is_dir() and p.name != ".ka-repo.lock"}


def test_a_published_versions_bytes_never_change(built: tuple[Path, dict[str, Any]], build_lab: BuildLab,
                                                 tmp_path: Path) -> None:
    """The same version with other bytes (another config, pkgrel unchanged) is refused, and the repository is
    byte for byte as before; the same bytes again publish as a no-op (the published signature stays)."""
    before = _repository(build_lab, "built")
    assert any(name.endswith(".pkg.tar.zst") for name in before), before
    other = 'CONFIG_LOCALVERSION="-ampere"\nCONFIG_OPTION_1=y\nCONFIG_OPTION_2=y\n'
    repo = build_lab.fleet(tmp_path / "other", "built", files={"fleet/configs/ampere.config": other})
    code, _, err = build_lab.build(repo)
    assert code == 3 and "is published with other bytes" in err and "raise package.pkgrel" in err, err
    assert "the repository is unchanged" in err
    assert _repository(build_lab, "built") == before
    same = build_lab.fleet(tmp_path / "same", "built")  # the same inputs: the same bytes
    code, _, err = build_lab.build(same)
    assert code == 0, err
    assert _repository(build_lab, "built") == before


def test_a_publish_that_fails_leaves_the_repository_as_it_was(built: tuple[Path, dict[str, Any]],
                                                               build_lab: BuildLab, tmp_path: Path) -> None:
    """--replace with other bytes, and repo-add cannot sign (the repository host's keyring lacks the key): the
    replaced packages, their signatures and the database all come back; nothing half-published stays."""
    before = _repository(build_lab, "built")
    keyless = build_lab.ssh.user_folder("keyless-gnupg")
    infra = build_lab.infra("built").replace(str(build_lab.repo_gnupghome), str(keyless))
    other = 'CONFIG_LOCALVERSION="-ampere"\nCONFIG_OPTION_1=y\nCONFIG_OPTION_2=y\n'
    repo = build_lab.fleet(tmp_path / "fleet", "built", infra=infra, files={"fleet/configs/ampere.config": other})
    try:
        code, _, err = build_lab.build(repo, "--replace")
    finally:
        stop_gpg_agent(keyless, user=USER)
    assert code == 3 and "did not take the packages" in err and "the repository is unchanged" in err, err
    assert _repository(build_lab, "built") == before


def test_a_second_build_of_the_same_inputs_waits_for_none_and_says_who_builds(build_lab: BuildLab,
                                                                              tmp_path: Path) -> None:
    """Builds of the same inputs share a folder on the build host: while one holds its lock, another is refused
    with who holds it since when, and leaves the folder and the lock alone (it used to fail inside makepkg)."""
    repo = build_lab.fleet(tmp_path / "fleet", "locked")
    code, _, err = build_lab.build(repo, "--render-only", str(tmp_path / "rendered"))
    assert code == 0, err
    name = (tmp_path / "rendered" / "ka-build.folder").read_text().strip()
    lock = build_lab.ssh.user_folder("locked", "boltzmann") / f"{name}.lock"
    run("mkdir", str(lock), user=USER)
    run("sh", "-c", f"echo 'maintainer@desk pid 42 since 2026-12-03 10:00:00 UTC' > {lock}/owner", user=USER)
    code, _, err = build_lab.build(repo, "--no-publish")
    assert code == 3, err
    assert "another build of these inputs is running on boltzmann (maintainer@desk pid 42 since 2026-12-03" in err
    assert f"remove {lock} there" in err and "makepkg" not in err.split("ka-build: connect")[-1]
    assert (lock / "owner").read_text().startswith("maintainer@desk pid 42")
    run("rm", "-rf", str(lock), user=USER)
    code, _, err = build_lab.build(repo, "--no-publish")
    assert code == 0, err
    assert not lock.exists()  # taken and let go


def test_a_repository_down_at_publish_says_where_the_packages_are_and_publish_only_publishes_them(
        build_lab: BuildLab, tmp_path: Path) -> None:
    """The packages were built and signed: the failure says where they are, and --publish-only publishes those
    very files later (their signature and inputs checked) without building again."""
    down = build_lab.ssh.add("repo-down", 27)
    down.stop()
    infra = build_lab.infra("pubdown")
    repo = build_lab.fleet(tmp_path / "fleet", "pubdown",
                           infra=infra.replace("repository:\n  ssh: hertz", "repository:\n  ssh: repo-down"))
    code, data, err = build_lab.build(repo)
    assert code == 3, err
    assert "built and signed, but not published: " in err and "repo-down" in err
    assert "ka-build ampere --publish-only" in err
    packages = [Path(a["path"]) for a in data["artifacts"]]
    assert all(p.is_file() and p.with_name(p.name + ".sig").is_file() for p in packages)
    assert all(str(p) in err for p in packages)
    assert _repository(build_lab, "pubdown") == {}
    (repo / "fleet/infra.yaml").write_text(infra)  # the repository is reachable again
    code, data, err = build_lab.build(repo, "--publish-only")
    assert code == 0, err
    assert "makepkg" not in (repo / "out/ampere/build.log").read_text()  # nothing was built again
    published = _repository(build_lab, "pubdown")
    for p in packages:
        assert published[p.name] == hashlib.sha256(p.read_bytes()).hexdigest()
    # a package of other inputs is not published under today's manifest
    (repo / "fleet/configs/ampere.config").write_text(CONFIG + "CONFIG_SOMETHING_ELSE=y\n")
    code, _, err = build_lab.build(repo, "--publish-only")
    assert code == 1 and "the config of that build differ" in err and "build it: ka-build ampere" in err


def test_a_build_host_whose_disk_fills_is_named_and_its_folder_removed(build_lab: BuildLab, tmp_path: Path) -> None:
    workdir = build_lab.ssh.user_folder("diskfull", "boltzmann")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(workdir)], check=True)
    try:
        subprocess.run(["chown", f"{USER}:{USER}", str(workdir)], check=True)
        repo = build_lab.fleet(tmp_path / "fleet", "diskfull")
        code, _, err = build_lab.build(repo, "--no-publish")
        left = sorted(p.name for p in workdir.iterdir())
    finally:
        subprocess.run(["umount", str(workdir)], check=True)
    assert code == 3, err
    assert "the build host boltzmann ran out of disk space" in err and "No space left on device" in err
    assert "its build folder was removed" in err and "KiB free)" in err and "kept for inspection" not in err
    # the shared source and compiler caches and the slots' lock files stay; the build's own folder and lock go
    assert left == [".ka-slots", "ccache", "sources"], left
