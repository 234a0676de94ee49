"""A real arm64 fleet host: QEMU's virt machine, Debian's U-Boot, extlinux.conf, a Debian arm64 kernel.

Marked ``qemu`` (``pytest -m qemu`` runs these alone); CI runs them with the rest.  The serial console
of every boot is kept in ``test-artifacts/`` (or ``$KA_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ka.fleet.infra import Repository
from ka.io.ssh import HostKeyRefused, SshError, SshSettings, connect
from ka.packages.aptrepo import publish_deb
from ka.packages.sign import sign
from tests.support import PROJECT, qemuhost
from tests.support.installlab import CONFIG, INCLUDES, InstallLab, fleet_files, manifest
from tests.support.kernel import write_fleet

pytestmark = pytest.mark.qemu
ARTIFACTS = Path(os.environ.get("KA_TEST_ARTIFACTS") or PROJECT / "test-artifacts")
BOOT_ID = "/proc/sys/kernel/random/boot_id"
@contextmanager
def console_kept(machine: qemuhost.Vm, name: str) -> Iterator[qemuhost.Vm]:
    """The VM, stopped at the end, its serial console copied to ARTIFACTS/<name>.serial.log."""
    try:
        yield machine
    finally:
        machine.stop()
        if machine.serial.exists():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(machine.serial, ARTIFACTS / f"{name}.serial.log")


@pytest.fixture
def vm(qemu_image: qemuhost.Image, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[qemuhost.Vm]:
    with console_kept(qemuhost.Vm(qemu_image, tmp_path / "vm"), request.node.name) as machine:
        yield machine


def settings(vm: qemuhost.Vm, folder: Path, host_key: str | None = None) -> SshSettings:
    (folder / "ssh_config").write_text(vm.ssh_config("qemu"))
    known = vm.known_hosts() if host_key is None else f"[127.0.0.1]:{vm.port} {host_key}\n"
    (folder / "known_hosts").write_text(known)
    return SshSettings(config=folder / "ssh_config", known_hosts=folder / "known_hosts")


def test_the_readmes_build_command_runs_as_written(qemu_image: qemuhost.Image) -> None:
    """``.venv/bin/python tests/support/qemuhost.py build``, as the README gives it: it prints the cached image
    (built by then: seconds).  That its main runs after the whole module is read is test_layout's check."""
    res = subprocess.run([sys.executable, "tests/support/qemuhost.py", "build"], cwd=PROJECT, capture_output=True,
                         text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    printed = json.loads(res.stdout.strip().splitlines()[-1])
    assert printed == {k: v for k, v in qemu_image.info.items() if k not in ("versions", "builder")}


def test_the_host_boots_through_uboot_and_extlinux_and_reboots_on_command(vm: qemuhost.Vm, tmp_path: Path) -> None:
    vm.start()
    first = vm.wait_ssh()
    console = vm.serial.read_text(errors="replace")
    assert "U-Boot 2023.01" in console and "extlinux/extlinux.conf" in console, vm.tail(40)
    assert f"ka-rc: up, running {vm.image.release}" in console
    ssh = settings(vm, tmp_path)
    with connect(ssh, "qemu") as host:
        assert host.run(["uname", "-r"]).output.strip() == vm.image.release
        assert host.run(["uname", "-m"]).output.strip() == "aarch64"
        boot_id = host.run(["cat", BOOT_ID]).output.strip()
        # as ka-install reboots a host: the command returns at once, the host goes away
        host.run(["sh", "-c", "(sleep 1; reboot) >/dev/null 2>&1 &"], timeout=30)
    took = new_boot(ssh, boot_id, timeout=300)
    assert vm.serial.read_text(errors="replace").count("U-Boot 2023.01") == 2, vm.tail(40)  # through U-Boot again
    print(f"ssh answered {first:.0f}s after power on, and {took:.0f}s after the reboot command")


def new_boot(ssh: SshSettings, old: str, timeout: float) -> float:
    """Seconds until the host answers over ssh with a boot id other than ``old``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with connect(ssh, "qemu") as host:
                if host.run(["cat", BOOT_ID], timeout=15).output.strip() != old:
                    return time.monotonic() - start
        except (SshError, OSError, EOFError):
            pass  # going down, or not up yet
        time.sleep(2)
    raise TimeoutError(f"no new boot within {timeout:g}s")


def test_the_host_key_is_pinned(vm: qemuhost.Vm, tmp_path: Path) -> None:
    vm.start()
    vm.wait_ssh()
    other = (tmp_path / "other").with_suffix("")
    qemuhost.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)])
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    with pytest.raises(HostKeyRefused, match="SHA256:"):
        connect(settings(vm, tmp_path, host_key=wrong), "qemu").run(["true"])


# --- ka-install onto the real host ------------------------------------------------------------------

PKGBASE, PKGVER = "linux-qemu", "6.12.117"


@pytest.fixture(scope="session")
def qemu_packages(qemu_image: qemuhost.Image, install_lab: InstallLab,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """linux-qemu carrying Debian's 6.12.117 arm64 kernel, signed with the fleet's key: ``good`` (pkgrel 1)
    and ``panics`` (pkgrel 2, whose ext4 module is 6.1's: its initramfs cannot mount the root file system)."""
    deb = qemuhost.debian_kernel()
    old_ext4 = qemuhost.foreign_module(qemuhost.debian_kernel(f"linux-image-{qemu_image.release}"),
                                       "fs/ext4/ext4.ko", tmp_path_factory.mktemp("old-ext4"))
    made = {}
    for kind, pkgrel in (("good", 1), ("panics", 2)):
        folder = install_lab.build.ssh.user_folder("qemu-packages", kind)
        files = qemuhost.kernel_files(deb, PKGBASE, tmp_path_factory.mktemp(f"kernel-{kind}"),
                                      ext4=None if kind == "good" else old_ext4)
        shutil.copy(files.tarball, folder / files.tarball.name)
        package = install_lab.targets.make_package(folder, qemuhost.kernel_pkgbuild(PKGBASE, PKGVER, pkgrel, files),
                                                   f"{PKGBASE}-{PKGVER}-{pkgrel}-aarch64.pkg.tar.zst",
                                                   env=("CARCH=aarch64",))
        made[kind] = (files.release, package)
    return made


def join(lab: InstallLab, vm: qemuhost.Vm, name: str) -> None:
    """Put the VM in the lab's ssh config and known_hosts, and make it trust the fleet's signing key."""
    vm.join(lab.build.ssh.config, lab.build.ssh.known_hosts, name)
    qemuhost.trust_key(lab_ssh(lab), name, lab.build.gnupghome, lab.build.fingerprint)


def install_section(name: str) -> str:
    return (f"install:\n  ssh: {name}\n  image: Image\n  panic: 10\n  trial_boot: uboot-script\n"
            f"  trial_state: /boot/state\n  commands:\n    prefix: []\n"
            f"    mkinitcpio: [ka-mkinitramfs]\n    reboot: [reboot]\n  heartbeat:\n    down: 120\n    up: 300\n")


def qemu_fleet(lab: InstallLab, root: Path, hosts: dict[str, tuple[str, int]]) -> Path:
    """A fleet whose hosts (name → (ssh name, install.wave)) install linux-qemu."""
    package = (f"package:\n  pkgbase: {PKGBASE}\n  config: fleet/configs/ampere.config\n  source:\n"
               f"    git: {lab.build.source}\n")
    files = {**fleet_files(lab.build.kernel), "fleet/configs/ampere.config": CONFIG,
             "fleet/infra.yaml": lab.infra(next(iter(hosts.values()))[0])}
    return write_fleet(root, {host: manifest(INCLUDES) + package + install_section(ssh) + f"  wave: {wave}\n"
                              for host, (ssh, wave) in hosts.items()}, files)


def ka_install(lab: InstallLab, repo: Path, *args: str, host: str = "qemu") -> tuple[int, dict[str, object], str]:
    res = lab.ka("install", host, "--repo", str(repo), "--json", *args, timeout=900)
    try:
        data = json.loads(res.stdout)
    except ValueError:
        data = {}
    return res.returncode, data, res.stderr


def lab_ssh(lab: InstallLab) -> SshSettings:
    return SshSettings(lab.build.ssh.config, lab.build.ssh.known_hosts)


def booted_fleet(vm: qemuhost.Vm, lab: InstallLab, folder: Path, name: str) -> Path:
    """Boot the VM, make it a host of the lab (ssh name ``name``), and a fleet whose host qemu it is."""
    vm.start()
    vm.wait_ssh()
    join(lab, vm, name)
    return qemu_fleet(lab, folder, {"qemu": (name, 1)})


def test_ka_install_boots_debians_6_12_117_through_uboot_then_rolls_back(
        vm: qemuhost.Vm, install_lab: InstallLab, qemu_packages: dict[str, tuple[str, Path]], tmp_path: Path) -> None:
    release, package = qemu_packages["good"]
    repo = booted_fleet(vm, install_lab, tmp_path / "fleet", "qemu-happy")
    start = time.monotonic()
    code, data, err = ka_install(install_lab, repo, "--package", str(package))
    took = time.monotonic() - start
    assert code == 0 and data["state"] == "succeeded", err + vm.tail(40)
    assert data["old_release"] == vm.image.release and data["new_release"] == release == "6.12.117+deb12-arm64"
    console = vm.serial.read_text(errors="replace")
    assert console.count("U-Boot 2023.01") == 2 and f"Linux version {release}" in console
    assert "ka-trial: trying kernel-agent once" in console and f"ka-rc: up, running {release}" in console
    assert "the boot-once trial of 6.12.117+deb12-arm64 is confirmed" in str(data["message"])
    backup = install_lab.build.ssh.user_folder("qemu-happy", "backups") / "qemu" / vm.image.release
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=backup).returncode == 0
    with connect(lab_ssh(install_lab), "qemu-happy") as host:
        assert host.run(["uname", "-r"]).output.strip() == release
        conf = host.run(["cat", "/boot/extlinux/extlinux.conf"]).output
        owned = host.run(["pacman", "-Qqo", "/boot/Image"]).output.strip()
        state = host.run(["ls", "-A", "/boot/state"]).output.split()
    assert "default kernel-agent\n" in conf and "label kernel-agent-previous" in conf and "label debian" in conf
    assert owned == PKGBASE and state == []  # the trial confirmed: no file left for U-Boot to act on
    print(f"ka-install onto the QEMU host: {took:.0f}s; steps: "
          + ", ".join(f"{s['text'].split(':')[0]} {s.get('seconds')}s" for s in data["steps"]))  # type: ignore
    # (c) back to the kept kernel by command
    start = time.monotonic()
    code, data, err = ka_install(install_lab, repo, "--rollback")
    assert code == 0 and data["state"] == "succeeded", err + vm.tail(40)
    with connect(lab_ssh(install_lab), "qemu-happy") as host:
        assert host.run(["uname", "-r"]).output.strip() == vm.image.release
    assert vm.serial.read_text(errors="replace").count("U-Boot 2023.01") == 3
    print(f"ka-install --rollback on the QEMU host: {time.monotonic() - start:.0f}s")


def test_a_kernel_that_panics_comes_back_on_the_kept_one_by_itself(
        vm: qemuhost.Vm, install_lab: InstallLab, qemu_packages: dict[str, tuple[str, Path]], tmp_path: Path) -> None:
    release, package = qemu_packages["panics"]
    repo = booted_fleet(vm, install_lab, tmp_path / "fleet", "qemu-panic")
    start = time.monotonic()
    code, data, err = ka_install(install_lab, repo, "--package", str(package))
    assert code == 1 and data["state"] == "failed", err + vm.tail(40)
    message = str(data["message"])
    assert f"the host fell back to {vm.image.release}" in message, message
    assert "the boot-once trial brought it back by itself" in message
    assert any(str(data["backup"]) in line for line in data["recovery"]), data["recovery"]  # type: ignore
    console = vm.serial.read_text(errors="replace")
    assert f"Linux version {release}" in console and "Kernel panic" in console
    assert "ka-trial: kernel-agent was tried and not confirmed, booting kernel-agent-previous" in console
    with connect(lab_ssh(install_lab), "qemu-panic") as host:
        assert host.run(["uname", "-r"]).output.strip() == vm.image.release
        conf = host.run(["cat", "/boot/extlinux/extlinux.conf"]).output
        state = host.run(["ls", "-A", "/boot/state"]).output.split()
    assert "default kernel-agent-previous\n" in conf and state == []
    print(f"a panicking kernel, reported as fallen back after {time.monotonic() - start:.0f}s")


@pytest.fixture
def second_vm(qemu_image: qemuhost.Image, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[qemuhost.Vm]:
    """Another host of the same image, on a copy-on-write overlay of its own."""
    with console_kept(qemuhost.Vm(qemu_image, tmp_path / "vm2"), f"{request.node.name}.second") as machine:
        yield machine


def roll_out(lab: InstallLab, repo: Path, *args: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    """``ka-install --all --json ARGS``: exit code, each host's row by name, standard error."""
    res = lab.ka("install", "--all", "--repo", str(repo), "--json", *args, timeout=1800)
    data = json.loads(res.stdout or "{}")
    return res.returncode, {r["host"]: r for r in data.get("hosts", [])}, res.stderr


def test_a_rollout_over_two_hosts_installs_both_then_stops_at_a_canary_that_falls_back(
        vm: qemuhost.Vm, second_vm: qemuhost.Vm, install_lab: InstallLab,
        qemu_packages: dict[str, tuple[str, Path]], tmp_path: Path) -> None:
    """Two real hosts in waves: the happy path over both; then a kernel of the running release that panics
    (pkgrel 2): only U-Boot's ka-fell mark tells that the canary came back on the kept one, and the rollout
    stops there: the second host is never connected to, and runs the kernel of the first rollout."""
    (release, good), (same, broken) = qemu_packages["good"], qemu_packages["panics"]
    assert release == same
    for machine in (vm, second_vm):
        machine.start()
    for machine, name in ((vm, "qemu-wave-a"), (second_vm, "qemu-wave-b")):
        machine.wait_ssh()
        join(install_lab, machine, name)
    repo = qemu_fleet(install_lab, tmp_path / "fleet", {"canary": ("qemu-wave-a", 1), "later": ("qemu-wave-b", 2)})
    start = time.monotonic()
    code, rows, err = roll_out(install_lab, repo, "--package", str(good))
    assert code == 0, err + vm.tail(20) + second_vm.tail(20)
    assert [(h, r["canary"], r["outcome"], r["new_release"]) for h, r in rows.items()] == [
        ("canary", True, "installed", release), ("later", False, "installed", release)]
    print(f"a rollout over two QEMU hosts: {time.monotonic() - start:.0f}s")
    with connect(lab_ssh(install_lab), "qemu-wave-b") as host:
        boot_id = host.run(["cat", BOOT_ID]).output.strip()
    code, rows, err = roll_out(install_lab, repo, "--package", str(broken))
    assert code == 1, err + vm.tail(40)
    canary, later = rows["canary"], rows["later"]
    assert canary["outcome"] == "fell back" and canary["fell_back"] == release, canary
    assert f"came back on {release}, but U-Boot booted kernel-agent-previous" in canary["error"], canary["error"]
    assert "the boot-once trial brought it back by itself" in canary["error"]
    assert canary["backup"] and later["outcome"] == "not started" and later["began_s"] is None, later
    with connect(lab_ssh(install_lab), "qemu-wave-a") as host:
        conf = host.run(["cat", "/boot/extlinux/extlinux.conf"]).output
        state = host.run(["ls", "-A", "/boot/state"]).output.split()
        record = json.loads(host.run(["cat", "/var/lib/kernel-agent/install.json"]).output)
    assert "default kernel-agent-previous\n" in conf and state == [] and record["stage"] == "fell-back"
    with connect(lab_ssh(install_lab), "qemu-wave-b") as host:  # untouched: the same boot, the first package
        assert host.run(["cat", BOOT_ID]).output.strip() == boot_id
        assert host.run(["pacman", "-Q", PKGBASE]).output.split() == [PKGBASE, f"{PKGVER}-1"]
        assert "default kernel-agent\n" in host.run(["cat", "/boot/extlinux/extlinux.conf"]).output
    assert second_vm.serial.read_text(errors="replace").count("U-Boot 2023.01") == 2  # power on, first rollout
    code, _, err = ka_install(install_lab, repo, "--package", str(good), host="canary")
    assert code == 1 and "--rollback" in err  # refused until the kept kernel is put back in place


# --- (d) a Debian host: a .deb from the signed apt repository ------------------------------------------

@pytest.fixture
def apt_served(install_lab: InstallLab) -> Iterator[tuple[Path, int]]:
    """The folder of an apt repository on the repository host, served over HTTP on 127.0.0.1 (a port)."""
    folder = install_lab.build.ssh.user_folder("qemu-apt", str(time.monotonic_ns()))
    port = qemuhost.free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                               str(folder), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield folder, port
    finally:
        server.kill()
        server.wait()


def test_a_debian_host_installs_a_deb_from_the_signed_apt_repository(
        deb_image: qemuhost.Image, install_lab: InstallLab, apt_served: tuple[Path, int], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    folder, port = apt_served
    lab = install_lab.build
    deb = tmp_path / "debs" / qemuhost.debian_kernel().name
    deb.parent.mkdir()
    shutil.copy(qemuhost.debian_kernel(), deb)
    sign(deb, lab.fingerprint, lab.gnupghome)
    apt = Repository("hertz", str(folder), "fleet", "http://10.0.2.100", lab.fingerprint, str(lab.repo_gnupghome))
    publish_deb(lab_ssh(install_lab), apt, [deb], "arm64", print)  # what ka-build's publish phase does
    vm = qemuhost.Vm(deb_image, tmp_path / "vm", guestfwd=[qemuhost.http_forward(port, tmp_path / "relay")])
    try:
        vm.start()
        vm.wait_ssh()
        vm.join(lab.ssh.config, lab.ssh.known_hosts, "qemu-deb")
        infra = (install_lab.infra("qemu-deb") + f"apt_repository:\n  ssh: hertz\n  path: {folder}\n  name: fleet\n"
                 f"  url: http://10.0.2.100\n  key: {lab.fingerprint}\n  gnupghome: {lab.repo_gnupghome}\n")
        package = "package:\n  format: deb\n  pkgbase: linux-signed-6.12-arm64\n  config: fleet/configs/ampere.config\n"
        files = {**fleet_files(lab.kernel), "fleet/configs/ampere.config": CONFIG, "fleet/infra.yaml": infra}
        repo = write_fleet(tmp_path / "fleet", {"qemu": manifest(INCLUDES) + package + install_section("qemu-deb")},
                           files)
        start = time.monotonic()
        code, data, err = ka_install(install_lab, repo, "--package", str(deb))
        took = time.monotonic() - start
        assert code == 0 and data["state"] == "succeeded", err + vm.tail(40)
        release = "6.12.117+deb12-arm64"
        assert data["old_release"] == deb_image.release and data["new_release"] == release
        assert "the boot-once trial of 6.12.117+deb12-arm64 is confirmed" in str(data["message"])
        console = vm.serial.read_text(errors="replace")
        assert console.count("U-Boot 2023.01") == 2 and f"Linux version {release}" in console
        assert "ka-trial: trying l0 once" in console
        with connect(lab_ssh(install_lab), "qemu-deb") as host:
            assert host.run(["uname", "-r"]).output.strip() == release
            conf = host.run(["cat", "/boot/extlinux/extlinux.conf"]).output
            status = host.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", f"linux-image-{release}"]).output
            state = host.run(["ls", "-A", "/boot/state"]).output.split()
            apt_log = host.run(["cat", "/var/log/apt/term.log"]).output
        assert status == "installed" and state == []
        assert "default l0" in conf and f"linux /boot/vmlinuz-{release}" in conf
        assert f"linux /boot/vmlinuz-{deb_image.release}" in conf  # the way back keeps its entry
        assert "update-initramfs: Generating /boot/initrd.img-6.12.117+deb12-arm64" in apt_log
        backup = lab.ssh.user_folder("qemu-deb", "backups") / "qemu" / deb_image.release
        assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=backup).returncode == 0
        print(f"ka-install of a .deb from the apt repository onto the QEMU Debian host: {took:.0f}s; steps: "
              + ", ".join(f"{s['text'].split(':')[0][:40]} {s.get('seconds')}s" for s in data["steps"]))  # type: ignore
        # back by command: the newer package is removed, u-boot-update makes 6.1 the default again
        start = time.monotonic()
        code, data, err = ka_install(install_lab, repo, "--rollback")
        assert code == 0 and data["state"] == "succeeded", err + vm.tail(40)
        with connect(lab_ssh(install_lab), "qemu-deb") as host:
            assert host.run(["uname", "-r"]).output.strip() == deb_image.release
            conf = host.run(["cat", "/boot/extlinux/extlinux.conf"]).output
            after = host.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", f"linux-image-{release}"],
                             check=False).output
        assert f"vmlinuz-{release}" not in conf and "default l0" in conf and after != "installed"
        print(f"ka-install --rollback on the QEMU Debian host: {time.monotonic() - start:.0f}s")
    finally:
        vm.stop()
        if vm.serial.exists():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(vm.serial, ARTIFACTS / f"{request.node.name}.serial.log")
