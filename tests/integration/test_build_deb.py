"""ka-build of Debian packages (package.format: deb) with the real programs: dpkg-buildpackage on the sshd
build hosts, gpg, reprepro on the repository host, and apt reading the signed repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ka.fleet.infra import Repository
from ka.io.ssh import SshSettings
from ka.packages.aptrepo import NotPublishedDeb, fetch, newest
from ka.packages.files import deb_control, members
from tests.support.buildlab import BuildLab, stop_gpg_agent
from tests.support.kernel import write_fleet
from tests.support.needs import require

RELEASE = "6.12.0-ampere-1"
FILES = [f"linux-image-{RELEASE}_6.12.0-1_arm64.deb", f"linux-headers-{RELEASE}_6.12.0-1_arm64.deb"]


def deb_fleet(lab: BuildLab, root: Path, tag: str, extra: str = "", files: dict[str, bytes | str] | None = None
              ) -> tuple[Path, str]:
    """A committed fleet whose host ampere is a Debian host; and its apt repository's folder."""
    apt = lab.ssh.user_folder(tag, "apt")
    infra = (lab.infra(tag) + f"apt_repository:\n  ssh: hertz\n  path: {apt}\n  name: fleet\n  url: file://{apt}\n"
             f"  key: {lab.fingerprint}\n  gnupghome: {lab.repo_gnupghome}\n")
    manifests, parts = lab.parts(tag, infra=infra, files=files)
    manifests["ampere"] += "  format: deb\n" + extra
    return write_fleet(root, manifests, parts), str(apt)


