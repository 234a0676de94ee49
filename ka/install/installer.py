"""The machinery ka-install and its rollbacks share: connections and locks, the preflight, the
steps (backup, keep, extlinux, records), running them or printing them (``--dry-run``), the
reboot with its heartbeat, and the way back a failure leaves (ka/install/recovery.py says it in words).

The host's record (``<state>/install.json``) follows every install through its stages, so that
the next run knows what the default entry holds: ``keeping`` (the default entry is untouched),
``installing`` (the new kernel's files may be in place), ``installed`` (a reboot is pending),
``booted``, ``fell-back`` or ``failed``.  An install is refused unless the default entry holds the
kernel that runs: that is what it keeps as the way back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import posixpath
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from ka.build.wanted import expected
from ka.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_ENVIRONMENT, EXIT_INTERRUPTED, KaError
from ka.fleet.infra import Infra
from ka.fleet.installspec import InstallSpec
from ka.fleet.manifest import load_manifest
from ka.fleet.repo import RepoView
from ka.install import backup as backups
from ka.install import extlinux, trial
from ka.install.device import Device, FileInfo, LockHeld, dropped, now
from ka.install.heartbeat import Beat, reboot
from ka.install.recovery import Progress, way_back
from ka.io import stopping
from ka.io.ssh import Remote, SshSettings, Unreachable, connect
from ka.io.who import who
from ka.packages import aptrepo, pacmandb
from ka.packages.facts import PackageFacts, package_facts

Log = Callable[[str], None]
REPOSITORIES: dict[str, Any] = {"pacman": pacmandb, "deb": aptrepo}  # each package format's newest() and fetch()
MARGIN = 1.1  # room asked for in the boot folder, over the estimate
SAFE_STAGES = ("keeping",)  # the default entry was not touched yet
RECONNECT_FOR = 20.0  # seconds to get the connection back to let go of the lock, after it dropped


class InstallError(KaError):
    """The install was refused or failed; ``result`` says how far it got and the way back."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, result: InstallResult | None = None, exit_code: int | None = None) -> None:
        super().__init__(message, exit_code=exit_code)
        self.result = result


@dataclass(frozen=True)
class InstallOptions:
    """Settings resolved once by the caller (the CLI, the bot)."""

    out_dir: Path
    ssh: SshSettings
    gnupghome: Path | None = None
    package: Path | None = None
    dry_run: bool = False
    reboot: bool = True
    who: str = field(default_factory=who)


@dataclass(frozen=True)
class Step:
    """One step: what it does, the commands it runs (printed by --dry-run), and how."""

    text: str
    commands: list[tuple[str, list[str]]]
    action: Callable[[], None]
    writes: str | None = None  # the text of the file it writes, for --dry-run to show


@dataclass
class InstallResult:
    """What an install (or rollback) did, for the terminal, --json, the bot and the record."""

    host: str
    action: str
    state: str = "running"
    message: str = ""
    package: str | None = None
    version: str | None = None
    old_release: str | None = None
    new_release: str | None = None
    installed_before: str | None = None
    backup: str | None = None
    heartbeat: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    recovery: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)  # a dry run's: what it planned without, and why
    extlinux_before: str | None = None  # a dry run's: extlinux.conf as read (or assumed), before the steps
    fell_back: str | None = None  # the kept release the boot-once trial took the host back to
    started: str = field(default_factory=now)
    finished: str | None = None

    @property
    def ok(self) -> bool:
        return self.state in ("succeeded", "pending-reboot", "dry-run")

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


@dataclass
class Preflight:
    """What the host is before anything changes."""

    running: str
    installed: str | None
    record: dict[str, Any]
    text: str  # extlinux.conf as it was
    config: extlinux.Config
    boot: dict[str, FileInfo]
    kept: list[tuple[str, str, str]]  # (role, file, its *.ka-prev copy) of the default entry
    modules: str | None  # the running release's modules folder, when it exists

    @property
    def stage(self) -> str | None:
        return self.record.get("stage")

    def holds(self) -> str | None:
        """The release the default entry holds, by the record (None: no record, or nothing touched)."""
        if not self.record or self.stage in SAFE_STAGES:
            return None
        return (self.record.get("installed") or {}).get("release")


