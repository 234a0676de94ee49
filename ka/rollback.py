"""``ka-install HOST --rollback [RELEASE]``: boot the previous kernel again.

Without a release, the kept ``*.ka-prev`` files on the host change places with the default
entry's (each file copied first and then renamed, so that both entries boot at every moment).
With a release, the backup of that release is verified on the backup host, downloaded,
verified again, and put in place of the default entry's files, after the running kernel was
kept as ``*.ka-prev``.  Both end as an install does: extlinux.conf, reboot, heartbeat.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

from ka import backup as backups
from ka import extlinux
from ka.device import now
from ka.errors import EXIT_BAD_INPUT
from ka.infra import Infra
from ka.installer import Installer, InstallError, InstallOptions, InstallResult, Log, Preflight, Step, run_installer
from ka.repo import RepoView

RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,99}")


class Rollback(Installer):
    """Back to the kept kernel on the host."""

    def run(self) -> InstallResult:
        self.phase("preflight")
        self.connect()
        pre = self.preflight()
        previous = (pre.record.get("previous") or {}).get("release")
        if not previous:
            raise InstallError(f"{self.host}: its install record names no previous kernel; roll back from a "
                               f"backup instead: ka-install {self.host} --rollback RELEASE", exit_code=EXIT_BAD_INPUT)
        try:
            pairs = extlinux.pairs(pre.config, self.spec.boot)
        except extlinux.ExtlinuxError as exc:
            raise InstallError(f"{self.host}:{self.spec.extlinux}: {exc}", exit_code=EXIT_BAD_INPUT) from None
        missing = [b for _, _, b in pairs if not self.device or not self.device.exists(b)]
        if missing:
            raise InstallError(f"{self.host}: the kept files {', '.join(missing)} are not there; roll back from a "
                               f"backup instead: ka-install {self.host} --rollback {previous}")
        self.result.new_release = previous
        titles = (f"{self.spec.pkgbase} {previous} (kernel-agent, rolled back)", f"previous: {pre.running}")
        self.execute([self.lock_step(), self.swap_step(pairs), self.extlinux_step(pre, titles),
                      self.swap_record_step(pre, previous)])
        if not self.opts.dry_run:
            self.phase("reboot")
            self.heartbeat(previous, pre.running, "rollback")
        return self.result

    def _check_booted(self, pre: Preflight) -> None:
        """A rollback is what a host that fell back, or waits for a reboot, needs: never refused for that."""

    def swap_step(self, pairs: list[tuple[str, str, str]]) -> Step:
        cmds: list[list[str]] = []
        for _, cur, prev in pairs:
            new, old = f"{cur}.ka-new", f"{cur}.ka-old"
            cmds += [self.spec.root("rm", "-rf", "--", new, old), self.spec.root("cp", "-a", "--", prev, new),
                     self.spec.root("mv", "-T", "--", cur, old), self.spec.root("mv", "-T", "--", new, cur),
                     self.spec.root("rm", "-rf", "--", prev), self.spec.root("mv", "-T", "--", old, prev)]
        return self._commands_step("swap the default entry's files with the kept *.ka-prev ones", cmds)

    def swap_record_step(self, pre: Preflight, previous: str) -> Step:
        device = self.device
        assert device is not None
        record = dict(pre.record)
        record["installed"], record["previous"] = ({**(pre.record.get("previous") or {}), "at": now()},
                                                   pre.record.get("installed"))
        record["pending_reboot"] = True
        record["last"] = {"action": "rollback", "result": "rolled back, reboot pending", "at": now()}
        return Step(f"write {posixpath.join(self.spec.state, 'install.json')}", [],
                    lambda: device.save_record(record))


class Restore(Installer):
    """Back to a release from the backup host."""

    def __init__(self, *args: Any, release: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if not RELEASE.fullmatch(release):
            raise InstallError(f"--rollback {release!r}: not a kernel release", exit_code=EXIT_BAD_INPUT)
        self.release = release

    def run(self) -> InstallResult:
        self.phase("preflight")
        self.connect()
        pre = self.preflight()
        backup = self.infra.backup
        remote = self.backup_host()
        assert backup is not None and self.device is not None
        stage = self.work / "restore" / self.release
        self.phase("fetch the backup")
        record = backups.fetch(remote, backup, self.host, self.release, stage, self.log)
        self.result.backup = f"{backup.ssh}:{backups.folder(backup, self.host, self.release)}"
        self.result.new_release = self.release
        files = record.get("files") or {}
        if "kernel" not in files:
            raise InstallError(f"{self.result.backup}: backup.json does not say which file is the kernel")
        titles = (f"{self.spec.pkgbase} {self.release} (kernel-agent, restored)", f"previous: {pre.running}")
        self.execute([self.lock_step(), self.keep_step(pre, pre.running), self.restore_step(stage, files, pre),
                      self.extlinux_step(pre, titles), self.restore_record_step(pre, record)])
        if not self.opts.dry_run:
            self.phase("reboot")
            self.heartbeat(self.release, pre.running, "rollback")
        return self.result

    def _check_booted(self, pre: Preflight) -> None:
        """Restoring is the way out of a host that fell back: never refused for that."""

    def restore_step(self, stage: Any, files: dict[str, str], pre: Preflight) -> Step:
        """The backed-up kernel, initrd and dtbs in place of the default entry's; its modules when missing."""
        device = self.device
        assert device is not None
        targets = {"kernel": self.spec.image_path, "initrd": self.spec.initramfs_path, "dtbs": self.spec.dtbs_path}
        moves = [(role, rel, str(targets[role])) for role, rel in files.items() if targets.get(role)]
        modules = posixpath.join(self.spec.modules, self.release)
        tar = stage / f"modules-{self.release}.tar"

        def run() -> None:
            tmp = device.tmp()
            device.remote.put_tree(stage / "boot", posixpath.join(tmp, "boot"))
            for role, rel, target in moves:
                self.changed = True
                staged = f"{target}.ka-new"
                device.root(["rm", "-rf", "--", staged])
                device.root(["cp", "-a", "--", posixpath.join(tmp, "boot", rel), staged])
                if role == "dtbs":  # a folder cannot be renamed over another one
                    device.root(["rm", "-rf", "--", target])
                device.root(["mv", "-T", "--", staged, target])
            if tar.is_file() and not device.exists(modules):
                device.remote.sftp.put(str(tar), posixpath.join(tmp, tar.name))
                device.root(["tar", "-xf", posixpath.join(tmp, tar.name), "-C", self.spec.modules], timeout=900)
                self.log(f"{modules}: restored from the backup")
        cmds = [self.spec.root("cp", "-a", "--", f"<tmp>/boot/{rel}", target) for _, rel, target in moves]
        if tar.is_file():
            cmds.append(self.spec.root("tar", "-xf", f"<tmp>/{tar.name}", "-C", self.spec.modules))
        return Step(f"put {self.release} from the backup in place", [(self.host, argv) for argv in cmds], run)

    def restore_record_step(self, pre: Preflight, backup_record: dict[str, Any]) -> Step:
        device = self.device
        assert device is not None
        record = dict(pre.record)
        record["previous"] = pre.record.get("installed") or {"release": pre.running, "version": pre.installed}
        record["installed"] = {"release": self.release, "version": backup_record.get("replaced_version"),
                               "at": now(), "from": self.result.backup}
        record["pending_reboot"] = True
        record["last"] = {"action": "rollback", "result": "restored, reboot pending", "at": now()}
        return Step(f"write {posixpath.join(self.spec.state, 'install.json')}", [],
                    lambda: device.save_record(record))


def rollback(view: RepoView, host: str, infra: Infra, opts: InstallOptions, release: str | None = None,
             log: Log = lambda line: None, phase: Callable[[str], None] = lambda name: None) -> InstallResult:
    """``ka-install HOST --rollback [RELEASE]``; :class:`InstallError` when refused or failed."""
    installer: Installer = (Rollback(view, host, infra, opts, log, phase, "rollback") if release is None
                            else Restore(view, host, infra, opts, log, phase, "rollback", release=release))
    return run_installer(installer, installer.run)
