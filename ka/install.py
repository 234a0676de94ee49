"""ka-install: back up, keep a way back, install, reboot, and take only "ssh came back on the new
kernel" as success.  Rollback uses the same steps the other way.

Order of an install, each step only after the one before it succeeded:

1. preflight (changes nothing): the package (newest published, or a file), its signature, the
   host over ssh (pinned key), its running kernel and install record, the extlinux config, room
   in the boot folder, the host's install lock, the backup host;
2. lock the host (``<state>/install.lock``);
3. back up the running kernel to the backup host and verify it there; a backup that cannot be
   made or verified ends the install before anything on the host changed;
4. keep the running kernel's files as ``*.ka-prev`` and write extlinux.conf with the new kernel
   as ``default`` and the kept one as ``fallback``: from here on both entries boot;
5. ``pacman -U`` (its log checked: a failed scriptlet or hook still exits 0), the image check,
   the previous modules put back, the initramfs for the new release;
6. reboot and heartbeat: success only when the host answers running the new release.

``--dry-run`` runs the preflight and prints every step with its exact commands.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

from ka.device import now
from ka.infra import Infra
from ka.installer import (
    Installer,
    InstallError,
    InstallOptions,
    InstallResult,
    Log,
    PackageFacts,
    Preflight,
    Step,
    run_installer,
)
from ka.repo import RepoView

# --- the install itself ---------------------------------------------------------------------------

_FAILED = re.compile(r"(\[ALPM\] error: .*|error: command failed to execute correctly.*|.*scriptlet.*failed.*)",
                     re.IGNORECASE)


def scriptlet_failures(log_text: str) -> list[str]:
    """The lines of a pacman.log excerpt that say a scriptlet or hook failed (pacman exits 0 then)."""
    lines = log_text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if _FAILED.search(line):
            context = [ln for ln in lines[max(0, i - 3):i] if "ALPM-SCRIPTLET" in ln or "running '" in ln]
            found += [*context, line]
    return list(dict.fromkeys(found))[-20:]


class Install(Installer):
    """``ka-install HOST``."""

    def run(self) -> InstallResult:
        self.phase("package")
        facts = self.package()
        self.phase("preflight")
        self.connect()
        pre = self.preflight()
        self.check_room(pre, facts)
        self.backup_host()
        self.log(f"{self.host} runs {pre.running} ({self.spec.pkgbase} {pre.installed or 'not installed'}); "
                 f"installing {facts.version} ({facts.release})")
        record: dict[str, Any] = {"host": self.host, "replaced_release": pre.running,
                                  "replaced_version": pre.installed, "installed_version": facts.version,
                                  "installed_release": facts.release, "at": now(), "by": self.opts.who,
                                  "paths": {"boot": self.spec.boot, "extlinux": self.spec.extlinux,
                                            "modules": self.spec.modules}}
        titles = (f"{self.spec.pkgbase} {facts.release} (kernel-agent)", f"previous: {pre.running}")
        steps = [self.lock_step(), self.backup_step(pre, record), self.keep_step(pre, facts.release),
                 self.extlinux_step(pre, titles), self.upload_step(facts), self.pacman_step(),
                 self.image_step(pre, facts), *self.modules_steps(pre, facts.release), *self.initramfs_steps(),
                 self.record_step(pre, facts)]
        self.execute(steps)
        if not self.opts.dry_run:
            self.after_install(pre, facts)
        return self.result

    def upload_step(self, facts: PackageFacts) -> Step:
        device = self.device
        assert device is not None

        def run() -> None:
            tmp = device.tmp()
            for path in (facts.path, facts.path.with_name(facts.path.name + ".sig")):
                device.remote.sftp.put(str(path), posixpath.join(tmp, path.name))
            self.remote_package = posixpath.join(tmp, facts.path.name)
        return Step(f"upload {facts.path.name} and its signature to {self.host}:<tmp> (sftp)", [], run, changes=False)

    def pacman_step(self) -> Step:
        device = self.device
        assert device is not None
        argv = self.spec.root(*self.spec.commands.pacman, "-U", "--noconfirm", "--noprogressbar", "<tmp>/<package>")

        def run() -> None:
            before = self._log_size()
            self.changed = True
            done = device.remote.run([*argv[:-1], self.remote_package], timeout=1800, check=False, on_line=self.log)
            excerpt = device.remote.output(self.spec.root("tail", "-c", f"+{before + 1}", self.spec.pacman_log),
                                           limit=8 << 20).decode("utf-8", "replace") if before >= 0 else ""
            failures = scriptlet_failures(excerpt) or scriptlet_failures(done.output)
            if not done.ok:
                raise InstallError(f"pacman -U failed on {self.host} (exit {done.code}): "
                                   + " | ".join(done.output.strip().splitlines()[-3:]))
            if failures:
                raise InstallError(f"pacman -U exited 0 on {self.host}, but a scriptlet or hook failed "
                                   f"({self.spec.pacman_log}): " + " | ".join(failures))
        return Step(f"install the package (pacman -U), then check {self.spec.pacman_log}",
                    [(self.host, argv), (self.host, self.spec.root("tail", "-c", "+<size before>",
                                                                   self.spec.pacman_log))], run)

    def _log_size(self) -> int:
        device = self.device
        assert device is not None
        res = device.root(["stat", "-c", "%s", self.spec.pacman_log], timeout=60, check=False)
        return int(res.output.strip()) if res.ok and res.output.strip().isdigit() else 0

    def image_step(self, pre: Preflight, facts: PackageFacts) -> Step:
        """Exactly the configured image changed in the boot folder, and it is the package's."""
        device = self.device
        assert device is not None

        def run() -> None:
            after = device.boot_files()
            ignore = {self.spec.initramfs_path, *(dst for _, _, dst in pre.kept)}
            changed = sorted(p for p, f in after.items() if p not in ignore and
                             (p not in pre.boot or pre.boot[p].sha256 != f.sha256))
            image = after.get(self.spec.image_path)
            if image is None or image.sha256 != facts.image_sha256:
                raise InstallError(f"{self.host}:{self.spec.image_path} is not the package's boot/{self.spec.image} "
                                   "after the install: the bootloader would not load the new kernel")
            others = [p for p in changed if p != self.spec.image_path]
            if others:
                raise InstallError(f"the package changed {', '.join(others)} in {self.spec.boot} besides "
                                   f"{self.spec.image}, which the bootloader loads; check install.image and "
                                   "package.image")
            self.log(f"{self.spec.image_path}: the package's image (sha256 {facts.image_sha256[:16]}…); nothing "
                     f"else in {self.spec.boot} changed")
        return Step(f"check that only {self.spec.image_path} changed in {self.spec.boot}",
                    [(self.host, self.spec.root("find", self.spec.boot, "-maxdepth", "1", "-type", "f", "-exec",
                                                "sha256sum", "--", "{}", "+"))], run, changes=False)

    def modules_steps(self, pre: Preflight, release: str) -> list[Step]:
        """pacman removed the replaced release's modules: put the kept copy back (the way back needs them)."""
        if not pre.modules or pre.running == release:
            return []
        device = self.device
        assert device is not None
        copy = self._modules_copy(pre.running)

        def run() -> None:
            if device.exists(pre.modules or ""):
                device.root(["rm", "-rf", "--", copy])
            else:
                device.root(["mv", "-T", "--", copy, pre.modules or ""])
                self.log(f"{pre.modules}: kept for the previous kernel")
        return [Step(f"keep the modules of {pre.running} for the previous kernel",
                     [(self.host, self.spec.root("mv", "-T", "--", copy, pre.modules))], run)]

    def initramfs_steps(self) -> list[Step]:
        path = self.spec.initramfs_path
        if path is None:
            return []
        device = self.device
        assert device is not None
        argv = self.spec.root(*self.spec.commands.mkinitcpio, "-p", self.spec.pkgbase)

        def run() -> None:
            device.remote.run(argv, timeout=900, on_line=self.log)
            times = device.root(["stat", "-c", "%Y", "--", self.spec.image_path, path], timeout=60,
                                check=False).output.split()
            if len(times) != 2 or int(times[1]) < int(times[0]):
                raise InstallError(f"{self.host}:{path} is missing or older than {self.spec.image_path} after "
                                   f"{' '.join(self.spec.commands.mkinitcpio)}: the new kernel would boot with a "
                                   "stale initramfs")
        return [Step(f"make the initramfs ({' '.join(self.spec.commands.mkinitcpio)} -p {self.spec.pkgbase})",
                     [(self.host, argv)], run)]

    def record_step(self, pre: Preflight, facts: PackageFacts) -> Step:
        device = self.device
        assert device is not None
        record = {"installed": {"release": facts.release, "version": facts.version, "package": facts.path.name,
                                "at": now(), "by": self.opts.who},
                  "previous": {"release": pre.running, "version": pre.installed},
                  "pending_reboot": True,
                  "last": {"action": "install", "result": "installed, reboot pending", "at": now()}}

        def run() -> None:
            self.record = record
            device.save_record(record)
        return Step(f"write {posixpath.join(self.spec.state, 'install.json')}", [], run)

    def after_install(self, pre: Preflight, facts: PackageFacts) -> None:
        if not self.opts.reboot:
            self.result.state = "pending-reboot"
            self.result.message = (f"{facts.name} {facts.version} installed on {self.host}; a reboot is pending "
                                   f"(it still runs {pre.running})")
            return
        self.phase("reboot")
        self.heartbeat(facts.release, pre.running, "install")


def install(view: RepoView, host: str, infra: Infra, opts: InstallOptions, log: Log = lambda line: None,
            phase: Callable[[str], None] = lambda name: None) -> InstallResult:
    """``ka-install HOST``: see the module's docstring; :class:`InstallError` when refused or failed."""
    installer = Install(view, host, infra, opts, log, phase, "install")
    return run_installer(installer, installer.run)
