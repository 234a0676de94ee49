"""A host manifest's ``install`` section: how ka-install reaches the host and where its kernel lives.

Every key is optional; the defaults are those of an Arch Linux ARM board booting with U-Boot's
extlinux support and an ssh user that becomes root through ``sudo`` without a password::

    install:
      ssh: ampere                       # the name in the ssh config (default: the host's name)
      format: pacman                    # the package manager: pacman, or apt (package.format deb: the
                                        #   default then); apt installs from apt_repository (infra.yaml)
      image: Image                      # the file the bootloader loads, in the boot folder
                                        #   (default: package.image, else Image)
      boot: /boot                       # the boot folder
      bootloader: extlinux
      extlinux: /boot/extlinux/extlinux.conf
      initramfs: mkinitcpio             # or none (a kernel that boots without one); apt hosts:
                                        #   initramfs-tools, run by the package's own hooks
      modules: /usr/lib/modules
      state: /var/lib/kernel-agent      # the install lock and the install records, on the host
      pacman_log: /var/log/pacman.log   # where pacman reports scriptlet and hook failures
      panic: 10                         # panic=<seconds> on the new entry: a panic reboots
      trial_boot: none                  # or uboot-script: boot the new kernel once, fall back unless
                                        #   confirmed (firmware without bootcount: see ka/install/trial.py)
      trial_state: /boot                # where the trial's files go: the mount point of a FAT partition
                                        #   U-Boot can write
      commands:                         # argument lists, run without a shell
        prefix: [sudo, -n]              # before every command that needs root ([] for a root login);
                                        # -n: sudo fails instead of waiting for a password
        pacman: [pacman]
        mkinitcpio: [mkinitcpio]
        apt_get: [apt-get]              # apt hosts
        reboot: [systemctl, reboot]
        release: [uname, -r]            # prints the running kernel release
        boot_id: [cat, /proc/sys/kernel/random/boot_id]   # new at every boot: tells a reboot apart
      heartbeat:
        down: 120                       # seconds for ssh to go away after the reboot command
        up: 300                         # seconds for it to come back
      wave: 1                           # ka-install --all: wave 1 first (its first host is the canary),
                                        #   then 2, …; a failure stops the rollout (ka/install/waves.py)
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

import yaml

from ka.fleet.formats import INSTALLERS, PACMAN, PackageFormat
from ka.fleet.packagespec import PackageSpec
from ka.fleet.yamldoc import Doc, child, whole_number
from ka.text import shown

KEYS = ("ssh", "format", "image", "boot", "bootloader", "extlinux", "initramfs", "modules", "state",
        "pacman_log", "panic", "trial_boot", "trial_state", "commands", "heartbeat", "wave")
WAVES = 99  # the last wave a host may be in
COMMAND_KEYS = ("prefix", "pacman", "mkinitcpio", "apt_get", "reboot", "release", "boot_id")
HEARTBEAT_KEYS = ("down", "up")
SSH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ABS_PATH = re.compile(r"/[A-Za-z0-9._+/-]{0,400}")
ARG = re.compile(r"[A-Za-z0-9._/+=:,@%-]{1,400}")
IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,62}")
DEFAULT_COMMANDS = {"prefix": ("sudo", "-n"), "pacman": ("pacman",), "mkinitcpio": ("mkinitcpio",),
                    "apt_get": ("apt-get",),
                    "reboot": ("systemctl", "reboot"), "release": ("uname", "-r"),
                    "boot_id": ("cat", "/proc/sys/kernel/random/boot_id")}


@dataclass(frozen=True)
class Commands:
    """How things are run on the host (argument lists; ``prefix`` goes before the root ones)."""

    prefix: tuple[str, ...] = DEFAULT_COMMANDS["prefix"]
    pacman: tuple[str, ...] = DEFAULT_COMMANDS["pacman"]
    mkinitcpio: tuple[str, ...] = DEFAULT_COMMANDS["mkinitcpio"]
    apt_get: tuple[str, ...] = DEFAULT_COMMANDS["apt_get"]
    reboot: tuple[str, ...] = DEFAULT_COMMANDS["reboot"]
    release: tuple[str, ...] = DEFAULT_COMMANDS["release"]
    boot_id: tuple[str, ...] = DEFAULT_COMMANDS["boot_id"]


@dataclass(frozen=True)
class InstallSpec:
    """The validated ``install`` section, defaults filled in."""

    ssh: str
    pkgbase: str
    format: str = "pacman"
    image: str = "Image"
    boot: str = "/boot"
    bootloader: str = "extlinux"
    extlinux: str = "/boot/extlinux/extlinux.conf"
    initramfs: str = "mkinitcpio"
    modules: str = "/usr/lib/modules"
    state: str = "/var/lib/kernel-agent"
    pacman_log: str = "/var/log/pacman.log"
    panic: int = 10
    trial_boot: str = "none"
    trial_state: str = "/boot"
    commands: Commands = Commands()
    down_timeout: int = 120
    up_timeout: int = 300
    wave: int = 1  # a rollout over many hosts installs wave 1, then 2, …

    @property
    def kind(self) -> PackageFormat:
        """The format of the packages the host installs (``install.format`` names its package manager)."""
        return INSTALLERS[self.format]

    @property
    def image_path(self) -> str:
        return posixpath.join(self.boot, self.image)

    @property
    def initramfs_path(self) -> str | None:
        """Where mkinitcpio writes the image (the preset ka-build renders names it)."""
        if self.initramfs != "mkinitcpio":
            return None
        return posixpath.join(self.boot, f"initramfs-{self.pkgbase}.img")

    def kernel_package(self, release: str) -> str:
        """The package that holds the kernel ``release`` on the host: pacman's pkgbase, or on an apt host
        that kernel's own ``linux-image-<release>``."""
        return self.kind.kernel_package(self.pkgbase, release)

    def deb_image(self, release: str) -> str:
        """A Debian kernel's image on the host (``/boot/vmlinuz-<release>``)."""
        return posixpath.join(self.boot, f"vmlinuz-{release}")

    def deb_initrd(self, release: str) -> str:
        """Where initramfs-tools writes a Debian kernel's initramfs."""
        return posixpath.join(self.boot, f"initrd.img-{release}")

    @property
    def dtbs_path(self) -> str:
        return posixpath.join(self.boot, "dtbs")

    def root(self, *argv: str) -> list[str]:
        """``argv`` as root on the host (behind the prefix)."""
        return [*self.commands.prefix, *argv]


