"""The machinery ka-install and its rollbacks share: connections, the preflight, the steps
(lock, backup, keep, extlinux), running them or printing them (``--dry-run``), the reboot with
its heartbeat, and what a failure leaves as the way back.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import posixpath
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ka import backup as backups
from ka import extlinux, published
from ka.device import Device, FileInfo, LockHeld, now
from ka.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_ENVIRONMENT, KaError
from ka.heartbeat import Beat, reboot
from ka.infra import Infra
from ka.installspec import InstallSpec
from ka.kernelpkg import PackageFacts, package_facts
from ka.manifest import load_manifest
from ka.repo import RepoView
from ka.ssh import Remote, SshSettings, Unreachable, connect

Log = Callable[[str], None]
MARGIN = 1.1  # room asked for in the boot folder, over the estimate


class InstallError(KaError):
    """The install was refused or failed; ``result`` says how far it got and the way back."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, result: InstallResult | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.result = result
        if exit_code is not None:
            self.exit_code = exit_code


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class InstallOptions:
    """Settings resolved once by the caller (the CLI, the bot)."""

    out_dir: Path
    ssh: SshSettings
    gnupghome: Path | None = None
    package: Path | None = None
    dry_run: bool = False
    reboot: bool = True
    who: str = field(default_factory=_who)


@dataclass(frozen=True)
class Step:
    """One step: what it does, the commands it runs (printed by --dry-run), and how."""

    text: str
    commands: list[tuple[str, list[str]]]
    action: Callable[[], None]
    changes: bool = True  # the host is changed from this step on


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
    kept: list[tuple[str, str, str]]  # (role, file, its *.ka-prev copy)
    modules: str | None  # the running release's modules folder, when it exists


