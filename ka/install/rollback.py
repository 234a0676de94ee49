"""``ka-install HOST --rollback [RELEASE]``: boot the previous kernel again.

Without a release, the kept ``*.ka-prev`` files (checked against the sums the install recorded
when it kept them) are copied back over the default entry's, while extlinux.conf boots the kept
entry; then the default entry is the kept kernel again.  With a release, that backup is verified
on the backup host, downloaded and verified again, and put in place of the default entry's files
the same way, after the running kernel was kept (when the default entry holds it).  Both end as
an install does: extlinux.conf, the record, reboot, heartbeat.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from ka.errors import EXIT_BAD_INPUT
from ka.install import backup as backups
from ka.install import extlinux
from ka.install.device import now
from ka.install.installer import Installer, InstallError, InstallResult, Preflight, Step

RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,99}")


class Rollback(Installer):
    """Back to the kept kernel on the host."""

    def run(self) -> InstallResult:
        self.phase("preflight")
        self.connect()
        self.lock()
        pre = self.preflight()
        previous = (pre.record.get("previous") or {}).get("release")
        if not previous:
            raise InstallError(f"{self.host}: its install record names no kept kernel; roll back from a backup "
                               f"instead: ka-install {self.host} --rollback RELEASE", exit_code=EXIT_BAD_INPUT)
        pairs = self._pairs(pre, previous)
        self.result.new_release = previous
        holds = (pre.record.get("installed") or {}).get("release")
        titles = (f"{self.spec.pkgbase} {previous} (kernel-agent, rolled back)", f"previous: {previous}")
        self.execute([*self.trial_clear_steps(), self.extlinux_step(pre, titles, extlinux.PREVIOUS),
                      self.copy_back_step(pairs),
                      self.extlinux_step(pre, titles, extlinux.LABEL),
                      self.record_step("installed", lambda: {
                          "installed": {**(pre.record.get("previous") or {}), "at": now(), "by": self.opts.who},
                          "pending_reboot": True,
                          "last": {"action": "rollback", "at": now(), "result": "rolled back, reboot pending"}})])
        if not self.opts.dry_run:
            self.phase("reboot")
            self.heartbeat(previous, holds if holds != previous else None, "rollback")
        return self.result

    def _pairs(self, pre: Preflight, previous: str) -> list[tuple[str, str, str]]:
        """(role, default entry's file, kept file); the kept files must be what the install kept."""
        try:
            pairs = extlinux.pairs(pre.config, self.spec.boot)
        except extlinux.ExtlinuxError as exc:
            raise InstallError(f"{self.host}:{self.spec.extlinux}: {exc}", exit_code=EXIT_BAD_INPUT) from None
        kept = pre.record.get("kept") or {}
        device = self.device
        assert device is not None
        now_sums = device.sums([prev for _, _, prev in pairs])
        if not kept or any(now_sums.get(path) != digest for path, digest in kept.items()) or set(now_sums) - set(kept):
            raise InstallError(f"{self.host}: the kept files (*{extlinux.PREV_SUFFIX}) are not the ones the install "
                               f"kept (or it did not record them); roll back from the backup instead: ka-install "
                               f"{self.host} --rollback {previous}")
        return pairs

    def copy_back_step(self, pairs: list[tuple[str, str, str]]) -> Step:
        """The kept files copied over the default entry's (which does not boot meanwhile), then synced."""
        cmds: list[list[str]] = []
        for role, cur, prev in pairs:
            staged = f"{cur}.ka-new"
            cmds += [self.spec.root("rm", "-rf", "--", staged), self.spec.root("cp", "-a", "--", prev, staged)]
            if role == "dtbs":  # a folder is not renamed over another one
                cmds.append(self.spec.root("rm", "-rf", "--", cur))
            cmds.append(self.spec.root("mv", "-T", "--", staged, cur))
        cmds.append(self.spec.root("sync"))
        return self.commands_step(f"copy the kept *{extlinux.PREV_SUFFIX} files over the default entry's", cmds)


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
        self.lock()
        pre = self.preflight()
        backup = self.infra.backup
        remote = self.backup_host()
        assert backup is not None
        stage = self.work / "restore" / self.release
        self.phase("fetch the backup")
        record = backups.fetch(remote, backup, self.host, self.release, stage, self.log)
        self.result.backup = f"{backup.ssh}:{backups.folder(backup, self.host, self.release)}"
        self.result.new_release = self.release
        moves = self._moves(stage, record.get("files") or {})
        keeping = self._default_runs(pre)  # else the host runs the kept entry: it stays as it is
        self.check_room(pre, sum(p.stat().st_size for p in (stage / "boot").rglob("*") if p.is_file()), keeping)
        titles = (f"{self.spec.pkgbase} {self.release} (kernel-agent, restored)", f"previous: {pre.running}")
        steps = [*self.trial_clear_steps(), *([self.keep_step(pre, pre.running)] if keeping else [])]
        steps += [self.extlinux_step(pre, titles, extlinux.PREVIOUS),
                  *([self.record_step("installing", lambda: {"kept": self.kept_sums(pre), "previous": {
                      "release": pre.running, "version": pre.installed}})] if keeping else []),
                  self.restore_step(stage, moves), self.extlinux_step(pre, titles, extlinux.LABEL),
                  self.record_step("installed", lambda: {
                      "installed": {"release": self.release, "version": record.get("replaced_version"), "at": now(),
                                    "from": self.result.backup},
                      "pending_reboot": True,
                      "last": {"action": "rollback", "at": now(), "result": "restored, reboot pending"}})]
        self.execute(steps)
        if not self.opts.dry_run:
            self.phase("reboot")
            self.heartbeat(self.release, pre.running if pre.running != self.release else None, "rollback")
        return self.result

    def _default_runs(self, pre: Preflight) -> bool:
        holds = pre.holds()
        return holds is None or holds == pre.running

    def _moves(self, stage: Path, files: dict[str, Any]) -> list[tuple[str, str, str]]:
        """(role, file in the backup, where it goes): only plain paths inside the backup's boot/ folder."""
        targets = {"kernel": self.spec.image_path, "initrd": self.spec.initramfs_path, "dtbs": self.spec.dtbs_path}
        moves = []
        for role, rel in files.items():
            target = targets.get(role)
            if target is None:
                continue
            if (not isinstance(rel, str) or rel.startswith("/") or ".." in rel.split("/")
                    or not (stage / "boot" / rel).exists()):
                raise InstallError(f"{self.result.backup}: backup.json names {rel!r} as the {role}, which is not a "
                                   "file of the backup; refused, nothing was changed")
            moves.append((role, rel, target))
        if "kernel" not in {role for role, _, _ in moves}:
            raise InstallError(f"{self.result.backup}: backup.json does not say which file is the kernel")
        return moves

    def restore_step(self, stage: Path, moves: list[tuple[str, str, str]]) -> Step:
        """The backed-up kernel, initrd and dtbs in place of the default entry's (owned by root, as a
        package installs them); the backed-up modules when the release has none."""
        device = self.device
        assert device is not None
        modules = posixpath.join(self.spec.modules, self.release)
        tar = stage / f"modules-{self.release}.tar"
        cmds: list[list[str]] = []
        for role, rel, target in moves:
            staged = f"{target}.ka-new"
            cmds += [self.spec.root("rm", "-rf", "--", staged),
                     self.spec.root("cp", "-r", "--preserve=mode,timestamps", "--", f"<tmp>/boot/{rel}", staged)]
            if role == "dtbs":
                cmds.append(self.spec.root("rm", "-rf", "--", target))
            cmds.append(self.spec.root("mv", "-T", "--", staged, target))
        cmds.append(self.spec.root("sync"))

        def run() -> None:
            tmp = device.tmp()
            device.remote.put_tree(stage / "boot", posixpath.join(tmp, "boot"))
            self.got.changed = True
            for argv in cmds:
                device.remote.run([a.replace("<tmp>", tmp, 1) if a.startswith("<tmp>/") else a for a in argv],
                                  timeout=900)
            if tar.is_file() and not device.exists(modules):
                device.remote.sftp.put(str(tar), posixpath.join(tmp, tar.name))
                device.root(["tar", "-xf", posixpath.join(tmp, tar.name), "--no-same-owner", "-C",
                             self.spec.modules], timeout=900)
                self.log(f"{modules}: restored from the backup")
        shown = [*cmds, *([self.spec.root("tar", "-xf", f"<tmp>/{tar.name}", "--no-same-owner", "-C",
                                          self.spec.modules)] if tar.is_file() else [])]
        return Step(f"put {self.release} from the backup in place", [(self.host, argv) for argv in shown], run)