class Installer:
    """One install or rollback of one host."""

    def __init__(self, view: RepoView, host: str, infra: Infra, opts: InstallOptions, log: Log,
                 phase: Callable[[str], None], action: str) -> None:
        manifest = load_manifest(view, host)
        assert manifest.install is not None
        self.view, self.host, self.infra, self.opts, self.log, self.show = view, host, infra, opts, log, phase
        self.spec: InstallSpec = manifest.install
        self.result = InstallResult(host, action)
        self._device: Device | None = None
        self.backup_remote: Remote | None = None
        self.locked = False
        self.got = Progress()
        self.current = "preflight"  # the step that runs, for an interrupt's message
        self.planned = False  # a dry run's package is the manifest's, not a fetched one
        self.work = opts.out_dir / host / "install"

    def phase(self, name: str) -> None:
        """A new phase begins: a safe point to stop at, when a signal asked for it."""
        stopping.check()
        self.show(name)

    @property
    def device(self) -> Device:
        """The host, once :meth:`connect` reached it (every step runs after that)."""
        if self._device is None:
            raise RuntimeError(f"{self.host}: a step ran before the host was connected")
        return self._device

    # --- connections and the lock -----------------------------------------------------------------

    def unchecked(self, what: str, why: str) -> None:
        """A dry run goes on without ``what`` (``why``): the plan says so, and a real run would need it."""
        self.result.not_checked.append(f"{what}: {why}")
        self.log(f"not checked: {what}: {why}")

    def reachable(self) -> bool:
        """For a dry run: connect (as :meth:`connect`), or, when the host cannot be reached, plan without it."""
        try:
            return bool(self.connect(raising=True))
        except Unreachable as exc:
            self.unchecked("the host", f"{exc}; the plan assumes the host as its manifest describes it")
            self._device = Device(cast(Remote, _Unreached(self.spec.ssh)), self.spec, self.log)
            return False

    def connect(self, raising: bool = False) -> Device:
        """The host over ssh, able to become root; refused (nothing changed) when it cannot (``raising``:
        :class:`Unreachable` as it is)."""
        try:
            role = f"{self.spec.ssh} (install.ssh of fleet/{self.host}.yaml)"
            self._device = Device(connect(self.opts.ssh, self.spec.ssh, role), self.spec, self.log)
        except Unreachable as exc:
            if raising:
                raise
            raise InstallError(f"{self.host}: cannot be reached: {exc}; nothing was changed",
                               exit_code=EXIT_ENVIRONMENT) from None
        probe = self.device.root(["true"], timeout=60, check=False)
        if not probe.ok:
            raise InstallError(f"{self.host}: cannot become root with `{shlex.join(self.spec.root('true'))}` (exit "
                               f"{probe.code}: {probe.output.strip()[-200:]}); install.commands.prefix must work "
                               "without a password (sudo -n); refused, nothing was changed")
        return self.device

    def lock(self) -> None:
        """Take the host's install lock before reading what it is (not for --dry-run, which changes nothing)."""
        device = self.device
        if self.opts.dry_run:
            holder = device.locked()
            if holder:
                self.log(f"note: another install holds {device.lock_path} ({holder}); a real run would be refused")
            return
        try:
            device.lock(self.opts.who)
        except LockHeld as exc:
            raise InstallError(f"{exc}; refused, nothing was changed") from None
        self.locked = True

    def lock_shown(self) -> Step:
        """The lock, as --dry-run lists it (a real run took it before the preflight)."""
        device = self.device
        return Step(f"lock {self.host}", [(self.host, self.spec.root("mkdir", "--", device.lock_path))], lambda: None)

    def backup_host(self) -> Remote:
        backup = self.infra.backup
        if backup is None:
            raise InstallError(f"{self.infra.path}: no backup host (backup: ssh, path): an install always backs up "
                               "first; refused", exit_code=EXIT_BAD_INPUT)
        if self.backup_remote is None:
            try:
                self.backup_remote = connect(self.opts.ssh, backup.ssh, backup.role)
            except Unreachable as exc:
                raise InstallError(f"the backup host cannot be reached: {exc}; refused, nothing on {self.host} "
                                   "was changed", exit_code=EXIT_ENVIRONMENT) from None
        return self.backup_remote

    def check_backup_host(self) -> None:
        """The backup host answers (a dry run notes it when it does not, and goes on)."""
        try:
            self.backup_host()
        except InstallError as exc:
            if not self.opts.dry_run or self.infra.backup is None:
                raise
            self.unchecked("the backup host", str(exc).split("; refused")[0].removeprefix("the backup host "))

    def close(self) -> None:
        for remote in (self._device.remote if self._device else None, self.backup_remote):
            if remote is not None:
                remote.close()

    # --- preflight ------------------------------------------------------------------------------

    def package(self) -> PackageFacts:
        """The package to install: ``--package FILE``, else the newest ka-build published."""
        fmt = self.spec.kind
        repo = self.infra.repository_for(fmt)
        if self.opts.package is not None:
            path = self.opts.package
        elif repo is None:
            raise InstallError(f"{self.infra.path}: no {fmt.repository_key} to take the newest package "
                               "from; give --package FILE", exit_code=EXIT_BAD_INPUT)
        else:
            source = REPOSITORIES[fmt.name]
            try:
                entry = source.newest(self.opts.ssh, repo, self.spec.pkgbase)
                self.log(f"newest published: {entry.name} {entry.version} ({entry.filename})")
                path = source.fetch(self.opts.ssh, repo, entry, self.work / "packages")
            except KaError as exc:  # the repository host is down, or nothing is published yet
                if not self.opts.dry_run:
                    raise
                return self._expected_package(repo, str(exc))
        facts = package_facts(path, self.spec, repo.key if repo else None, self.opts.gnupghome)
        self.log(f"package {facts.path.name}: {facts.name} {facts.version}, kernel {facts.release}, "
                 f"signed by {facts.signer}")
        self.result.package, self.result.version, self.result.new_release = str(path), facts.version, facts.release
        return facts

    def _expected_package(self, repo: Any, why: str) -> PackageFacts:
        """A dry run's package when none can be fetched: what the manifest builds now (no image, no signature)."""
        exp = expected(self.view, self.host, self.spec.kernel_package)
        self.unchecked("the package", f"{(why.splitlines() or ['not fetched'])[0]}; the plan takes what fleet/"
                       f"{self.host}.yaml builds: {exp.name} {exp.version}, kernel {exp.release}, neither "
                       "fetched nor its signature checked")
        self.planned = True
        self.result.package, self.result.version, self.result.new_release = exp.file, exp.version, exp.release
        return PackageFacts(Path(exp.file), exp.name, exp.version, exp.release, "", 0, "not checked")

    def assumed(self) -> Preflight:
        """A dry run's host when it cannot be reached: running ``<running release>``, booted from an extlinux.conf
        with one entry of the manifest's image and initramfs (a real run reads the host's own)."""
        running = "<running release>"
        self.result.old_release = running
        text = extlinux.assumed(self.host, self.spec.extlinux, self.spec.image,
                                posixpath.basename(self.spec.initramfs_path) if self.spec.initramfs_path else None)
        config = extlinux.parse(text)
        self.unchecked(f"{self.host}:{self.spec.extlinux}", "not read; the plan rewrites the assumed one shown "
                       "(a real run keeps the host's own entries and APPEND line)")
        return Preflight(running, None, {}, text, config, {}, extlinux.kept(config, self.spec.boot),
                         posixpath.join(self.spec.modules, running))

    def preflight(self, default_files: bool = True) -> Preflight:
        """The host as it is (read only); with ``default_files`` the default entry's files must be there
        (they are kept as the way back; a rollback replaces them instead)."""
        device = self._device or self.connect()
        running, record = device.release(), device.record()
        installed = device.installed(self.spec.kernel_package(running))
        self.result.old_release, self.result.installed_before = running, installed
        if not device.exists(self.spec.extlinux):
            raise InstallError(f"{self.host}:{self.spec.extlinux}: no extlinux config (install.extlinux); write one "
                               "that boots the current kernel first; refused", exit_code=EXIT_BAD_INPUT)
        text = device.read(self.spec.extlinux, 1 << 20).decode("utf-8", "replace")
        config = extlinux.parse(text)
        try:
            kept = extlinux.kept(config, self.spec.boot)
        except extlinux.ExtlinuxError as exc:
            raise InstallError(f"{self.host}:{self.spec.extlinux}: {exc}; refused", exit_code=EXIT_BAD_INPUT) from None
        missing = [src for _, src, _ in kept if not device.exists(src)] if default_files else []
        if missing:
            raise InstallError(f"{self.host}: the default entry names {', '.join(missing)}, which is not there; "
                               "refused (fix extlinux.conf first)", exit_code=EXIT_BAD_INPUT)
        self._check_reboot(device)
        modules = posixpath.join(self.spec.modules, running)
        return Preflight(running, installed, record, text, config, device.boot_files(), kept,
                         modules if device.exists(modules) else None)

    def _check_reboot(self, device: Device) -> None:
        """The reboot command's program is on the host: found before anything changes, not once the kernel is
        installed (the default, systemctl, is not on a busybox or sysvinit host)."""
        program = self.spec.commands.reboot[0]
        if not self.opts.reboot or device.remote.run(["sh", "-c", 'command -v "$1"', "sh", program],
                                                     timeout=60, check=False).ok:
            return
        raise InstallError(f"{self.host}: install.commands.reboot runs {program}, which the host does not have "
                           f"(command -v {program}); set it to what reboots the host ([reboot] on a busybox or "
                           "sysvinit one); refused, nothing was changed", exit_code=EXIT_BAD_INPUT)

    def check_booted(self, pre: Preflight) -> None:
        """The default entry must hold the running kernel: it is what gets kept as the way back."""
        holds = pre.holds()
        if holds is None or (holds == pre.running and pre.stage in ("booted", "installed")):
            return
        at = (pre.record.get("installed") or {}).get("at", "?")
        why = {"installing": f"an install of {holds} did not finish ({at})",
               "installed": f"{holds} was installed ({at}) and waits for a reboot",
               "fell-back": f"{holds} did not come up and it fell back"}.get(str(pre.stage), f"{holds} is installed "
                                                                                   f"({pre.stage}, {at})")
        rollback = f"run ka-install {self.host} --rollback to put the running kernel back as the default"
        advice = rollback.capitalize() if pre.stage == "fell-back" else f"Reboot it, or {rollback}"
        raise InstallError(f"{self.host} runs {pre.running}, but its default entry holds {holds}: {why}.  {advice}; "
                           "refused, nothing was changed")

    def check_room(self, pre: Preflight, new_bytes: int, keeping: bool = True) -> None:
        """Room in the boot folder for ``new_bytes`` of new files and the kept copies."""
        device = self.device
        copies = (device.size([src for _, src, _ in pre.kept]) - device.size([dst for _, _, dst in pre.kept])
                  if keeping else 0)
        replaced = device.size([self.spec.image_path, self.spec.dtbs_path])
        initramfs = self.spec.initramfs_path
        old_initrd = [src for role, src, _ in pre.kept if role == "initrd"]
        fresh = device.size(old_initrd) if initramfs and not device.exists(initramfs) else 0
        self.require_room(int((max(0, copies) + max(0, new_bytes - replaced) + fresh) * MARGIN),
                          "the new kernel and the kept previous one", "remove old kernels or *.ka-prev files by hand")

    def require_room(self, needed: int, what: str, advice: str) -> None:
        """``needed`` bytes free in the boot folder for ``what``, or a refusal that says ``advice``."""
        device = self.device
        free = device.free(self.spec.boot)
        self.log(f"{self.spec.boot}: {free >> 20} MiB free, about {needed >> 20} MiB needed")
        if free < needed:
            raise InstallError(f"{self.host}:{self.spec.boot}: {free >> 20} MiB free, but {what} need about "
                               f"{needed >> 20} MiB; refused, nothing was changed ({advice})")

    # --- steps ------------------------------------------------------------------------------------

    def backup_step(self, pre: Preflight, record: dict[str, Any]) -> Step:
        """Back up the running kernel (the default entry's files, its modules, the config) and verify it."""
        device = self.device
        backup = self.infra.backup
        assert backup is not None  # backup_host() refused an infra without one, in the preflight
        contents = backups.Contents(self.spec.boot, tuple(src for _, src, _ in pre.kept), self.spec.extlinux,
                                    pre.modules)
        record["files"] = {role: posixpath.relpath(src, self.spec.boot) for role, src, _ in pre.kept}
        final = backups.folder(backup, self.host, pre.running)

        def run() -> None:
            stage = self.work / "backup" / pre.running
            package = f"{self.spec.pkgbase} {pre.installed}" if pre.installed else None
            backups.collect(device, contents, stage, record, package, self.log)
            where = backups.store(self.backup_host(), backup, self.host, pre.running, stage, self.log)
            self.result.backup = f"{backup.ssh}:{where}"
        commands = [(self.host, argv) for argv in backups.commands(device, contents)]
        commands.append((backup.ssh, ["sha256sum", "--quiet", "--strict", "-c", backups.SUMS]))
        return Step(f"back up {pre.running} to {backup.ssh}:{final}", commands, run)

    def keep_step(self, pre: Preflight, new_release: str) -> Step:
        """Copy the running kernel's files to ``*.ka-prev`` names, and set its modules aside when pacman
        would remove them (a new release); then sync, so the copies are on disk before the config names them."""
        cmds: list[list[str]] = []
        for _, src, dst in pre.kept:
            cmds += [self.spec.root("rm", "-rf", "--", dst), self.spec.root("cp", "-a", "--", src, dst)]
        if pre.modules and pre.running != new_release:
            copy = self.modules_copy(pre.running)
            cmds += [self.spec.root("rm", "-rf", "--", copy), self.spec.root("cp", "-al", "--", pre.modules, copy)]
        cmds.append(self.spec.root("sync"))
        return self.commands_step(f"keep {pre.running} as *{extlinux.PREV_SUFFIX}", cmds)

    def modules_copy(self, release: str) -> str:
        return posixpath.join(self.spec.modules, f".ka-prev-{release}")

    def extlinux_step(self, pre: Preflight, titles: tuple[str, str], default: str) -> Step:
        """Write extlinux.conf with both entries, ``default`` booting (replaced atomically, synced)."""
        device = self.device
        text = extlinux.rewrite(pre.text, self.spec.image,
                                posixpath.basename(self.spec.initramfs_path) if self.spec.initramfs_path else None,
                                self.spec.panic, titles, default)

        def run() -> None:
            self.got.changed = True
            device.write(self.spec.extlinux, text.encode(), sync=True)
            self.got.default = default
            self.log(f"{self.spec.extlinux}: default {default}, fallback {extlinux.PREVIOUS}")
        title = titles[0] if default == extlinux.LABEL else titles[1]
        return Step(f"write {self.spec.extlinux}: {default} ({title}) boots, {extlinux.PREVIOUS} is the fallback",
                    [(self.host, argv) for argv in device.write_commands(self.spec.extlinux, sync=True)], run,
                    writes=text)

    def check_trial_state(self) -> None:
        """With a boot-once trial, its folder must be where U-Boot reads and writes (a FAT partition's root)."""
        if self.spec.trial_boot != "uboot-script":
            return
        problem = trial.state_problem(self.device, self.spec)
        if problem:
            raise InstallError(f"{self.host}: install.trial_state: {problem} (trial_boot: uboot-script); refused, "
                               "nothing was changed", exit_code=EXIT_BAD_INPUT)

    def trial_steps(self, labels: Callable[[], tuple[str, str]] = lambda: (extlinux.LABEL, extlinux.PREVIOUS),
                    shown: tuple[str, str] = (extlinux.LABEL, extlinux.PREVIOUS)) -> list[Step]:
        """Arm the boot-once trial, last before the reboot (when the host has one and a reboot follows):
        ``labels()`` (the tried one, the fallback) are known when the step runs (u-boot-update names them
        on an apt host)."""
        if self.spec.trial_boot != "uboot-script" or not self.opts.reboot:
            return []
        device = self.device
        trial_file, tried, fell = trial.paths(self.spec)

        def run() -> None:
            self.got.changed = self.got.trial_armed = True
            trial.arm(device, self.spec, *labels())
        return [Step(f"arm the boot-once trial: {trial_file} names {shown[0]}, {tried} and {fell} removed",
                     [(self.host, argv) for argv in trial.arm_commands(self.spec)], run, writes=trial.text(*shown))]

    def trial_clear_steps(self) -> list[Step]:
        """End a trial an earlier install left (a rollback goes to a kernel that booted before: no trial)."""
        if self.spec.trial_boot != "uboot-script":
            return []
        device = self.device

        def run() -> None:
            self.got.changed = True
            trial.clear(device, self.spec)
            self.got.trial_armed = False
        return [Step(f"end any boot-once trial in {self.spec.trial_state}",
                     [(self.host, argv) for argv in trial.clear_commands(self.spec)], run)]

    def record_step(self, stage: str, fields: Callable[[], dict[str, Any]]) -> Step:
        """Write the host's record at ``stage``; ``fields`` are computed when the step runs."""
        device = self.device

        def run() -> None:
            record = {**device.record(), **fields(), "stage": stage}
            device.save_record(record)
        return Step(f"record the stage on the host: {stage}", [], run)

    def kept_sums(self, pre: Preflight) -> dict[str, str]:
        """sha256 of the kept copies, for a rollback to check they are still what was kept."""
        device = self.device
        return device.sums([dst for _, _, dst in pre.kept])

    def commands_step(self, text: str, cmds: list[list[str]], timeout: float = 900) -> Step:
        device = self.device

        def run() -> None:
            for argv in cmds:
                stopping.check()
                self.got.changed = True
                device.remote.run(argv, timeout=timeout)
        return Step(text, [(self.host, argv) for argv in cmds], run)

    # --- reboot and heartbeat -----------------------------------------------------------------------

    def heartbeat(self, expected: str, other: str | None, action: str) -> None:
        """Reboot, wait, and judge by the running release; the record says how it went."""
        device = self.device
        reboot_argv = shlex.join(self.spec.root(*self.spec.commands.reboot))
        self.got.rebooting = True
        beat = reboot(device.remote, self.spec, self.opts.ssh, self.log, lambda r: Device(r, self.spec).release(),
                      self.phase)
        self.got.rebooting = False  # what became of the reboot is known now (beat)
        self.result.heartbeat = beat.as_dict()
        if beat.problem == "reboot-failed":
            raise InstallError(f"the reboot command failed on {self.host} ({reboot_argv}: {beat.detail}); "
                               f"{expected} is installed and waits for a reboot")
        if beat.problem == "did-not-go-down":
            raise InstallError(f"{self.host} still answered {self.spec.down_timeout}s after the reboot command "
                               f"({reboot_argv}): it did not reboot; {expected} is installed and waits for a reboot")
        self.got.rebooted = True
        if beat.problem == "never-back":
            self.got.never_back = True
            raise InstallError(f"{self.host} did not come back within {self.spec.up_timeout}s after going down")
        assert beat.back is not None
        device.reconnected(beat.back)
        if beat.problem == "no-release":
            raise InstallError(f"{self.host} came back, but its running kernel cannot be told: {beat.detail}")
        self.got.back_on = beat.release
        ok = beat.release == expected
        self.last(action, beat, "booted" if ok else ("fell-back" if beat.release == other else "failed"))
        if beat.release == other and other != expected:
            raise InstallError(f"{self.host} came back on {other}, not {expected}: the host fell back to {other} "
                               "(the new kernel did not come up)")
        if not ok:
            raise InstallError(f"{self.host} came back on {beat.release}, neither {expected} nor {other}")
        self.result.state = "succeeded"
        self.result.message = (f"{self.host} runs {expected} (down after {beat.down_after:.0f}s, back after "
                               f"{beat.up_after:.0f}s)")

    def last(self, action: str, beat: Beat, stage: str) -> None:
        device = self.device
        record = device.record()
        record["stage"] = stage
        record["pending_reboot"] = beat.release != (record.get("installed") or {}).get("release")
        record["last"] = {"action": action, "result": "succeeded" if stage == "booted" else "failed", "at": now(),
                          "running": beat.release, "backup": self.result.backup, "down_after": beat.down_after,
                          "up_after": beat.up_after}
        device.save_record(record)

    # --- running ----------------------------------------------------------------------------------

    def execute(self, steps: list[Step]) -> None:
        """Run the steps in order (or, with --dry-run, list them)."""
        if self.opts.dry_run:
            self.result.steps = [_described(s) for s in [self.lock_shown(), *steps]]
            self.result.state, self.result.message = "dry-run", "dry run: nothing was changed" + (
                f"; not checked: {len(self.result.not_checked)} (below)" if self.result.not_checked else "")
            return
        for step in steps:
            self.current = step.text
            self.phase(step.text)
            start = time.monotonic()
            step.action()
            self.result.steps.append({**_described(step), "seconds": round(time.monotonic() - start, 2)})

    def failed(self, exc: BaseException) -> None:
        """The result of a refusal or a failure, with the way back that is left."""
        res = self.result
        res.state = "failed" if self.got.changed else "refused"
        res.message = str(exc)
        self.observe()
        res.recovery += way_back(self.host, self.spec, self.got, res.old_release, res.new_release, res.backup)
        if self.got.changed and self.got.back_on is None and not self.got.never_back:
            self._mark_failed(exc)

    def _unlock(self, device: Device) -> None:
        """Let go of the host's lock, over a new connection when the one we have went away (a dropped
        connection can look alive until it is used)."""
        patience = 0.0 if self.got.rebooting else RECONNECT_FOR  # a host that reboots is not waited for here
        give_up = time.monotonic() + patience
        while True:
            try:
                if not device.remote.alive():
                    device.reconnected(connect(self.opts.ssh, self.spec.ssh), keep_tmp=True)
                device.unlock()
                self.locked = False
                return
            except KaError as exc:
                if not (isinstance(exc, Unreachable) or dropped(exc)) or time.monotonic() >= give_up:
                    raise
                device.remote.close()  # it may look alive until used: connect anew
                time.sleep(1)

    def observe(self) -> None:
        """Read back what the next boot boots (best effort: the host may be gone), so that the way back says
        what is on the host, not what this run believes it wrote."""
        device = self._device
        if device is None or not self.got.changed or self.got.rebooting:
            return
        try:
            config = extlinux.parse(device.read(self.spec.extlinux, 1 << 20).decode("utf-8", "replace"))
        except Exception:  # the way back is said without it
            return
        self.got.default = config.default
        entry = config.entry(config.default) if config.default else None
        menu = (entry.get("menu") or "") if entry else ""
        self.got.default_title = menu[len("label "):].strip() if menu.lower().startswith("label ") else None
        with contextlib.suppress(Exception):
            if self.got.modules_aside and not device.exists(self.got.modules_aside):
                self.got.modules_aside = None  # the detached transaction put them back
            if self.got.transaction and device.exists(posixpath.join(self.got.transaction, "rc")):
                self.got.transaction = None

    def _mark_failed(self, exc: BaseException) -> None:
        """Say in the host's record that this run failed (best effort: the host may be gone)."""
        device = self._device
        if device is None:
            return
        try:
            record = device.record()
            record["last"] = {"action": self.result.action, "result": "failed", "at": now(),
                              "message": str(exc)[:500], "backup": self.result.backup}
            device.save_record(record)
        except Exception:
            self.log("could not write the failure into the host's record")

    def finish(self) -> None:
        """Release the lock (when the host answers), drop the private folder, write the local record."""
        self.result.finished = now()
        device = self._device
        if device is not None and self.locked:
            try:
                self._unlock(device)
            except Exception as exc:
                self.result.recovery.append(f"the install lock {device.lock_path} stays on {self.host} ({exc}); "
                                            f"remove it once the host is back: "
                                            f"{shlex.join(self.spec.root('rm', '-rf', device.lock_path))}")
        if device is not None and self.got.transaction is None:  # a detached transaction still uses it
            device.cleanup()
        self.close()
        if not self.opts.dry_run:
            path = self.opts.out_dir / self.host / "install.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.result.as_dict(), indent=2) + "\n")


