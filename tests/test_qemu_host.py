"""A real arm64 fleet host: QEMU's virt machine, Debian's U-Boot, extlinux.conf, a Debian arm64 kernel.

Marked ``qemu`` (``pytest -m qemu`` runs these alone); CI runs them with the rest.  The serial console
of every boot is kept in ``test-artifacts/`` (or ``$KA_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import qemuhost
from conftest import require

from ka.ssh import HostKeyRefused, SshError, SshSettings, connect

pytestmark = pytest.mark.qemu
ARTIFACTS = Path(os.environ.get("KA_TEST_ARTIFACTS") or Path(__file__).resolve().parent.parent / "test-artifacts")
BOOT_ID = "/proc/sys/kernel/random/boot_id"
TOOLS = ["qemu-system-aarch64", "qemu-img", "mmdebstrap", "mkfs.ext4", "mkfs.vfat", "sfdisk", "depmod", "bsdtar"]


def _missing() -> list[str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [t for t in TOOLS if shutil.which(t, path=path) is None] + (
        [] if qemuhost.UBOOT.exists() else [str(qemuhost.UBOOT)])


@pytest.fixture(scope="session")
def qemu_image() -> qemuhost.Image:
    """The cached disk image (built on first use: about half a minute here)."""
    missing = _missing()
    require(not missing, f"the QEMU host's tools: {', '.join(missing)} (scripts/setup test installs them)")
    require(os.geteuid() == 0, "root, to build the QEMU host's image (mmdebstrap --mode=root, mkfs.ext4 -d)")
    return qemuhost.image(log=print)


@pytest.fixture
def vm(qemu_image: qemuhost.Image, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[qemuhost.Vm]:
    machine = qemuhost.Vm(qemu_image, tmp_path / "vm")
    try:
        yield machine
    finally:
        machine.stop()
        if machine.serial.exists():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(machine.serial, ARTIFACTS / f"{request.node.name}.serial.log")


def settings(vm: qemuhost.Vm, folder: Path, host_key: str | None = None) -> SshSettings:
    (folder / "ssh_config").write_text(vm.ssh_config("qemu"))
    known = vm.known_hosts() if host_key is None else f"[127.0.0.1]:{vm.port} {host_key}\n"
    (folder / "known_hosts").write_text(known)
    return SshSettings(config=folder / "ssh_config", known_hosts=folder / "known_hosts")


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
