"""The QEMU arm64 hosts' images, shared by the tests that boot them (built once, cached on disk)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support import qemuhost
from tests.support.needs import require

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


@pytest.fixture(scope="session")
def deb_image() -> qemuhost.Image:
    """The Debian flavour: dpkg's database filled, apt, initramfs-tools, u-boot-menu (cached apart)."""
    missing = _missing()
    require(not missing, f"the QEMU host's tools: {', '.join(missing)} (scripts/setup test installs them)")
    require(os.geteuid() == 0, "root, to build the QEMU host's image (mmdebstrap --mode=root, mkfs.ext4 -d)")
    return qemuhost.image(log=print, flavour="deb")