def _described(step: Step) -> dict[str, Any]:
    described = {"text": step.text, "commands": [f"{host}$ {shlex.join(argv)}" for host, argv in step.commands]}
    if step.writes is not None:
        described["writes"] = step.writes
    return described


def _local_lock(installer: Installer) -> IO[str] | None:
    """One install of a host at a time from this output folder (the host's own lock covers other machines)."""
    if installer.opts.dry_run:
        return None
    path = installer.opts.out_dir / installer.host / "install.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - held until the install ends
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise InstallError(f"{installer.host}: another install holds {path} ({holder}); refused, nothing was "
                           "changed") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{installer.opts.who} since {now()}\n")
    fh.flush()
    return fh


class _Unreached:
    """The host of a dry run that could not reach it: named in the plan, never used (a dry run runs no step)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def close(self) -> None:
        pass

    def alive(self) -> bool:
        return False

    def __getattr__(self, attr: str) -> Any:
        raise Unreachable(f"{self.name}: not reached (a dry run planned without it)")


def run_installer(installer: Installer, work: Callable[[], InstallResult]) -> InstallResult:
    """Run an install or rollback (``work``) under the local lock: every failure becomes an
    :class:`InstallError` with the way back."""
    held = None
    try:
        held = _local_lock(installer)
        return work()
    except KeyboardInterrupt:
        stopped = InstallError(f"{installer.host}: interrupted ({stopping.name()}) during: {installer.current}")
        installer.failed(stopped)
        raise InstallError(str(stopped), installer.result, EXIT_INTERRUPTED) from None
    except Exception as exc:
        installer.failed(exc)
        if isinstance(exc, KaError):
            raise InstallError(str(exc), installer.result, exc.exit_code) from None
        # a bug, not a fault of the host: where it happened goes to the operator's log (stderr, the bot's journal)
        logging.getLogger(__name__).warning("%s: unexpected failure", installer.host, exc_info=True)
        raise InstallError(f"{installer.host}: {type(exc).__name__}: {exc}", installer.result,
                           EXIT_ENVIRONMENT) from None
    finally:
        installer.finish()
        if held is not None:
            held.close()