def default_spec(host: str, package: PackageSpec | None) -> InstallSpec:
    """The production defaults, for a manifest without an ``install`` section (apt for a deb package)."""
    kind = package.kind if package else PACMAN
    return InstallSpec(ssh=host, pkgbase=package.pkgbase if package else f"linux-{host}",
                       image=package.image if package else "Image", format=kind.installer, initramfs=kind.initramfs)


def parse_install(doc: Doc, host: str, package: PackageSpec | None) -> InstallSpec:
    """The section, validated into ``doc.problems`` (defaults where it is silent)."""
    base = default_spec(host, package)
    value, node = doc.data.get("install"), child(doc.node, "install")
    if value is None:
        return base
    if not isinstance(value, dict):
        doc.add(node, "install", f"must be a mapping of {', '.join(KEYS)}")
        return base
    doc.check_keys(node, KEYS, "install.")  # type: ignore[arg-type]
    got: dict[str, Any] = {}
    for key, pattern, what in (("ssh", SSH_NAME, "a name of the ssh config"),
                               ("image", IMAGE, "a file name such as Image"),
                               *((k, ABS_PATH, "an absolute path") for k in
                                 ("boot", "extlinux", "modules", "state", "pacman_log", "trial_state"))):
        got[key] = _text(doc, node, value, key, pattern, what, getattr(base, key))
    for key, choices in (("format", tuple(INSTALLERS)), ("bootloader", ("extlinux",)),
                         ("initramfs", ("mkinitcpio", "initramfs-tools", "none")),
                         ("trial_boot", ("none", "uboot-script"))):
        got[key] = _choice(doc, node, value, key, choices, getattr(base, key))
    kind = INSTALLERS[got["format"]]
    if kind is not base.kind and value.get("initramfs") is None:  # the format's own initramfs maker
        got["initramfs"] = kind.initramfs
    if package is not None and kind is not package.kind:
        doc.add(child(node, "format"), "install.format", f"{got['format']} does not install the {package.format} "
                "packages package.format makes (pacman takes pacman's, apt takes deb)")
    got["panic"] = _int(doc, node, value, "panic", 1, 3600, base.panic, "install.panic")
    got["wave"] = whole_number(doc, node, value, "wave", (1, WAVES), base.wave, "install.wave", "waves")
    got["commands"] = _commands(doc, node, value.get("commands"))
    down, up = _heartbeat(doc, node, value.get("heartbeat"), base)
    return InstallSpec(pkgbase=base.pkgbase, down_timeout=down, up_timeout=up, **got)


