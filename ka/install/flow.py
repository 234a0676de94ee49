"""The two verbs of ka-install, ``install`` and ``rollback``: one flow each, over the host's package format.

The flow is the same on every host (the package and its inputs checked, the host connected and
locked, the preflight, the steps, the reboot and the heartbeat, the boot-once trial judged); what
differs between a pacman and an apt host (the checks the package manager would make, the room,
the steps, what a fall-back undoes, the way back) is asked of the host's format object
(:class:`PacmanInstall`, :class:`AptInstall`).  Each verb runs under the local lock, and every
failure ends as an :class:`InstallError` with the way back (``run_installer``).
"""

from __future__ import annotations

import shlex
from typing import Any

from ka.build.wanted import wanted
from ka.errors import EXIT_BAD_INPUT, KaError
from ka.fleet.infra import Infra
from ka.fleet.repo import RepoView
from ka.install import trial
from ka.install.apt import AptInstall
from ka.install.extlinux import PREVIOUS
from ka.install.installer import Installer, InstallError, InstallOptions, InstallResult, Log, Preflight, run_installer
from ka.install.pacman import PacmanInstall
from ka.install.restore import Restore
from ka.packages.facts import PackageFacts

HostFormat = PacmanInstall | AptInstall
INSTALLS: dict[str, type[HostFormat]] = {"pacman": PacmanInstall, "deb": AptInstall}  # by package format


def install(view: RepoView, host: str, infra: Infra, opts: InstallOptions, log: Log = lambda line: None,
            phase: Any = lambda name: None) -> InstallResult:
    """``ka-install HOST``: see ka/install/pacman.py and ka/install/apt.py for the order of each; raises
    :class:`InstallError` when refused or failed."""
    session = Installer(view, host, infra, opts, log, phase, "install")
    fmt = host_format(session)
    return run_installer(session, lambda: _install(session, fmt))


def rollback(view: RepoView, host: str, infra: Infra, opts: InstallOptions, release: str | None = None,
             log: Log = lambda line: None, phase: Any = lambda name: None) -> InstallResult:
    """``ka-install HOST --rollback [RELEASE]``: the format's way back, or a release from the backup;
    :class:`InstallError` when refused or failed."""
    session = Installer(view, host, infra, opts, log, phase, "rollback")
    fmt = host_format(session)
    if release is None:
        return run_installer(session, fmt.roll_back)
    if not fmt.keeps:
        raise InstallError(f"{host} installs with apt: its kernels keep their packages and entries, so a rollback "
                           f"removes the newer package (ka-install {host} --rollback); restoring a release from a "
                           "backup is for pacman hosts; refused, nothing was changed", exit_code=EXIT_BAD_INPUT)
    return run_installer(session, Restore(session, release).run)


def host_format(session: Installer) -> HostFormat:
    """The object that knows how the host's package format installs (``install.format``)."""
    return INSTALLS[session.spec.kind.name](session)


def _install(s: Installer, fmt: HostFormat) -> InstallResult:
    s.phase("package")
    facts = s.package()
    if not s.planned:  # a dry run's package planned from the manifest is the manifest's by construction
        check_inputs(s, facts)
    s.phase("preflight")
    reached = s.reachable() if s.opts.dry_run else bool(s.connect())
    if not reached:
        pre = s.assumed()  # a dry run is how one learns what will happen before anything exists
    else:
        s.lock()
        pre = s.preflight()
        s.check_booted(pre)
        fmt.check_host(pre, facts)
        s.check_trial_state()
        if s.planned:  # no package yet: its size is not known
            s.unchecked(f"room in {s.spec.boot}", "the package's size is known once it is built")
        else:
            fmt.check_room(pre, facts)
    s.check_backup_host()
    if s.opts.dry_run:
        s.result.extlinux_before = pre.text
    s.log(f"{s.host} runs {pre.running} ({s.spec.pkgbase} {pre.installed or 'not installed'}); "
          f"installing {facts.name} {facts.version} ({facts.release})")
    s.execute(fmt.steps(pre, facts))
    if not s.opts.dry_run:
        _after_install(s, fmt, pre, facts)
    return s.result


def check_inputs(s: Installer, facts: PackageFacts) -> None:
    """The package must be what the manifest at this commit builds: the newest published one may come
    from a pull request's ``/ka build``, and an install takes only what the manifest says now."""
    want = wanted(s.view, s.host)
    got = facts.inputs
    differs = [what for what, key, value in (("the cumulative patch", "patch_b2sum", want.patch_b2sum),
                                             ("the config", "config_b2sum", want.config_b2sum),
                                             ("the version", "version", want.version))
               if got.get(key) != value]
    if not differs:
        return
    why = ("it has no kernel-agent record (not built by ka-build)" if not got else
           f"{' and '.join(differs)} differ{'s' if len(differs) == 1 else ''}")
    where = s.view.rev[:12] if s.view.rev else "the work tree"
    if s.opts.package is not None:
        s.log(f"note: {facts.path.name} is not what fleet/{s.host}.yaml at {where} builds ({why}); "
              "installing it as --package asked")
        return
    raise InstallError(f"{facts.path.name} is not what fleet/{s.host}.yaml at {where} builds ({why}): "
                       f"build that first (ka-build {s.host}), or give --package FILE to install it anyway; "
                       "refused, nothing was changed")


def _after_install(s: Installer, fmt: HostFormat, pre: Preflight, facts: PackageFacts) -> None:
    if not s.opts.reboot:
        s.result.state = "pending-reboot"
        s.result.message = (f"{facts.name} {facts.version} installed on {s.host}; a reboot is pending "
                            f"(it still runs {pre.running})")
        return
    s.phase("reboot")
    try:
        s.heartbeat(facts.release, pre.running, "install")
    except InstallError as exc:
        if s.got.back_on == pre.running:  # on the kept kernel: a panic=, a FALLBACK label or the trial took it
            s.result.fell_back = pre.running
        if s.spec.trial_boot == "uboot-script" and s.got.back_on == pre.running:
            raise InstallError(fmt.fell_back(pre, facts, str(exc))) from None
        raise
    if s.spec.trial_boot == "uboot-script":
        _confirm_trial(s, fmt, pre, facts)


def _confirm_trial(s: Installer, fmt: HostFormat, pre: Preflight, facts: PackageFacts) -> None:
    """The new kernel is up: end its trial, unless U-Boot says it booted the fallback (same release)."""
    if trial.fell(s.device, s.spec):
        s.result.fell_back = pre.running
        raise InstallError(fmt.fell_back(pre, facts, f"{s.host} came back on {facts.release}, but U-Boot "
                                                     f"booted {PREVIOUS}: the host fell back to the kept kernel"))
    try:
        trial.clear(s.device, s.spec)
    except KaError as exc:  # it runs the new kernel; only the trial's end is missing
        ends = " && ".join(shlex.join(argv) for argv in trial.clear_commands(s.spec))
        s.result.message += (f"; but its boot-once trial could not be ended ({exc}): run {ends} on the "
                             f"host, or its next boot takes {PREVIOUS}")
        return
    s.got.trial_armed = False
    s.result.message += f"; the boot-once trial of {facts.release} is confirmed"
