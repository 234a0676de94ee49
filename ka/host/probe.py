"""What ``ka host add`` reads on a new host: read-only probes, each a plain command (docs/fleet.md lists them).

Nothing here changes the host: every probe only prints.  A probe that fails is an answer too (no
``/proc/config.gz``, no ``sudo -n``), kept as such for :mod:`ka.host.draft` to decide on.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from ka.install import extlinux
from ka.io.ssh import Remote

EXTLINUX = "/boot/extlinux/extlinux.conf"
#: (what, command): the probes that need nothing known beforehand, in the order the docs list them
FIRST = (
    ("arch", ["uname", "-m"]),
    ("release", ["uname", "-r"]),
    ("model", ["cat", "/proc/device-tree/model"]),
    ("compatible", ["cat", "/proc/device-tree/compatible"]),
    ("extlinux", ["cat", EXTLINUX]),
    ("uid", ["id", "-u"]),
    ("sudo", ["sudo", "-n", "true"]),
    ("tools", ["sh", "-c", "for t in pacman dpkg mkinitcpio update-initramfs fw_printenv systemctl reboot; do "
                           "command -v $t >/dev/null && echo $t; done; true"]),
    ("boot_free", ["df", "-Pk", "/boot"]),
    ("mounts", ["cat", "/proc/mounts"]),
    ("config_gz", ["sh", "-c", "zcat /proc/config.gz"]),
)


@dataclass
class Probe:
    """The answers (what → the command's output), and the probes that failed (what → why)."""

    host: str
    answers: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # what → why (the command's last line)

    def get(self, what: str) -> str | None:
        return self.answers.get(what)

    @property
    def arch(self) -> str:
        return (self.get("arch") or "").strip()

    @property
    def release(self) -> str:
        return (self.get("release") or "").strip()

    @property
    def model(self) -> str | None:
        text = (self.get("model") or "").replace("\0", "").strip()
        return text or None

    @property
    def compatible(self) -> list[str]:
        """The board's compatible strings, most specific first (``pine64,pinetab2``, ``rockchip,rk3566``)."""
        return [c for c in (self.get("compatible") or "").split("\0") if c.strip()]

    @property
    def tools(self) -> set[str]:
        return set((self.get("tools") or "").split())

    @property
    def root_login(self) -> bool:
        return (self.get("uid") or "").strip() == "0"

    @property
    def sudo(self) -> bool:
        return "sudo" in self.answers

    @property
    def boot_free_kib(self) -> int | None:
        """KiB free in /boot (``df -Pk``'s fourth column of its second line)."""
        lines = (self.get("boot_free") or "").splitlines()
        words = lines[1].split() if len(lines) > 1 else []
        return int(words[3]) if len(words) > 3 and words[3].isdigit() else None

    @property
    def boot(self) -> extlinux.Config | None:
        text = self.get("extlinux")
        return extlinux.parse(text) if text is not None else None

    @property
    def booted_kernel(self) -> str | None:
        """The kernel the default extlinux label boots, as the file names it."""
        config = self.boot
        entry = config.entry(config.default) if config else None
        return entry.kernel.split()[0] if entry is not None and entry.kernel else None

    @property
    def fat_under_boot(self) -> str | None:
        """The mount point of a FAT partition at or under /boot (where U-Boot can write a boot-once
        trial's mark), from /proc/mounts; the shortest when there are several."""
        points = [words[1] for words in (line.split() for line in (self.get("mounts") or "").splitlines())
                  if len(words) > 2 and words[2] == "vfat" and (words[1] + "/").startswith("/boot/")]
        return min(points, key=len) if points else None

    @property
    def uboot_trial(self) -> bool:
        """U-Boot's environment holds the ``ka_trial`` script (``fw_printenv ka_trial``)."""
        return (self.get("uboot_trial") or "").startswith("ka_trial=")

    @property
    def config(self) -> str | None:
        """The running kernel's config: /proc/config.gz, else /boot/config-<release>."""
        return self.get("config_gz") or self.get("config_file")

    @property
    def config_source(self) -> str:
        """Where :attr:`config` was read."""
        return "/proc/config.gz" if self.get("config_gz") else f"/boot/config-{self.release}"


def run_probes(remote: Remote, host: str, log: Callable[[str], None] = lambda line: None) -> Probe:
    """Every probe, on ``remote``; the ones that depend on earlier answers after those."""
    probe = Probe(host)
    for what, argv in FIRST:
        _ask(remote, probe, what, argv, log)
    if probe.config is None and probe.release:
        _ask(remote, probe, "config_file", ["cat", f"/boot/config-{probe.release}"], log)
    if "fw_printenv" in probe.tools:
        _ask(remote, probe, "uboot_trial", ["fw_printenv", "ka_trial"], log)
    image = _booted_image(probe)
    if image and "pacman" in probe.tools:
        _ask(remote, probe, "owner", ["pacman", "-Qqo", image], log)
    elif image and "dpkg" in probe.tools:
        _ask(remote, probe, "owner", ["dpkg", "-S", image], log)
    return probe


def _ask(remote: Remote, probe: Probe, what: str, argv: list[str], log: Callable[[str], None]) -> None:
    res = remote.run(argv, timeout=60, check=False)
    if res.ok:
        probe.answers[what] = res.output
    else:
        probe.failed[what] = (res.output.strip().splitlines() or [f"exit {res.code}"])[-1][:300]
    log(f"probe {what}: {' '.join(argv)} -> {'ok' if res.ok else 'failed: ' + probe.failed[what]}")


def _booted_image(probe: Probe) -> str | None:
    """The running kernel's image as a path on the host (a boot partition's ``/Image`` is ``/boot/Image``)."""
    kernel = probe.booted_kernel
    if kernel is None:
        return None
    return kernel if kernel.startswith("/boot/") else posixpath.join("/boot", kernel.lstrip("/"))