def _text(doc: Doc, node: yaml.Node | None, value: dict[str, Any], key: str, pattern: re.Pattern[str],
          what: str, default: str) -> str:
    got = value.get(key)
    if got is None:
        return default
    if not isinstance(got, str) or not pattern.fullmatch(got) or "/../" in got + "/" or "/./" in got + "/":
        doc.add(child(node, key), f"install.{key}", f"{shown(got)} is not {what}")
        return default
    return got.rstrip("/") if len(got) > 1 else got


def _choice(doc: Doc, node: yaml.Node | None, value: dict[str, Any], key: str, choices: tuple[str, ...],
            default: str) -> str:
    got = value.get(key)
    if got is None:
        return default
    if got not in choices:
        doc.add(child(node, key), f"install.{key}", f"{shown(got)} is not one of {', '.join(choices)}")
        return default
    return str(got)


def _int(doc: Doc, node: yaml.Node | None, value: dict[str, Any], key: str, low: int, high: int, default: int,
         fld: str) -> int:
    return whole_number(doc, node, value, key, (low, high), default, fld, "seconds")


def _commands(doc: Doc, node: yaml.Node | None, value: Any) -> Commands:
    if value is None:
        return Commands()
    where = child(node, "commands")
    if not isinstance(value, dict):
        doc.add(where, "install.commands", f"must be a mapping of {', '.join(COMMAND_KEYS)}")
        return Commands()
    doc.check_keys(where, COMMAND_KEYS, "install.commands.")  # type: ignore[arg-type]
    found = {}
    for key in COMMAND_KEYS:
        argv = value.get(key)
        if argv is None:
            continue
        empty_ok = key == "prefix"
        if (not isinstance(argv, list) or not (argv or empty_ok) or len(argv) > 20
                or not all(isinstance(a, str) and ARG.fullmatch(a) for a in argv)):
            doc.add(child(where, key), f"install.commands.{key}",
                    f"{shown(argv)} must be a list of {'' if empty_ok else '1 to '}20 arguments "
                    "(letters, digits and ._/+=:,@%-; no spaces: each argument is its own item)")
            continue
        found[key] = tuple(argv)
    return Commands(**found)


def _heartbeat(doc: Doc, node: yaml.Node | None, value: Any, base: InstallSpec) -> tuple[int, int]:
    if value is None:
        return base.down_timeout, base.up_timeout
    where = child(node, "heartbeat")
    if not isinstance(value, dict):
        doc.add(where, "install.heartbeat", "must be a mapping of down, up (seconds)")
        return base.down_timeout, base.up_timeout
    doc.check_keys(where, HEARTBEAT_KEYS, "install.heartbeat.")  # type: ignore[arg-type]
    return (_int(doc, where, value, "down", 1, 3600, base.down_timeout, "install.heartbeat.down"),
            _int(doc, where, value, "up", 1, 7200, base.up_timeout, "install.heartbeat.up"))