class Installer:
    """One install or rollback of one host."""

    def __init__(self, view: RepoView, host: str, infra: Infra, opts: InstallOptions, log: Log,
                 phase: Callable[[str], None], action: str) -> None:
        manifest = load_manifest(view, host)
        assert manifest.install is not None
        self.host, self.infra, self.opts, self.log, self.phase = host, infra, opts, log, phase
        self.spec: InstallSpec = manifest.install
        self.result = InstallResult(host, action)
        self.device: Device | None = None
        self.backup_remote: Remote | None = None
        self.locked = False
        self.changed = False
        self.rebooted = self.never_back = self.fell_back = False
        self.remote_package = ""
        self.work = opts.out_dir / host / "install"

    def run(self) -> InstallResult:
        """Preflight, steps, reboot: the subclass's flow."""
        raise NotImplementedError

    # --- connections ---------------------------------------------------------------------------

    def connect(self) -> Device:
        """The host over ssh; refused (nothing changed) when it cannot be reached."""
        try:
            self.device = Device(connect(self.opts.ssh, self.spec.ssh), self.spec, self.log)
        except Unreachable as exc:
            raise InstallError(f"{self.host}: cannot be reached: {exc}; nothing was changed",
                               exit_code=EXIT_ENVIRONMENT) from None
        return self.device

    def backup_host(self) -> Remote:
        backup = self.infra.backup
        if backup is None:
            raise InstallError(f"{self.infra.path}: no backup host (backup: ssh, path): an install always backs up "
                               "first; refused", exit_code=EXIT_BAD_INPUT)
        if self.backup_remote is None:
            try:
                self.backup_remote = connect(self.opts.ssh, backup.ssh)
            except Unreachable as exc:
                raise InstallError(f"the backup host cannot be reached: {exc}; refused, nothing on {self.host} "
                                   "was changed", exit_code=EXIT_ENVIRONMENT) from None
        return self.backup_remote

    def close(self) -> None:
        for remote in (self.device.remote if self.device else None, self.backup_remote):
            if remote is not None:
                remote.close()

    # --- preflight ------------------------------------------------------------------------------

    def package(self) -> PackageFacts:
        """The package to install: ``--package FILE``, else the newest ka-build published."""
        repo = self.infra.repository
        if self.opts.package is not None:
            path = self.opts.package
        elif repo is None:
            raise InstallError(f"{self.infra.path}: no repository to take the newest package from; give --package "
                               "FILE", exit_code=EXIT_BAD_INPUT)
        else:
            entry = published.newest(self.opts.ssh, repo, self.spec.pkgbase)
            self.log(f"newest published: {entry.name} {entry.version} ({entry.filename})")
            path = published.fetch(self.opts.ssh, repo, entry, self.work / "packages")
        facts = package_facts(path, self.spec, repo.key if repo else None, self.opts.gnupghome)
        self.log(f"package {facts.path.name}: {facts.name} {facts.version}, kernel {facts.release}, "
                 f"signed by {facts.signer}")
        self.result.package, self.result.version, self.result.new_release = str(path), facts.version, facts.release
        return facts

    def preflight(self) -> Preflight:
        """The host as it is (read only)."""
        device = self.device or self.connect()
        running, installed, record = device.release(), device.installed(), device.record()
        self.result.old_release, self.result.installed_before = running, installed
        holder = device.locked()
        if holder:
            raise InstallError(f"{self.host}: another install holds {device.lock_path} ({holder}); refused, "
                               "nothing was changed.  If none runs (a crash), remove that folder on the host: "
                               f"{shlex.join(self.spec.root('rm', '-rf', device.lock_path))}")
        if not device.exists(self.spec.extlinux):
            raise InstallError(f"{self.host}:{self.spec.extlinux}: no extlinux config (install.extlinux); write one "
                               "that boots the current kernel first; refused", exit_code=EXIT_BAD_INPUT)
        text = device.read(self.spec.extlinux, 1 << 20).decode("utf-8", "replace")
        config = extlinux.parse(text)
        try:
            kept = extlinux.kept(config, self.spec.boot)
        except extlinux.ExtlinuxError as exc:
            raise InstallError(f"{self.host}:{self.spec.extlinux}: {exc}; refused", exit_code=EXIT_BAD_INPUT) from None
        missing = [src for _, src, _ in kept if not device.exists(src)]
        if missing:
            raise InstallError(f"{self.host}: the entry that boots now names {', '.join(missing)}, which "
                               "is not there; refused (fix extlinux.conf first)", exit_code=EXIT_BAD_INPUT)
        modules = posixpath.join(self.spec.modules, running)
        pre = Preflight(running, installed, record, text, config, device.boot_files(), kept,
                        modules if device.exists(modules) else None)
        self._check_booted(pre)
        return pre

    def _check_booted(self, pre: Preflight) -> None:
        """The default entry must hold the running kernel: it is what gets kept as the way back."""
        holds = (pre.record.get("installed") or {}).get("release")
        if holds and holds != pre.running:
            raise InstallError(f"{self.host} runs {pre.running}, but its default entry holds {holds} (installed "
                               f"{(pre.record.get('installed') or {}).get('at', '?')}, not running: a reboot is "
                               f"pending, or it fell back).  Reboot it, or run ka-install {self.host} --rollback "
                               "to make the running kernel the default again; refused, nothing was changed")

    def check_room(self, pre: Preflight, facts: PackageFacts) -> None:
        """Room in the boot folder for the new files and the kept copies."""
        device = self.device
        assert device is not None
        copies = device.size([src for _, src, _ in pre.kept]) - device.size([dst for _, _, dst in pre.kept])
        replaced = device.size([self.spec.image_path, self.spec.dtbs_path])
        initramfs = self.spec.initramfs_path
        old_initrd = [src for role, src, _ in pre.kept if role == "initrd"]
        fresh = device.size(old_initrd) if initramfs and not device.exists(initramfs) else 0
        needed = int((max(0, copies) + max(0, facts.boot_bytes - replaced) + fresh) * MARGIN)
        free = device.free(self.spec.boot)
        self.log(f"{self.spec.boot}: {free >> 20} MiB free, about {needed >> 20} MiB needed")
        if free < needed:
            raise InstallError(f"{self.host}:{self.spec.boot}: {free >> 20} MiB free, but the new kernel and the kept "
                               f"previous one need about {needed >> 20} MiB; refused, nothing was changed (remove "
                               "old kernels or *.ka-prev files by hand)")

    # --- steps ------------------------------------------------------------------------------------

    def lock_step(self) -> Step:
        device = self.device
        assert device is not None

        def take() -> None:
            try:
                device.lock(self.opts.who)
            except LockHeld as exc:
                raise InstallError(f"{exc}; refused, nothing was changed") from None
            self.locked = True
        return Step(f"lock {self.host}", [(self.host, self.spec.root("mkdir", "--", device.lock_path))], take,
                    changes=False)

    def backup_step(self, pre: Preflight, record: dict[str, Any]) -> Step:
        """Back up the running kernel (the default entry's files, its modules, the config) and verify it."""
        device = self.device
        backup = self.infra.backup
        assert device is not None and backup is not None
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
        return Step(f"back up {pre.running} to {backup.ssh}:{final}", commands, run, changes=False)

    def keep_step(self, pre: Preflight, new_release: str) -> Step:
        """Copy the running kernel's files to ``*.ka-prev`` names (and its modules, when the release changes)."""
        cmds: list[list[str]] = []
        for _, src, dst in pre.kept:
            cmds += [self.spec.root("rm", "-rf", "--", dst), self.spec.root("cp", "-a", "--", src, dst)]
        if pre.modules and pre.running != new_release:
            copy = self._modules_copy(pre.running)
            cmds += [self.spec.root("rm", "-rf", "--", copy), self.spec.root("cp", "-al", "--", pre.modules, copy)]
        return self._commands_step(f"keep {pre.running} as *{extlinux.PREV_SUFFIX}", cmds)

    def _modules_copy(self, release: str) -> str:
        return posixpath.join(self.spec.modules, f".ka-prev-{release}")

    def extlinux_step(self, pre: Preflight, titles: tuple[str, str]) -> Step:
        device = self.device
        assert device is not None
        text = extlinux.rewrite(pre.text, self.spec.image,
                                posixpath.basename(self.spec.initramfs_path) if self.spec.initramfs_path else None,
                                self.spec.panic, titles)

        def run() -> None:
            device.write(self.spec.extlinux, text.encode())
            self.changed = True
            self.log(f"{self.spec.extlinux}: default {extlinux.LABEL} ({titles[0]}), fallback "
                     f"{extlinux.PREVIOUS} ({titles[1]})")
        staged = posixpath.join("<tmp>", posixpath.basename(self.spec.extlinux) + ".new")
        return Step(f"write {self.spec.extlinux}: default {titles[0]}, fallback {titles[1]}",
                    [(self.host, self.spec.root("install", "-D", "-m", "644", "--", staged, self.spec.extlinux))], run)

    def _commands_step(self, text: str, cmds: list[list[str]], timeout: float = 900) -> Step:
        device = self.device
        assert device is not None

        def run() -> None:
            for argv in cmds:
                self.changed = True
                device.remote.run(argv, timeout=timeout)
        return Step(text, [(self.host, argv) for argv in cmds], run)

    # --- reboot, heartbeat, and what a failure means ---------------------------------------------

    def heartbeat(self, expected: str, previous: str, action: str) -> None:
        """Reboot, wait, and judge by the running release; the record says how it went."""
        device = self.device
        assert device is not None
        beat = reboot(device.remote, self.spec, self.opts.ssh, self.log, lambda r: Device(r, self.spec).release(),
                      self.phase)
        self.result.heartbeat = beat.as_dict()
        if beat.problem == "reboot-failed":
            raise InstallError(f"the reboot command failed on {self.host} "
                               f"({shlex.join(self.spec.root(*self.spec.commands.reboot))}: {beat.detail}); "
                               f"{expected} is installed and waits for a reboot")
        if beat.problem == "did-not-go-down":
            raise InstallError(f"{self.host} still answered {self.spec.down_timeout}s after the reboot command "
                               f"({shlex.join(self.spec.root(*self.spec.commands.reboot))}): it did not reboot; "
                               f"{expected} is installed and waits for a reboot")
        self.rebooted = True
        if beat.problem == "never-back":
            self.never_back = True
            raise InstallError(f"{self.host} did not come back within {self.spec.up_timeout}s after going down")
        device.remote = connect(self.opts.ssh, self.spec.ssh)
        ok = beat.release == expected
        self._last(action, "succeeded" if ok else "failed", beat)
        if beat.release == previous and previous != expected:
            self.fell_back = True
            raise InstallError(f"{self.host} came back on {previous}, not {expected}: the host fell back to "
                               f"{previous} (the new kernel did not come up)")
        if not ok:
            raise InstallError(f"{self.host} came back on {beat.release}, neither {expected} nor {previous}")
        self.result.state = "succeeded"
        self.result.message = (f"{self.host} runs {expected} (down after {beat.down_after:.0f}s, back after "
                               f"{beat.up_after:.0f}s)")

    def _last(self, action: str, result: str, beat: Beat) -> None:
        device = self.device
        assert device is not None
        record = device.record()
        record["pending_reboot"] = beat.release != (record.get("installed") or {}).get("release")
        record["last"] = {"action": action, "result": result, "at": now(), "running": beat.release,
                          "backup": self.result.backup, "down_after": beat.down_after, "up_after": beat.up_after}
        device.save_record(record)

    def failed(self, exc: BaseException) -> None:
        """The result of a refusal or a failure, with the way back that is left."""
        res = self.result
        res.state = "failed" if self.changed else "refused"
        res.message = str(exc)
        if not self.changed:
            res.recovery.append(f"nothing on {self.host} was changed")
            return
        backup = f"the backup of {res.old_release}: {res.backup}" if res.backup else "no backup was made"
        if self.never_back:
            res.recovery += self._console_steps(backup)
        elif self.fell_back:
            res.recovery += [f"{self.host} is up on {res.old_release}; the new kernel {res.new_release} stays the "
                             "default entry, so the next boot tries it again",
                             f"make {res.old_release} the default again: ka-install {self.host} --rollback",
                             f"then look at how {res.new_release} fails on the console; {backup}"]
        else:
            rebooted = " (it was rebooted)" if self.rebooted else "; nothing was rebooted"
            res.recovery += [f"{self.host} still runs {res.old_release}{rebooted}",
                             f"the kept kernel is the extlinux entry {extlinux.PREVIOUS} (the fallback; files "
                             f"*{extlinux.PREV_SUFFIX}); make it the default again: ka-install {self.host} --rollback",
                             backup]

    def _console_steps(self, backup: str) -> list[str]:
        prev = self.result.old_release
        return [f"{self.host} is not answering over ssh: go to its console (serial, or screen and keyboard)",
                f"in U-Boot's menu pick \"previous: {prev}\" (label {extlinux.PREVIOUS}, the fallback); or, at the "
                f"U-Boot prompt: setenv pxe_label_override {extlinux.PREVIOUS}; boot",
                f"once it is up: ka-install {self.host} --rollback (makes {prev} the default again)",
                f"if the boot folder is damaged, restore from {backup}: its boot/ into {self.spec.boot}, "
                f"extlinux.conf to {self.spec.extlinux}, modules-{prev}.tar into {self.spec.modules} (tar -xf), "
                f"checked with sha256sum -c SHA256SUMS; or, from a working host: ka-install {self.host} "
                f"--rollback {prev}"]

    # --- running ----------------------------------------------------------------------------------

    def execute(self, steps: list[Step]) -> None:
        """Run the steps in order (or, with --dry-run, print them)."""
        if self.opts.dry_run:
            self.result.steps = [_described(s) for s in steps]
            self.result.state, self.result.message = "dry-run", "dry run: nothing was changed"
            return
        for step in steps:
            self.phase(step.text)
            start = time.monotonic()
            step.action()
            self.result.steps.append({**_described(step), "seconds": round(time.monotonic() - start, 2)})

    def finish(self) -> None:
        """Release the lock (when the host answers), drop the private folder, write the local record."""
        self.result.finished = now()
        device = self.device
        if device is not None and self.locked:
            try:
                transport = device.remote.client.get_transport()
                if transport is None or not transport.is_active():
                    device.remote = connect(self.opts.ssh, self.spec.ssh)
                device.unlock()
                self.locked = False
            except KaError as exc:
                self.result.recovery.append(f"the install lock {device.lock_path} stays on {self.host} ({exc}); "
                                            f"remove it once the host is back: "
                                            f"{shlex.join(self.spec.root('rm', '-rf', device.lock_path))}")
        if device is not None:
            device.cleanup()
        self.close()
        if not self.opts.dry_run:
            path = self.opts.out_dir / self.host / "install.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.result.as_dict(), indent=2) + "\n")


def _described(step: Step) -> dict[str, Any]:
    return {"text": step.text, "commands": [f"{host}$ {shlex.join(argv)}" for host, argv in step.commands]}


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


def run_installer(installer: Installer, work: Callable[[], InstallResult]) -> InstallResult:
    """Run an install or rollback: every failure becomes an :class:`InstallError` with the way back."""
    held = None
    try:
        held = _local_lock(installer)
        return work()
    except InstallError as exc:
        installer.failed(exc)
        raise InstallError(str(exc), installer.result, exc.exit_code) from None
    except KaError as exc:
        installer.failed(exc)
        raise InstallError(str(exc), installer.result, exc.exit_code) from None
    except (OSError, EOFError) as exc:
        installer.failed(exc)
        raise InstallError(f"{installer.host}: {type(exc).__name__}: {exc}", installer.result,
                           EXIT_ENVIRONMENT) from None
    finally:
        installer.finish()
        if held is not None:
            held.close()

