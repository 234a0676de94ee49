"""``ka-install HOST --rollback RELEASE``: a release from the backup host, on a pacman host.

The backup is verified on the backup host, downloaded and verified again, and put in place of
the default entry's files, after the running kernel was kept (when the default entry holds it);
then, as an install ends: extlinux.conf, the record, reboot, heartbeat.  (``--rollback`` without a
release is the format's own way back: ``PacmanInstall.roll_back``, ``AptInstall.roll_back``.)
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


class Restore:
    """Back to a release from the backup host (a pacman host: an apt host's kernels keep their packages)."""

    def __init__(self, session: Installer, release: str) -> None:
        if not RELEASE.fullmatch(release):
            raise InstallError(f"--rollback {release!r}: not a kernel release", exit_code=EXIT_BAD_INPUT)
        self.s, self.release = session, release
        self.spec, self.host = session.spec, session.host

    def run(self) -> InstallResult:
        self.s.phase("preflight")
        self.s.connect()
        self.s.lock()
        pre = self.s.preflight()
        backup = self.s.infra.backup
        remote = self.s.backup_host()
        assert backup is not None
        stage = self.s.work / "restore" / self.release
        self.s.phase("fetch the backup")
        record = backups.fetch(remote, backup, self.host, self.release, stage, self.s.log)
        self.s.result.backup = f"{backup.ssh}:{backups.folder(backup, self.host, self.release)}"
        self.s.result.new_release = self.release
        moves = self._moves(stage, record.get("files") or {})
        keeping = self._default_runs(pre)  # else the host runs the kept entry: it stays as it is
        self.s.check_room(pre, sum(p.stat().st_size for p in (stage / "boot").rglob("*") if p.is_file()), keeping)
        titles = (f"{self.spec.pkgbase} {self.release} (kernel-agent, restored)", f"previous: {pre.running}")
        steps = [*self.s.trial_clear_steps(), *([self.s.keep_step(pre, pre.running)] if keeping else [])]
        steps += [self.s.extlinux_step(pre, titles, extlinux.PREVIOUS),
                  *([self.s.record_step("installing", lambda: {"kept": self.s.kept_sums(pre), "previous": {
                      "release": pre.running, "version": pre.installed}})] if keeping else []),
                  self.restore_step(stage, moves), self.s.extlinux_step(pre, titles, extlinux.LABEL),
                  self.s.record_step("installed", lambda: {
                      "installed": {"release": self.release, "version": record.get("replaced_version"), "at": now(),
                                    "from": self.s.result.backup},
                      "pending_reboot": True,
                      "last": {"action": "rollback", "at": now(), "result": "restored, reboot pending"}})]
        self.s.execute(steps)
        if not self.s.opts.dry_run:
            self.s.phase("reboot")
            self.s.heartbeat(self.release, pre.running if pre.running != self.release else None, "rollback")
        return self.s.result

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
                raise InstallError(f"{self.s.result.backup}: backup.json names {rel!r} as the {role}, which is not a "
                                   "file of the backup; refused, nothing was changed")
            moves.append((role, rel, target))
        if "kernel" not in {role for role, _, _ in moves}:
            raise InstallError(f"{self.s.result.backup}: backup.json does not say which file is the kernel")
        return moves

    def restore_step(self, stage: Path, moves: list[tuple[str, str, str]]) -> Step:
        """The backed-up kernel, initrd and dtbs in place of the default entry's (owned by root, as a
        package installs them); the backed-up modules when the release has none."""
        device = self.s.device
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
            self.s.got.changed = True
            for argv in cmds:
                device.remote.run([a.replace("<tmp>", tmp, 1) if a.startswith("<tmp>/") else a for a in argv],
                                  timeout=900)
            if tar.is_file() and not device.exists(modules):
                device.remote.sftp.put(str(tar), posixpath.join(tmp, tar.name))
                device.root(["tar", "-xf", posixpath.join(tmp, tar.name), "--no-same-owner", "-C",
                             self.spec.modules], timeout=900)
                self.s.log(f"{modules}: restored from the backup")
        shown = [*cmds, *([self.spec.root("tar", "-xf", f"<tmp>/{tar.name}", "--no-same-owner", "-C",
                                          self.spec.modules)] if tar.is_file() else [])]
        return Step(f"put {self.release} from the backup in place", [(self.host, argv) for argv in shown], run)
