"""A boot-once trial of a new kernel, for firmware without a boot counter.

extlinux.conf alone cannot take a kernel back once it is the default: a kernel that panics
(``panic=``) reboots into itself for ever, and Debian's U-Boot for QEMU, like many boards' builds,
has no ``bootcount``/``altbootcmd``.  With ``install.trial_boot: uboot-script`` ka-install arms a
trial just before the reboot: it writes ``ka-trial.txt`` (which label is being tried, which one to
fall back to) into ``install.trial_state``, a folder on a FAT partition U-Boot can write, and removes
``ka-tried``.  The board's U-Boot runs :data:`UBOOT_SCRIPT` before its distro boot: when the trial
file is there and ``ka-tried`` too, the tried kernel did not confirm and U-Boot boots the fallback
label; otherwise it writes ``ka-tried`` and boots the default.  When the heartbeat sees the new
kernel, ka-install confirms by removing both files (consent by action); when the host came back on
the kept kernel by itself, ka-install makes the kept kernel the default again and clears them.
"""

from __future__ import annotations

import posixpath

from ka.device import Device
from ka.extlinux import LABEL, PREVIOUS
from ka.installspec import InstallSpec

TRIAL_FILE = "ka-trial.txt"
TRIED_FILE = "ka-tried"

#: what the board's U-Boot environment needs (``DEV``: the state partition, e.g. ``mmc 0:1``,
#: ``virtio 0:2``): run ``ka_trial`` before ``distro_bootcmd`` in ``bootcmd``
UBOOT_SCRIPT = (
    "ka_trial=if load DEV ${scriptaddr} /" + TRIAL_FILE + "; then "
    "env import -t ${scriptaddr} ${filesize} ka_default ka_fallback; "
    "if test -e DEV /" + TRIED_FILE + "; then "
    "echo ka-trial: ${ka_default} was tried and not confirmed, booting ${ka_fallback}; "
    "setenv pxe_label_override ${ka_fallback}; "
    "else fatwrite DEV ${scriptaddr} /" + TRIED_FILE + " 1; echo ka-trial: trying ${ka_default} once; fi; fi")


def uboot_script(device: str) -> str:
    """:data:`UBOOT_SCRIPT` for the state partition ``device`` (U-Boot's ``interface dev:part``)."""
    return UBOOT_SCRIPT.replace("DEV", device)


def paths(spec: InstallSpec) -> tuple[str, str]:
    """The trial file and the tried mark, on the host."""
    return posixpath.join(spec.trial_state, TRIAL_FILE), posixpath.join(spec.trial_state, TRIED_FILE)


def arm_commands(spec: InstallSpec, staged: str = "<tmp>/" + TRIAL_FILE) -> list[list[str]]:
    """Put the trial file in place (copied, synced, renamed: FAT keeps no modes to set) and clear the mark."""
    trial, tried = paths(spec)
    return [spec.root("cp", "--", staged, f"{trial}.ka-new"), spec.root("sync"),
            spec.root("mv", "-T", "--", f"{trial}.ka-new", trial), spec.root("rm", "-f", "--", tried),
            spec.root("sync")]


def clear_commands(spec: InstallSpec) -> list[list[str]]:
    """Confirm (or end) the trial: neither file stays, so every later boot takes the default."""
    return [spec.root("rm", "-f", "--", *paths(spec)), spec.root("sync")]


def arm(device: Device, spec: InstallSpec) -> None:
    """Before the reboot: the next boot tries ``kernel-agent`` once, then falls back."""
    staged = posixpath.join(device.tmp(), TRIAL_FILE)
    with device.remote.sftp.open(staged, "wb") as fh:
        fh.write(f"ka_default={LABEL}\nka_fallback={PREVIOUS}\n".encode())
    for argv in arm_commands(spec, staged):
        device.remote.run(argv, timeout=120)


def clear(device: Device, spec: InstallSpec) -> None:
    """After the heartbeat: the trial is over."""
    for argv in clear_commands(spec):
        device.remote.run(argv, timeout=120)
