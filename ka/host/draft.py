"""From what a host's probes said (:mod:`ka.host.probe`) to its manifest: every field decided, each with a
comment saying where its value came from; or the refusals, each naming the probe and what to change.

Pure: the caller brings the probes, the fleet and the kernel tree's tags, and writes the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ka.fleet.formats import DEB, PACMAN, PackageFormat
from ka.fleet.manifest import SCOPES
from ka.host.probe import EXTLINUX, Probe

ARCHES = ("aarch64", "arm64", "armv7l", "armv8l")  # what uname -m says on arm64 and armhf machines
ROOM_KIB = 64 << 10  # /boot must take a kernel, its initramfs and the kept copies of both
TOOLS = {"mkinitcpio": "mkinitcpio", "initramfs-tools": "update-initramfs"}  # an initramfs maker's program
_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass
class Draft:
    """What ``ka host add`` writes (or refuses, or only proposes)."""

    name: str
    manifest: str = ""
    config: str | None = None  # fleet/configs/<name>.config
    refusals: list[str] = field(default_factory=list)
    proposed: list[str] = field(default_factory=list)  # includes matched by name, for the user to confirm


def refusals(probe: Probe) -> list[str]:
    """What this host lacks for kernel-agent to manage it, each with the probe that said so and the fix."""
    found = []
    if probe.arch not in ARCHES:
        found.append(f"uname -m says {probe.arch or 'nothing'}: kernel-agent builds and installs arm64 (aarch64) "
                     "and armhf kernels only")
    config = probe.boot
    if config is None:
        found.append(f"cat {EXTLINUX}: {probe.failed.get('extlinux', 'no such file')}: ka-install boots kernels "
                     "through U-Boot's extlinux support; write an extlinux.conf whose default label boots the "
                     "running kernel first (docs/install.md)")
    elif (entry := config.entry(config.default) or (config.entries[0] if config.entries else None)) is None \
            or not entry.kernel:
        found.append(f"{EXTLINUX} has no label with a kernel to boot: write one that boots the running kernel")
    if not probe.root_login and not probe.sudo:
        found.append(f"sudo -n true: {probe.failed.get('sudo', 'failed')}: ka-install runs its steps as root "
                     "without a password; log in as root, or give the ssh user a NOPASSWD sudoers line")
    free = probe.boot_free_kib
    if free is not None and free < ROOM_KIB:
        found.append(f"df -Pk /boot: {free} KiB free, under {ROOM_KIB} KiB: /boot must hold a kernel, its "
                     "initramfs and the kept copies of both; make room there")
    if not probe.tools & {"systemctl", "reboot"}:
        found.append("command -v systemctl reboot: neither: ka-install reboots the host into the new kernel")
    if not probe.tools & {"pacman", "dpkg"}:
        found.append("command -v pacman dpkg: neither: kernel-agent installs packages with pacman or apt")
    return found


def stable_tag(release: str, tags: set[str]) -> str | None:
    """The kernel tree's stable tag nearest the running ``release`` (6.12.117+deb12-arm64 → v6.12.117; the
    newest v6.12.N not above it when that one is missing; v6.12 for 6.12.0)."""
    got = _RELEASE.match(release)
    if got is None:
        return None
    major, minor, patch = int(got[1]), int(got[2]), int(got[3] or 0)
    for n in range(patch, -1, -1):
        tag = f"v{major}.{minor}.{n}" if n else f"v{major}.{minor}"
        if tag in tags:
            return tag
    return None


def matching_series(series: list[str], compatible: list[str]) -> list[tuple[str, str]]:
    """The ``soc/`` and ``board/`` series whose names match a compatible string: ``soc/rk356x-base`` for
    ``rockchip,rk3566`` (``x`` stands for a digit), ``board/pinetab2`` for ``pine64,pinetab2``; with the
    string each matched."""
    found = []
    for name in series:
        scope, _, base = name.partition("/")
        if scope not in ("soc", "board"):
            continue
        stem = re.sub(r"(?<=[0-9])x", "[0-9a-z]", re.escape(base.removesuffix(".patch").removesuffix("-base")))
        hit = next((c for c in compatible if re.fullmatch(stem + r"(-[0-9a-z.-]*)?", c.partition(",")[2] or c)), None)
        if hit is not None:
            found.append((name, hit))
    return found


def _line(key: str, value: str, why: str, indent: int = 0) -> str:
    """``key: value`` with its reason as a comment at column 44."""
    return _commented(f"{' ' * indent}{key}: {value}", why)


def _commented(text: str, why: str) -> str:
    return f"{text:<43} # {why}\n" if why else text + "\n"


def install_lines(probe: Probe, ssh: str) -> tuple[str, PackageFormat]:
    """The manifest's ``install`` section, each value with its reason; and the host's package format."""
    kind = DEB if "pacman" not in probe.tools and "dpkg" in probe.tools else PACMAN
    owner = (probe.get("owner") or "").strip().split(":")[0]
    image_path = probe.booted_kernel
    text = "install:\n" + _line("ssh", ssh, "ka host add --ssh", 2)
    text += _line("format", kind.installer, f"{kind.installer} installs packages there"
                  + (f"; {owner} owns the running kernel" if owner else ""), 2)
    if kind is PACMAN and image_path and owner:
        text += _line("image", image_path.rsplit("/", 1)[-1], f"the default extlinux label boots {image_path}", 2)
    elif kind is PACMAN:
        text += _line("image", "Image", f"the running kernel ({image_path}) is no package's: ka-build's ship Image", 2)
    tool = kind.initramfs if TOOLS[kind.initramfs] in probe.tools else "none"
    text += _line("initramfs", tool, f"command -v {TOOLS[kind.initramfs]}" if tool != "none" else
                  f"no {TOOLS[kind.initramfs]}: the kernel must mount its root file system by itself", 2)
    text += _trial_lines(probe)
    commands = _line("prefix", "[]", "the ssh user is root (id -u)", 4) if probe.root_login else ""
    if "systemctl" not in probe.tools:
        commands += _line("reboot", "[reboot]", "no systemctl (command -v): the host's own reboot", 4)
    return text + ("  commands:\n" + commands if commands else ""), kind


def _trial_lines(probe: Probe) -> str:
    """``trial_boot: uboot-script`` only where U-Boot runs the ka_trial script and has a FAT partition under
    /boot to keep its files on; else ``none``, saying which of the two is missing."""
    fat = probe.fat_under_boot
    if probe.uboot_trial and fat is not None:
        return (_line("trial_boot", "uboot-script", "fw_printenv ka_trial: U-Boot runs the boot-once trial", 2)
                + _line("trial_state", fat, "/proc/mounts: the FAT partition U-Boot writes the trial's mark on", 2))
    if "fw_printenv" not in probe.tools:
        why = "no fw_printenv to read U-Boot's environment with"
    elif not probe.uboot_trial:
        why = "U-Boot's environment has no ka_trial script (fw_printenv ka_trial)"
    else:
        why = "U-Boot runs ka_trial, but no FAT partition is mounted at or under /boot (/proc/mounts)"
    return _line("trial_boot", "none", f"{why}; docs/install.md sets up the boot-once trial", 2)


def make_draft(name: str, ssh: str, probe: Probe, series: list[str], tags: set[str],
               like: tuple[str, list[str]] | None = None, fleet_ref: str | None = None,
               source: tuple[str, dict[str, str]] | None = None) -> Draft:
    """The host's files from its probes: refused when it lacks what kernel-agent needs, or when no series can
    be named (no ``--like`` and none matching the board); the caller validates and writes.  ``fleet_ref``: the
    baseline of the fleet (of the ``--like`` host), for a host whose running series the kernel tree lacks;
    ``source``: (host, package.source keys) where the fleet's builds take the kernel source from."""
    draft = Draft(name, refusals=refusals(probe))
    tag = stable_tag(probe.release, tags)
    why = f"uname -r: {probe.release}; the kernel tree's stable tag"
    if tag is None and fleet_ref is not None:
        tag, why = fleet_ref, f"uname -r: {probe.release}, a series the kernel tree lacks: the fleet's baseline"
    if tag is None:
        draft.refusals.append(f"uname -r says {probe.release or 'nothing'}: the kernel tree has no stable tag of "
                              "that series; import its source (ka baseline import) first")
    includes = _includes(draft, probe, series, like)
    if probe.config is None:
        draft.refusals.append(f"zcat /proc/config.gz and cat /boot/config-{probe.release}: neither: the running "
                              "kernel's config is the starting point of the host's; enable CONFIG_IKCONFIG_PROC")
    if draft.refusals:
        return draft
    install, fmt = install_lines(probe, ssh)
    draft.config = probe.config
    text = (f"# fleet/{name}.yaml, written by ka host add from what {ssh} said over ssh: review every line\n"
            + _line("description", _quoted(probe.model or f"{probe.arch} board"), "/proc/device-tree/model")
            + "baseline:\n" + _line("ref", tag or "", why, 2)
            + f"apply_order: [{', '.join(SCOPES)}]\n" + includes
            + "package:\n" + _line("config", f"fleet/configs/{name}.config",
                                    f"the running kernel's ({probe.config_source}), carried to {tag}", 2)
            + (_line("format", fmt.name, f"the host installs with {fmt.installer}", 2) if fmt is not PACMAN else "")
            + _armhf_lines(probe, fmt)
            + _source_lines(source)
            + install)
    draft.manifest = text
    return draft


