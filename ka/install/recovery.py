"""What an install that did not succeed leaves as the way back, in words a maintainer can act on.

The words depend on how far it got: nothing changed; changed but not rebooted (which entry boots
next); rebooted and back on the kept kernel, on another one, or not back at all (then the console
steps and the backup).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ka.fleet.installspec import InstallSpec
from ka.install import trial
from ka.install.extlinux import LABEL, PREV_SUFFIX, PREVIOUS


@dataclass
class Progress:
    """How far an install or rollback got."""

    changed: bool = False  # something on the host changed
    default: str | None = None  # the label extlinux.conf boots now, when kernel-agent wrote it
    rebooted: bool = False
    never_back: bool = False
    back_on: str | None = None  # the release it came back on
    modules_aside: str | None = None  # the kept kernel's modules, set aside and not yet back in place
    trial_armed: bool = False  # the boot-once trial's files are on the host, not yet cleared
    apt_package: str | None = None  # apt hosts: the kernel package this run installs (or removes)
    transaction: str | None = None  # the folder of a detached package transaction not seen ending
    rebooting: bool = False  # the reboot was asked for
    default_title: str | None = None  # the menu title of the default entry, as read back from the host


def way_back(host: str, spec: InstallSpec, got: Progress, running: str | None, new: str | None,
             backup: str | None) -> list[str]:
    """The steps that lead back to a kernel that boots, for the end of a failed install."""
    if not got.changed:
        return [f"nothing on {host} was changed"]
    saved = f"the backup of {running}: {backup}" if backup else "no backup was made"
    return WAYS[spec.kind.name](host, spec, got, running, new, saved)


def pacman_way_back(host: str, spec: InstallSpec, got: Progress, running: str | None, new: str | None,
                    saved: str) -> list[str]:
    """On a pacman host the new kernel took the default entry's files; the running one's are kept as
    ``*.ka-prev`` and boot as the fallback entry."""
    if got.never_back:
        lines = console(host, spec, running, saved)
    elif got.back_on is not None and got.back_on == running and got.default == PREVIOUS:
        lines = [f"{host} is up on {running}, the kept kernel, and boots it by default (entry {PREVIOUS}, files "
                 f"*{PREV_SUFFIX})",
                 f"put {running} back under its own names: ka-install {host} --rollback; then install again",
                 f"look at how {new} fails: the console of its boot; {saved}"]
    elif got.back_on is not None and got.back_on == running:
        lines = [f"{host} is up on {running}, the kept kernel; {new} stays the default entry, so the next boot "
                 "tries it again",
                 f"make {running} the default again: ka-install {host} --rollback",
                 f"then look at how {new} fails on the console; {saved}"]
    elif got.back_on is not None:
        lines = [f"{host} is up on {got.back_on}, which is neither {running} nor {new}: look at the host before "
                 f"anything else; {saved}"]
    elif got.rebooting:
        lines = [f"{host} was told to reboot when this run stopped: see what it runs (ka-status --live {host}) before "
                 f"anything else; {_next_boot(host, got, running, new)}", saved]
    elif got.rebooted:
        lines = [f"{host} came back, but its kernel could not be told: ka-status --live {host}, or the console",
                 *console(host, spec, running, saved)[1:]]
    else:
        lines = [f"{host} still runs {running}; nothing was rebooted", _next_boot(host, got, running, new), saved]
    if got.trial_armed:
        lines.append(armed(spec, f"{LABEL} once and a failed one comes back on {PREVIOUS}"))
    if got.transaction:
        lines.append(f"pacman goes on by itself on {host} (its output: {got.transaction}/out); when it ends it puts "
                     f"the modules of {running} back; wait for it to end (pacman's db.lck gone), then: ka-install "
                     f"{host} --rollback")
    elif got.modules_aside:
        lines.append(f"the modules of {running} are at {got.modules_aside}: move them back to "
                     f"{spec.modules}/{running} (mv -T) before booting {running} again")
    return lines


def apt_way_back(host: str, spec: InstallSpec, got: Progress, running: str | None, new: str | None,
                 saved: str) -> list[str]:
    """On an apt host the running kernel keeps its package and its entry: the way back is removing the new one."""
    package = got.apt_package or spec.kernel_package(str(new))
    remove = f"ka-install {host} --rollback (apt-get remove {package}: u-boot-update makes the kernel it replaced " \
             "the default again)"
    if got.never_back:
        return [f"{host} is not answering over ssh: go to its console; in U-Boot's menu pick the entry of {running}",
                f"once it is up: {remove}", f"if the boot folder is damaged: {saved}"]
    if got.back_on is not None and got.back_on != new:
        lines = [f"{host} is up on {got.back_on}; {new} may still be the default entry", f"then: {remove}", saved]
    elif got.back_on is not None:
        lines = [f"{host} is up on {new}", saved]
    else:
        lines = [f"{host} still runs {running}; nothing was rebooted; if {package} is on the host (dpkg -l), its "
                 f"entry may be the default: {remove}", saved]
    if got.trial_armed:
        lines.append(armed(spec, "the new entry once"))
    if got.transaction:
        lines.append(f"apt-get goes on by itself on {host} (its output: {got.transaction}/out); wait for it to end "
                     f"before anything else (dpkg's lock free, dpkg -l {package}), then look again")
    return lines


WAYS = {"pacman": pacman_way_back, "deb": apt_way_back}  # each package format's way back, in words


def armed(spec: InstallSpec, tries: str) -> str:
    """The line of the way back that says a boot-once trial is still armed, and how to end it by hand."""
    ends = " && ".join(shlex.join(argv) for argv in trial.clear_commands(spec))
    return f"the boot-once trial is armed in {spec.trial_state}: the next boot tries {tries}; to end the trial by " \
           f"hand: {ends}"


def _next_boot(host: str, got: Progress, running: str | None, new: str | None) -> str:
    if got.default_title and got.default == PREVIOUS:
        return (f"the next boot boots entry {PREVIOUS} ({got.default_title}, the kept files *{PREV_SUFFIX}); put it "
                f"back under its own names with ka-install {host} --rollback")
    if got.default_title and got.default == LABEL:
        return (f"the next boot boots entry {LABEL} ({got.default_title}), {PREVIOUS} is the fallback; to make the "
                f"kept kernel the default again: ka-install {host} --rollback")
    if got.default == LABEL:
        return (f"the next boot boots the new kernel {new} (entry {LABEL}), {running} is the fallback "
                f"({PREVIOUS}, files *{PREV_SUFFIX}); to make {running} the default again: ka-install {host} "
                "--rollback")
    if got.default == PREVIOUS:
        return (f"the next boot boots {running} from the kept files (entry {PREVIOUS}); put it back in place "
                f"with ka-install {host} --rollback, then install again")
    return f"extlinux.conf was not changed: the next boot boots {running} as before; install again when fixed"


def console(host: str, spec: InstallSpec, running: str | None, saved: str) -> list[str]:
    """The steps at a host that does not answer over ssh."""
    return [f"{host} is not answering over ssh: go to its console (serial, or screen and keyboard)",
            f"in U-Boot's menu pick \"previous: {running}\" (label {PREVIOUS}, the fallback); or, at the U-Boot "
            f"prompt: setenv pxe_label_override {PREVIOUS}; boot",
            f"once it is up: ka-install {host} --rollback (makes {running} the default again)",
            f"if the boot folder is damaged, restore from {saved}: its boot/ into {spec.boot}, extlinux.conf to "
            f"{spec.extlinux}, modules-{running}.tar into {spec.modules} (tar -xf), checked with sha256sum -c "
            f"SHA256SUMS; or, from a working host: ka-install {host} --rollback {running}"]
