"""ka-install: back up, keep a way back, install, reboot, and take only "ssh came back on the new
kernel" as success.

Order of an install, each step only after the one before it succeeded, so that an entry that
boots a known kernel is the default at every moment until the new kernel is complete:

1. preflight (changes nothing, after the host's lock is taken): the package (newest published,
   or a file), its signature, and that it was built from what the manifest says now; the host
   (pinned key, root without a password), its running kernel, that its default entry holds that
   kernel, extlinux.conf, room in the boot folder, who owns the image file; the backup host;
2. back up the running kernel to the backup host, verified there; a backup that cannot be made
   or verified ends the install before anything on the host changed;
3. keep the running kernel's files as ``*.ka-prev`` (synced), then write extlinux.conf with both
   entries and the kept one as the default while the new kernel's files go in place;
4. ``pacman -U`` (its log checked: a failed scriptlet or hook still exits 0), the running kernel's
   modules put back at once, the image check, the initramfs for the new release;
5. extlinux.conf with the new kernel as ``default`` and the kept one as ``fallback``;
6. reboot and heartbeat: success only when the host answers running the new release.

``--dry-run`` runs the preflight and prints every step with its exact commands.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Any

from ka.build.wanted import wanted
from ka.errors import EXIT_BAD_INPUT, KaError
from ka.install import trial
from ka.install.device import now
from ka.install.extlinux import LABEL, PREVIOUS
from ka.install.installer import (
    Installer,
    InstallError,
    InstallResult,
    Preflight,
    Step,
)
from ka.packages.facts import PackageFacts

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

    keeps = True  # the running kernel's files are kept as *.ka-prev (room is needed for the copies)

    def run(self) -> InstallResult:
        self.phase("package")
        facts = self.package()
        self.check_inputs(facts)
        self.phase("preflight")
        self.connect()
        self.lock()
        pre = self.preflight()
        self.check_booted(pre)
        self.check_host(pre, facts)
        self.check_trial_state()
        self.check_room(pre, facts.boot_bytes, keeping=self.keeps)
        self.backup_host()
        self.log(f"{self.host} runs {pre.running} ({self.spec.pkgbase} {pre.installed or 'not installed'}); "
                 f"installing {facts.name} {facts.version} ({facts.release})")
        self.execute(self.steps(pre, facts))
        if not self.opts.dry_run:
            self.after_install(pre, facts)
        return self.result

    def titles(self, pre: Preflight, facts: PackageFacts) -> tuple[str, str]:
        """The menu labels of kernel-agent's two entries."""
        return f"{self.spec.pkgbase} {facts.release} (kernel-agent)", f"previous: {pre.running}"

    def steps(self, pre: Preflight, facts: PackageFacts) -> list[Step]:
        titles = self.titles(pre, facts)
        installed = {"release": facts.release, "version": facts.version, "package": facts.path.name, "at": now(),
                     "by": self.opts.who}
        previous = {"release": pre.running, "version": pre.installed}
        backup_record: dict[str, Any] = {"host": self.host, "replaced_release": pre.running,
                                         "replaced_version": pre.installed, "installed_version": facts.version,
                                         "installed_release": facts.release, "at": now(), "by": self.opts.who,
                                         "paths": {"boot": self.spec.boot, "extlinux": self.spec.extlinux,
                                                   "modules": self.spec.modules}}
        return [self.backup_step(pre, backup_record),
                self.record_step("keeping", lambda: {"installed": installed, "previous": previous,
                                                     "pending_reboot": True, "backup": self.result.backup}),
                self.keep_step(pre, facts.release),
                self.extlinux_step(pre, titles, PREVIOUS),
                self.record_step("installing", lambda: {"kept": self.kept_sums(pre)}),
                self.upload_step(facts), self.pacman_step(pre, facts.release), self.image_step(pre, facts),
                *self.initramfs_steps(),
                self.extlinux_step(pre, titles, LABEL),
                self.record_step("installed", lambda: {"last": {"action": "install", "at": now(),
                                                                "result": "installed, reboot pending"}}),
                *self.trial_steps()]

    # --- checks before anything changes ------------------------------------------------------------

    def check_inputs(self, facts: PackageFacts) -> None:
        """The package must be what the manifest at this commit builds: the newest published one may come
        from a pull request's ``/ka build``, and an install takes only what the manifest says now."""
        want = wanted(self.view, self.host)
        got = facts.inputs
        differs = [what for what, key, value in (("the cumulative patch", "patch_b2sum", want.patch_b2sum),
                                                 ("the config", "config_b2sum", want.config_b2sum),
                                                 ("the version", "version", want.version))
                   if got.get(key) != value]
        if not differs:
            return
        why = ("it has no kernel-agent record (not built by ka-build)" if not got else
               f"{' and '.join(differs)} differ{'s' if len(differs) == 1 else ''}")
        where = self.view.rev[:12] if self.view.rev else "the work tree"
        if self.opts.package is not None:
            self.log(f"note: {facts.path.name} is not what fleet/{self.host}.yaml at {where} builds ({why}); "
                     "installing it as --package asked")
            return
        raise InstallError(f"{facts.path.name} is not what fleet/{self.host}.yaml at {where} builds ({why}): "
                           f"build that first (ka-build {self.host}), or give --package FILE to install it anyway; "
                           "refused, nothing was changed")

    def check_host(self, pre: Preflight, facts: PackageFacts) -> None:
        """What the host's package manager would refuse: another package owning the image."""
        self.check_owner()

    def check_owner(self) -> None:
        """pacman refuses to overwrite a file another package owns (a distribution kernel's /boot/Image)."""
        device = self.device
        assert device is not None
        res = device.remote.run([*self.spec.commands.pacman, "-Qqo", self.spec.image_path], timeout=60, check=False)
        owner = res.output.strip().splitlines()[0] if res.ok and res.output.strip() else None
        if owner and owner != self.spec.pkgbase:
            raise InstallError(f"{self.host}:{self.spec.image_path} belongs to the package {owner}: pacman would "
                               f"refuse {self.spec.pkgbase}'s image.  Remove {owner} first (keeping its files as a "
                               "way back by hand), or give the kernel an image of its own (package.image and "
                               "install.image); refused, nothing was changed", exit_code=EXIT_BAD_INPUT)

    # --- the steps of an install --------------------------------------------------------------------

    def upload_step(self, facts: PackageFacts) -> Step:
        device = self.device
        assert device is not None

        def run() -> None:
            tmp = device.tmp()
            for path in (facts.path, facts.path.with_name(facts.path.name + ".sig")):
                device.remote.sftp.put(str(path), posixpath.join(tmp, path.name))
            self.remote_package = posixpath.join(tmp, facts.path.name)
        return Step(f"upload {facts.path.name} and its signature to {self.host}:<tmp> (sftp)", [], run)

    def pacman_step(self, pre: Preflight, release: str) -> Step:
        device = self.device
        assert device is not None
        argv = self.spec.root(*self.spec.commands.pacman, "-U", "--noconfirm", "--noprogressbar", "<tmp>/<package>")
        aside = self.modules_copy(pre.running) if pre.modules and pre.running != release else None

        def run() -> None:
            before = self._log_size()
            self.got.modules_aside = aside
            try:
                done = device.remote.run([*argv[:-1], self.remote_package], timeout=1800, check=False,
                                         on_line=self.log)
            finally:
                self._modules_back(pre, aside)
            excerpt = device.remote.output(self.spec.root("tail", "-c", f"+{before + 1}", self.spec.pacman_log),
                                           limit=8 << 20).decode("utf-8", "replace")
            failures = scriptlet_failures(excerpt) or scriptlet_failures(done.output)
            if not done.ok:
                raise InstallError(f"pacman -U failed on {self.host} (exit {done.code}): "
                                   + " | ".join(done.output.strip().splitlines()[-3:]))
            if failures:
                raise InstallError(f"pacman -U exited 0 on {self.host}, but a scriptlet or hook failed "
                                   f"({self.spec.pacman_log}): " + " | ".join(failures))
        cmds = [(self.host, argv)]
        if aside and pre.modules:
            cmds.append((self.host, self.spec.root("mv", "-T", "--", aside, pre.modules)))
        cmds.append((self.host, self.spec.root("tail", "-c", "+<size before>", self.spec.pacman_log)))
        return Step(f"install the package (pacman -U), put the modules of {pre.running} back, check "
                    f"{self.spec.pacman_log}", cmds, run)

    def _modules_back(self, pre: Preflight, aside: str | None) -> None:
        """pacman removed the running release's modules (they were the old package's): put them back at once."""
        device = self.device
        if device is None or aside is None or pre.modules is None:
            return
        if device.exists(pre.modules):
            device.root(["rm", "-rf", "--", aside])
        else:
            device.root(["mv", "-T", "--", aside, pre.modules])
            self.log(f"{pre.modules}: back in place for the kept kernel")
        self.got.modules_aside = None

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
                                                "sha256sum", "--", "{}", "+"))], run)

    def initramfs_steps(self) -> list[Step]:
        """mkinitcpio for the new release; the image it writes must be new (written now, after the kernel)."""
        path = self.spec.initramfs_path
        if path is None:
            return []
        device = self.device
        assert device is not None
        argv = self.spec.root(*self.spec.commands.mkinitcpio, "-p", self.spec.pkgbase)

        def run() -> None:
            started = int(device.remote.run(["date", "+%s"], timeout=30).output.strip())
            device.remote.run(argv, timeout=900, on_line=self.log)
            times = device.root(["stat", "-c", "%Y", "--", self.spec.image_path, path], timeout=60,
                                check=False).output.split()
            if len(times) != 2 or int(times[1]) < max(started, int(times[0])):
                raise InstallError(f"{self.host}:{path} was not written by {' '.join(self.spec.commands.mkinitcpio)}"
                                   f" -p {self.spec.pkgbase} (missing, or older than the run): the new kernel would "
                                   "boot with a stale initramfs")
        return [Step(f"make the initramfs ({' '.join(self.spec.commands.mkinitcpio)} -p {self.spec.pkgbase})",
                     [(self.host, argv)], run)]

    def after_install(self, pre: Preflight, facts: PackageFacts) -> None:
        if not self.opts.reboot:
            self.result.state = "pending-reboot"
            self.result.message = (f"{facts.name} {facts.version} installed on {self.host}; a reboot is pending "
                                   f"(it still runs {pre.running})")
            return
        self.phase("reboot")
        try:
            self.heartbeat(facts.release, pre.running, "install")
        except InstallError as exc:
            if self.spec.trial_boot == "uboot-script" and self.got.back_on == pre.running:
                raise InstallError(self.fell_back(pre, facts, str(exc))) from None
            raise
        if self.spec.trial_boot == "uboot-script":
            self.confirm_trial(pre, facts)

    def confirm_trial(self, pre: Preflight, facts: PackageFacts) -> None:
        """The new kernel is up: end its trial, unless U-Boot says it booted the fallback (same release)."""
        device = self.device
        assert device is not None
        if trial.fell(device, self.spec):
            raise InstallError(self.fell_back(pre, facts, f"{self.host} came back on {facts.release}, but U-Boot "
                                                          f"booted {PREVIOUS}: the host fell back to the kept kernel"))
        try:
            trial.clear(device, self.spec)
        except KaError as exc:  # it runs the new kernel; only the trial's end is missing
            ends = " && ".join(shlex.join(argv) for argv in trial.clear_commands(self.spec))
            self.result.message += (f"; but its boot-once trial could not be ended ({exc}): run {ends} on the "
                                    f"host, or its next boot takes {PREVIOUS}")
            return
        self.got.trial_armed = False
        self.result.message += f"; the boot-once trial of {facts.release} is confirmed"

    def fell_back(self, pre: Preflight, facts: PackageFacts, why: str) -> str:
        """The trial took the host back to the kept kernel by itself: it boots that one until told otherwise."""
        device = self.device
        assert device is not None
        self.extlinux_step(pre, self.titles(pre, facts), PREVIOUS).action()
        trial.clear(device, self.spec)
        self.got.trial_armed = False
        record = device.record()
        device.save_record({**record, "stage": "fell-back", "pending_reboot": False,
                            "last": {**(record.get("last") or {}), "result": "failed"}})
        return (f"{why}; the boot-once trial brought it back by itself, and {PREVIOUS} ({pre.running}) is the "
                "default entry again")