def _source_lines(source: tuple[str, dict[str, str]] | None) -> str:
    if source is None:
        return ""
    host, keys = source
    return _commented("  source:", f"as {host}'s: the fleet's kernel source") + "".join(
        f"    {key}: {value}\n" for key, value in keys.items())


def _armhf_lines(probe: Probe, fmt: PackageFormat) -> str:
    """An armhf board's package architecture and the kernel's ARCH (the defaults are arm64's)."""
    if probe.arch not in ("armv7l", "armv8l"):
        return ""
    arch = "armhf" if fmt is DEB else "armv7h"
    return (_line("arch", arch, f"uname -m: {probe.arch}", 2)
            + _line("kernel_arch", "arm", f"uname -m: {probe.arch}: a 32-bit ARM kernel", 2))


def _includes(draft: Draft, probe: Probe, series: list[str], like: tuple[str, list[str]] | None) -> str:
    if like is not None:
        host, names = like
        return _commented("includes:", f"as {host}'s (--like {host})") + "".join(f"  - {n}\n" for n in names)
    matched = matching_series(series, probe.compatible)
    if not matched:
        draft.refusals.append(f"cat /proc/device-tree/compatible: {', '.join(probe.compatible) or 'nothing'}: no "
                              "series under patches/soc or patches/board matches; name a similar host with --like "
                              "HOST, or add the board's series first")
        return ""
    draft.proposed = [n for n, _ in matched]
    return (_commented("includes:", "proposed from the board's compatible strings: confirm")
            + "".join(_commented(f"  - {n.removesuffix('.patch')}", c) for n, c in matched))


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,38}")  # a forge login
_OPERATORS = re.compile(r"^operators:[ \t]*(#.*)?$", re.M)


def valid_login(login: str) -> bool:
    """True for what can be a forge login."""
    return _LOGIN.fullmatch(login) is not None


def operator_added(infra: str, host: str, login: str) -> str | None:
    """``infra`` (the text of infra.yaml) with ``login`` made an operator of ``host``, every other line as it
    was; None when the login is not one, or ``operators`` is not a block mapping this can add a line to."""
    if not valid_login(login):
        return None
    line = _commented(f"  {host}: [{login}]", "ka host add --operator")
    found = _OPERATORS.search(infra)
    if found is not None:
        return infra[:found.end()] + "\n" + line.rstrip("\n") + infra[found.end():]
    if re.search(r"^operators\s*:", infra, re.M):
        return None
    return infra + ("" if not infra or infra.endswith("\n") else "\n") + "operators:\n" + line
