"""A boot-once trial of a new kernel, for firmware without a boot counter.

extlinux.conf alone cannot take a kernel back once it is the default: a kernel that panics
(``panic=``) reboots into itself for ever, and Debian's U-Boot for QEMU, like many boards' builds,
has no ``bootcount``/``altbootcmd``.  With ``install.trial_boot: uboot-script`` ka-install arms a
trial just before the reboot: it writes ``ka-trial.txt`` (which label is being tried, which one to
fall back to) into ``install.trial_state``, a folder on a FAT partition U-Boot can write, and removes
``ka-tried``.  The board's U-Boot runs :data:`UBOOT_SCRIPT` before its distro boot: when the trial
file is there and ``ka-tried`` too, the tried kernel did not confirm and U-Boot boots the fallback
label and writes ``ka-fell``; otherwise it writes ``ka-tried`` and boots the default (and when it
cannot write the mark, it boots the fallback: a trial that cannot end must not start).  When the
heartbeat sees the new kernel and no ``ka-fell`` (a rebuilt kernel may have the running release),
ka-install confirms by removing the files (consent by action); when the host came back on the kept
kernel by itself, ka-install makes the kept kernel the default again and clears them.
"""

from __future__ import annotations

import posixpath

from ka.fleet.installspec import InstallSpec
from ka.install.device import Device
from ka.install.extlinux import LABEL, PREVIOUS

TRIAL_FILE = "ka-trial.txt"
TRIED_FILE = "ka-tried"
FELL_FILE = "ka-fell"

#: what the board's U-Boot environment needs (``DEV``: the state partition, e.g. ``mmc 0:1``,
#: ``virtio 0:2``): run ``ka_trial`` before ``distro_bootcmd`` in ``bootcmd``
UBOOT_SCRIPT = (
    "ka_trial=if load DEV ${scriptaddr} /" + TRIAL_FILE + "; then "
    "env import -t ${scriptaddr} ${filesize} ka_default ka_fallback; "
    "if test -e DEV /" + TRIED_FILE + "; then "
    "echo ka-trial: ${ka_default} was tried and not confirmed, booting ${ka_fallback}; "
    "fatwrite DEV ${scriptaddr} /" + FELL_FILE + " 1; setenv pxe_label_override ${ka_fallback}; "
    "else if fatwrite DEV ${scriptaddr} /" + TRIED_FILE + " 1; then echo ka-trial: trying ${ka_default} once; "
    "else echo ka-trial: cannot write the mark, booting ${ka_fallback}; "
    "setenv pxe_label_override ${ka_fallback}; fi; fi; fi")


def uboot_script(device: str) -> str:
    """:data:`UBOOT_SCRIPT` for the state partition ``device`` (U-Boot's ``interface dev:part``)."""
    return UBOOT_SCRIPT.replace("DEV", device)


def paths(spec: InstallSpec) -> tuple[str, str, str]:
    """The trial file, the tried mark and the fell-back mark, on the host."""
    return tuple(posixpath.join(spec.trial_state, name)  # type: ignore[return-value]
                 for name in (TRIAL_FILE, TRIED_FILE, FELL_FILE))


def arm_commands(spec: InstallSpec, staged: str = "<tmp>/" + TRIAL_FILE) -> list[list[str]]:
    """Put the trial file in place (copied, synced, renamed: FAT keeps no modes to set) and clear the marks."""
    trial, tried, fell = paths(spec)
    return [spec.root("cp", "--", staged, f"{trial}.ka-new"), spec.root("sync"),
            spec.root("mv", "-T", "--", f"{trial}.ka-new", trial), spec.root("rm", "-f", "--", tried, fell),
            spec.root("sync")]


def clear_commands(spec: InstallSpec) -> list[list[str]]:
    """Confirm (or end) the trial: no file stays, so every later boot takes the default."""
    return [spec.root("rm", "-f", "--", *paths(spec)), spec.root("sync")]


def text(default: str = LABEL, fallback: str = PREVIOUS) -> str:
    """The trial file: the label tried once, the label booted when it was not confirmed."""
    return f"ka_default={default}\nka_fallback={fallback}\n"


def arm(device: Device, spec: InstallSpec, default: str = LABEL, fallback: str = PREVIOUS) -> None:
    """Before the reboot: the next boot tries ``default`` (``kernel-agent``) once, then falls back."""
    staged = posixpath.join(device.tmp(), TRIAL_FILE)
    with device.remote.sftp.open(staged, "wb") as fh:
        fh.write(text(default, fallback).encode())
    for argv in arm_commands(spec, staged):
        device.remote.run(argv, timeout=120)


def clear(device: Device, spec: InstallSpec) -> None:
    """After the heartbeat: the trial is over."""
    for argv in clear_commands(spec):
        device.remote.run(argv, timeout=120)


def fell(device: Device, spec: InstallSpec) -> bool:
    """U-Boot booted the fallback label (the only sign when both kernels have one release)."""
    return device.remote.run(spec.root("test", "-e", paths(spec)[2]), timeout=60, check=False).ok


def state_problem(device: Device, spec: InstallSpec) -> str | None:
    """Why U-Boot would not see the trial's files at ``trial_state`` (None: it would)."""
    where = spec.trial_state
    kind = device.remote.run(["stat", "-f", "-c", "%T", "--", where], timeout=60, check=False)
    mount = device.remote.run(["stat", "-c", "%m", "--", where], timeout=60, check=False)
    if not kind.ok or not mount.ok:
        return f"{where} cannot be read ({(kind.output or mount.output).strip()[-200:]})"
    if kind.output.strip() not in ("msdos", "vfat", "fat"):
        return f"{where} is on {kind.output.strip()}, not a FAT file system U-Boot can write"
    if mount.output.strip() != where:
        return (f"{where} is not the mount point of its partition (that is {mount.output.strip()}): U-Boot reads "
                "the trial's files at the partition's root")
    return None