@pytest.fixture(scope="module")
def deb_built(build_lab: BuildLab, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """ampere built as .deb, signed and published once: (the fleet, ka build's JSON, the apt folder)."""
    require(all(os.path.exists(f"/usr/bin/{tool}") for tool in ("dpkg-buildpackage", "reprepro")),
            "dpkg-dev and reprepro (scripts/setup test installs them)")
    repo, apt = deb_fleet(build_lab, tmp_path_factory.mktemp("debbuilt") / "fleet", "debbuilt")
    code, data, err = build_lab.build(repo)
    assert code == 0, err + data.get("log", "")
    return repo, data, apt


def paths(data: dict[str, Any]) -> list[Path]:
    return [Path(a["path"]) for a in data["artifacts"]]


def test_a_deb_build_is_signed_and_published_with_reprepro(deb_built: tuple[Path, dict[str, Any], str],
                                                          build_lab: BuildLab) -> None:
    _, data, apt = deb_built
    assert data["ok"] and data["version"] == "6.12.0-1"
    assert [a["file"] for a in data["artifacts"]] == FILES
    assert all(a["signer"] == build_lab.fingerprint for a in data["artifacts"])
    assert set(data["phases"]) == {"promote", "render", "connect", "upload", "source", "dpkg-buildpackage", "fetch",
                                   "check", "sign", "publish"}
    assert data["repository"]["entries"] == [f"linux-headers-{RELEASE}-6.12.0-1", f"linux-image-{RELEASE}-6.12.0-1"]
    assert (Path(apt) / "dists/fleet/InRelease").is_file() and (Path(apt) / "dists/fleet/Release.gpg").is_file()
    control = deb_control(paths(data)[0])
    assert (control["Package"], control["Version"], control["Architecture"], control["Source"]) == (
        f"linux-image-{RELEASE}", "6.12.0-1", "arm64", "linux-ampere")
    assert control["Depends"].startswith("kmod, initramfs-tools")


def test_what_the_image_package_holds(deb_built: tuple[Path, dict[str, Any], str]) -> None:
    image, headers = paths(deb_built[1])
    found = {m.name: m for m in members(image, keep=lambda n: n in ("DEBIAN/postinst", "DEBIAN/postrm"))}
    modules = f"usr/lib/modules/{RELEASE}"
    assert {f"boot/vmlinuz-{RELEASE}", f"boot/config-{RELEASE}", f"boot/System.map-{RELEASE}",
            f"{modules}/kernel-agent",
            f"{modules}/kernel/drivers/input/touchscreen/goodix.ko",
            f"usr/lib/linux-image-{RELEASE}/rockchip/rk3566-pinetab2.dtb"} <= set(found)
    assert not [m for m in found.values() if m.kind == "link"]
    assert {m.owner for m in found.values()} == {"0:0 root:root"}
    postinst = found["DEBIAN/postinst"].data
    hook = b'--arg="/boot/vmlinuz-' + RELEASE.encode() + b'" /etc/kernel/postinst.d'
    assert postinst is not None and hook in postinst
    assert found["DEBIAN/postinst"].mode == 0o755 and found["DEBIAN/postrm"].data
    link = next(m for m in members(headers) if m.name == f"{modules}/build")
    assert (link.kind, link.link) == ("link", f"../../../src/linux-headers-{RELEASE}")
    held = {m.name for m in members(headers)}
    assert {f"usr/src/linux-headers-{RELEASE}/{name}" for name in ("Makefile", "Module.symvers", "System.map",
                                                                   ".config", "arch/arm64/Makefile")} <= held


def test_two_deb_builds_of_the_same_inputs_are_byte_identical(deb_built: tuple[Path, dict[str, Any], str],
                                                              build_lab: BuildLab, tmp_path: Path) -> None:
    again, _ = deb_fleet(build_lab, tmp_path / "fleet", "debbuilt")
    code, data, err = build_lab.build(again, "--no-publish")
    assert code == 0, err
    for a, b in zip(paths(deb_built[1]), paths(data), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    same = build_lab.ka("pkgdiff", str(paths(deb_built[1])[0]), str(paths(data)[0]))
    assert same.returncode == 0, same.stdout + same.stderr


def test_pkgdiff_of_debs_finds_a_changed_member(deb_built: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    image = paths(deb_built[1])[0]
    tree = tmp_path / "tree"
    subprocess.run(["dpkg-deb", "--raw-extract", str(image), str(tree)], check=True)
    (tree / f"boot/config-{RELEASE}").write_text("CONFIG_CHANGED=y\n")
    changed = tmp_path / "changed.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(changed)], check=True,
                   capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1"})
    diff = subprocess.run([sys.executable, "-m", "ka", "pkgdiff", str(image), str(changed)],
                          capture_output=True, text=True)
    assert diff.returncode == 1 and f"boot/config-{RELEASE}: content differs" in diff.stdout, diff.stdout


def test_apt_reads_the_signed_repository_and_refuses_another_key(deb_built: tuple[Path, dict[str, Any], str],
                                                                 build_lab: BuildLab, tmp_path: Path) -> None:
    _, data, apt = deb_built
    keyring = tmp_path / "fleet.gpg"
    keyring.write_bytes(subprocess.run(["gpg", "--homedir", str(build_lab.gnupghome), "--export",
                                        build_lab.fingerprint], capture_output=True, check=True).stdout)
    assert _apt_update(tmp_path / "good", keyring, apt).returncode == 0
    got = _apt(tmp_path / "good", "download", f"linux-image-{RELEASE}")
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "good" / FILES[0]).read_bytes() == paths(data)[0].read_bytes()
    other = tmp_path / "other.gpg"
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--passphrase", "", "--quick-generate-key",
                    "Other <o@example.org>", "ed25519", "sign", "never"], check=True, capture_output=True)
    other.write_bytes(subprocess.run(["gpg", "--homedir", str(home), "--export"], capture_output=True).stdout)
    stop_gpg_agent(home)
    bad = _apt_update(tmp_path / "bad", other, apt)
    assert "NO_PUBKEY" in bad.stdout + bad.stderr or "not signed" in bad.stdout + bad.stderr, bad.stdout + bad.stderr


def _apt(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    opts = [f"-oDir={root}", f"-oDir::State::status={root}/status", "-oAPT::Architecture=arm64",
            "-oAPT::Architectures=arm64", "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root"]
    return subprocess.run(["apt-get", *opts, *args], capture_output=True, text=True, cwd=root)


def _apt_update(root: Path, keyring: Path, apt: str) -> subprocess.CompletedProcess[str]:
    for sub in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
                "var/cache/apt/archives/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "status").touch()
    (root / "etc/apt/sources.list").write_text(f"deb [signed-by={keyring}] file://{apt} fleet main\n")
    return _apt(root, "update")


def test_a_config_with_localversion_auto_is_refused_before_any_ssh(build_lab: BuildLab, tmp_path: Path) -> None:
    config = 'CONFIG_LOCALVERSION="-ampere"\nCONFIG_LOCALVERSION_AUTO=y\n'
    repo, _ = deb_fleet(build_lab, tmp_path / "fleet", "debauto", files={"fleet/configs/ampere.config": config})
    code, _, err = build_lab.build(repo)
    assert code == 2 and "CONFIG_LOCALVERSION_AUTO=y" in err and "fleet/ampere.yaml" in err, err
    assert "ka-build: connect" not in err  # refused at render, before any ssh


def test_a_refused_republish_leaves_the_published_package_alone(deb_built: tuple[Path, dict[str, Any], str],
                                                               build_lab: BuildLab, tmp_path: Path) -> None:
    """The same version with other bytes (another config): reprepro refuses, and what ka-install fetches stays
    the package the index lists."""
    _, data, apt = deb_built
    config = 'CONFIG_LOCALVERSION="-ampere"\nCONFIG_OPTION_1=y\nCONFIG_OPTION_2=y\n'
    repo, _ = deb_fleet(build_lab, tmp_path / "fleet", "debbuilt", files={"fleet/configs/ampere.config": config})
    code, _, err = build_lab.build(repo)
    assert code == 3 and "reprepro did not take the packages" in err and "published files are unchanged" in err, err
    assert (Path(apt) / "ka" / FILES[0]).read_bytes() == paths(data)[0].read_bytes()


def test_ka_install_finds_and_fetches_the_newest_published_deb(deb_built: tuple[Path, dict[str, Any], str],
                                                              build_lab: BuildLab, tmp_path: Path) -> None:
    """What ka-install does without --package on an apt host: the newest linux-image of the source package (by
    dpkg's order), fetched with its signature, its sha256 the one the signed index lists."""
    _, _, apt = deb_built
    newer, _ = deb_fleet(build_lab, tmp_path / "fleet", "debbuilt", extra="  pkgrel: 10\n")
    code, data, err = build_lab.build(newer)  # 6.12.0-10 beside 6.12.0-1: 10 > 1, as dpkg orders them
    assert code == 0, err
    repo = Repository("hertz", apt, "fleet", f"file://{apt}", build_lab.fingerprint, str(build_lab.repo_gnupghome))
    ssh = SshSettings(build_lab.ssh.config, build_lab.ssh.known_hosts)
    entry = newest(ssh, repo, "linux-ampere")
    assert (entry.name, entry.version) == ("linux-image-6.12.0-ampere-10", "6.12.0-10")
    got = fetch(ssh, repo, entry, tmp_path / "packages")
    assert got.read_bytes() == paths(data)[0].read_bytes() and got.with_name(got.name + ".sig").is_file()
    with pytest.raises(NotPublishedDeb, match="no linux-image package built from linux-other"):
        newest(ssh, repo, "linux-other")
    published = Path(apt) / "ka" / entry.filename
    good = published.read_bytes()
    try:
        published.write_bytes(b"not the package")  # damaged after publishing
        with pytest.raises(NotPublishedDeb, match="is not the one fleet's index lists"):
            fetch(ssh, repo, entry, tmp_path / "again")
    finally:
        published.write_bytes(good)
