"""ka-install on a pacman host: what :class:`PacmanInstall` does its own way, in the flow
(ka/install/flow.py) that backs up, keeps a way back, installs, reboots, and takes only "ssh came
back on the new kernel" as success.

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

from ka.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT
from ka.install import extlinux, trial
from ka.install.device import now
from ka.install.extlinux import LABEL, PREVIOUS
from ka.install.installer import (
    Installer,
    InstallError,
    InstallResult,
    Preflight,
    Step,
)
from ka.install.transaction import Transaction, check_detachable
from ka.packages.facts import PackageFacts

_NOT_REPLACED = re.compile(r"installed as \S+\.pacnew|cannot remove \S+|could not remove|could not "
                           r"(?:extract|rename)", re.IGNORECASE)
_BUILD = re.compile(r"Starting build: '([^']+)'")  # mkinitcpio, once per image it builds
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


class PacmanInstall:
    """What an install on a pacman host does its own way: the package goes in place of the running kernel's,
    whose files are kept as ``*.ka-prev`` (the way back); the flow (ka/install/flow.py) asks for the rest."""

    keeps = True  # the running kernel's files are kept as *.ka-prev (room is needed for the copies)

    def __init__(self, session: Installer) -> None:
        self.s = session
        self.spec, self.host = session.spec, session.host
        self.remote_package = ""  # where upload_step put the package on the host

    def check_room(self, pre: Preflight, facts: PackageFacts) -> None:
        """Room for the new kernel's files and the kept copies of the running one's."""
        self.s.check_room(pre, facts.boot_bytes, keeping=True)

    def titles(self, pre: Preflight, facts: PackageFacts) -> tuple[str, str]:
        """The menu labels of kernel-agent's two entries."""
        return f"{self.spec.pkgbase} {facts.release} (kernel-agent)", f"previous: {pre.running}"

    def steps(self, pre: Preflight, facts: PackageFacts) -> list[Step]:
        titles = self.titles(pre, facts)
        installed = {"release": facts.release, "version": facts.version, "package": facts.path.name, "at": now(),
                     "by": self.s.opts.who}
        previous = {"release": pre.running, "version": pre.installed}
        backup_record: dict[str, Any] = {"host": self.host, "replaced_release": pre.running,
                                         "replaced_version": pre.installed, "installed_version": facts.version,
                                         "installed_release": facts.release, "at": now(), "by": self.s.opts.who,
                                         "paths": {"boot": self.spec.boot, "extlinux": self.spec.extlinux,
                                                   "modules": self.spec.modules}}
        return [self.s.backup_step(pre, backup_record),
                self.s.record_step("keeping", lambda: {"installed": installed, "previous": previous,
                                                     "pending_reboot": True, "backup": self.s.result.backup}),
                self.s.keep_step(pre, facts.release),
                self.s.extlinux_step(pre, titles, PREVIOUS),
                self.s.record_step("installing", lambda: {"kept": self.s.kept_sums(pre)}),
                self.upload_step(facts), self.pacman_step(pre, facts), self.image_step(pre, facts),
                *self.initramfs_steps(facts.release),
                self.s.extlinux_step(pre, titles, LABEL),
                self.s.record_step("installed", lambda: {"last": {"action": "install", "at": now(),
                                                                "result": "installed, reboot pending"}}),
                *self.s.trial_steps()]

    def check_host(self, pre: Preflight, facts: PackageFacts) -> None:
        """What the host's package manager would refuse (another package owning the image, its database
        locked), and modules an interrupted install left set aside."""
        self.check_owner()
        self.check_idle()
        check_detachable(self.s)
        aside = self.s.modules_copy(pre.running)
        if pre.modules is None and self.s.device.exists(aside):
            raise InstallError(f"{self.host}: the modules of {pre.running} are not in {self.spec.modules} but set "
                               f"aside at {aside}: an earlier install did not end.  Run ka-install {self.host} "
                               "--rollback to put them back; refused, nothing was changed")

    def check_idle(self) -> None:
        """pacman's database lock: a transaction runs (one an interrupted install left goes on by itself), or a
        killed pacman left the lock; checked before anything changes, as pacman would refuse after."""
        lock = posixpath.join(self._dbpath(), "db.lck")
        if self.s.device.exists(lock):
            remove = shlex.join(self.spec.root("rm", "--", lock))
            raise InstallError(f"{self.host}:{lock} is there: pacman is running (an interrupted install's "
                               "transaction goes on by itself until it ends), or a pacman that was killed left it. "
                               f" Wait for pacman to end; if none runs (pgrep -x pacman), remove the stale lock: "
                               f"{remove}; refused, nothing was changed", exit_code=EXIT_ENVIRONMENT)

    def _dbpath(self) -> str:
        """pacman's DBPath, as its configuration says (``pacman-conf`` with the options pacman is run with)."""
        pacman = self.spec.commands.pacman
        conf = posixpath.join(posixpath.dirname(pacman[0]), "pacman-conf") if "/" in pacman[0] else "pacman-conf"
        res = self.s.device.remote.run([conf, *pacman[1:], "DBPath"], timeout=60, check=False)
        lines = res.output.strip().splitlines()
        return lines[0] if res.ok and lines and lines[0].startswith("/") else "/var/lib/pacman/"

    def check_owner(self) -> None:
        """pacman refuses to overwrite a file another package owns (a distribution kernel's /boot/Image)."""
        device = self.s.device
        res = device.remote.run([*self.spec.commands.pacman, "-Qqo", self.spec.image_path], timeout=60, check=False)
        owner = res.output.strip().splitlines()[0] if res.ok and res.output.strip() else None
        if owner and owner != self.spec.pkgbase:
            raise InstallError(f"{self.host}:{self.spec.image_path} belongs to the package {owner}: pacman would "
                               f"refuse {self.spec.pkgbase}'s image.  Remove {owner} first (keeping its files as a "
                               "way back by hand), or give the kernel an image of its own (package.image and "
                               "install.image); refused, nothing was changed", exit_code=EXIT_BAD_INPUT)

    def upload_step(self, facts: PackageFacts) -> Step:
        device = self.s.device

        def run() -> None:
            tmp = device.tmp()
            for path in (facts.path, facts.path.with_name(facts.path.name + ".sig")):
                device.remote.sftp.put(str(path), posixpath.join(tmp, path.name))
            self.remote_package = posixpath.join(tmp, facts.path.name)
        return Step(f"upload {facts.path.name} and its signature to {self.host}:<tmp> (sftp)", [], run)

    def pacman_step(self, pre: Preflight, facts: PackageFacts) -> Step:
        """``pacman -U``, detached from the ssh channel: an interrupt or a dropped connection never
        half-kills a transaction; the running release's modules go back when it ends (on the host)."""
        device = self.s.device
        release = facts.release
        aside = self.s.modules_copy(pre.running) if pre.modules and pre.running != release else None
        pacman = [*self.spec.commands.pacman, "-U", "--noconfirm", "--noprogressbar"]

        def run() -> None:
            before = self._log_size()
            self.s.got.modules_aside = aside
            code, output = Transaction(self.s, "pacman").run([*pacman, self.remote_package], aside or "",
                                                              pre.modules or "")
            if aside and not device.exists(aside):
                self.s.got.modules_aside = None
                self.s.log(f"{pre.modules}: back in place for the kept kernel")
            excerpt = device.remote.output(self.spec.root("tail", "-c", f"+{before + 1}", self.spec.pacman_log),
                                           limit=8 << 20).decode("utf-8", "replace")
            self._judge(code, output, excerpt)
        shown = self.spec.root(*Transaction.argv_shown(aside or "", pre.modules or "",
                                                       [*pacman, "<tmp>/<package>"]))
        cmds = [(self.host, shown),
                (self.host, self.spec.root("tail", "-c", "+<size before>", self.spec.pacman_log))]
        return Step(f"install the package (pacman -U, detached from the connection), put the modules of "
                    f"{pre.running} back, check pacman's output and {self.spec.pacman_log}", cmds, run)

    def _judge(self, code: int, output: str, excerpt: str) -> None:
        """pacman's exit, its output (.pacnew, files it could not remove) and its log (failed scriptlets)."""
        if code != 0:
            raise InstallError(f"pacman -U failed on {self.host} (exit {code}): "
                               + " | ".join(output.strip().splitlines()[-3:]))
        failures = scriptlet_failures(excerpt) or scriptlet_failures(output)
        if failures:
            raise InstallError(f"pacman -U exited 0 on {self.host}, but a scriptlet or hook failed "
                               f"({self.spec.pacman_log}): " + " | ".join(failures))
        kept = [ln.strip() for ln in output.splitlines() if _NOT_REPLACED.search(ln)]
        if kept:
            raise InstallError(f"pacman -U exited 0 on {self.host}, but did not put every file of the package in "
                               f"place: {' | '.join(kept[:5])}; the initramfs and the boot would use the old "
                               "files (a NoUpgrade line in pacman.conf, or a file it could not replace): merge "
                               "the .pacnew or fix the file, then ka-install again")

    def _log_size(self) -> int:
        device = self.s.device
        res = device.root(["stat", "-c", "%s", self.spec.pacman_log], timeout=60, check=False)
        return int(res.output.strip()) if res.ok and res.output.strip().isdigit() else 0

    def image_step(self, pre: Preflight, facts: PackageFacts) -> Step:
        """Exactly the configured image changed in the boot folder, and it is the package's."""
        device = self.s.device

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
            theirs = [p for p in others if posixpath.relpath(p, self.spec.boot) in facts.boot_files]
            if theirs:
                raise InstallError(f"the package changed {', '.join(theirs)} in {self.spec.boot} besides "
                                   f"{self.spec.image}, which the bootloader loads; check install.image and "
                                   "package.image")
            if others:
                raise InstallError(f"{', '.join(others)} changed in {self.spec.boot} while the package went in, "
                                   "but the package has no such file: something else on the host wrote there "
                                   "(a pacman hook, another program); look at it before installing again")
            self.s.log(f"{self.spec.image_path}: the package's image (sha256 {facts.image_sha256[:16]}…); nothing "
                     f"else in {self.spec.boot} changed")
        return Step(f"check that only {self.spec.image_path} changed in {self.spec.boot}",
                    [(self.host, self.spec.root("find", self.spec.boot, "-maxdepth", "1", "-type", "f", "-exec",
                                                "sha256sum", "--", "{}", "+"))], run)

    def initramfs_steps(self, release: str) -> list[Step]:
        """mkinitcpio for the new release: the image it writes must be new (written now, after the kernel) and
        built for ``release`` (mkinitcpio names the release of each build: an old preset builds the old one)."""
        path = self.spec.initramfs_path
        if path is None:
            return []
        device = self.s.device
        argv = self.spec.root(*self.spec.commands.mkinitcpio, "-p", self.spec.pkgbase)

        def run() -> None:
            started = int(device.remote.run(["date", "+%s"], timeout=30).output.strip())
            made = device.remote.run(argv, timeout=900, on_line=self.s.log)
            times = device.root(["stat", "-c", "%Y", "--", self.spec.image_path, path], timeout=60,
                                check=False).output.split()
            if len(times) != 2 or int(times[1]) < max(started, int(times[0])):
                raise InstallError(f"{self.host}:{path} was not written by {' '.join(self.spec.commands.mkinitcpio)}"
                                   f" -p {self.spec.pkgbase} (missing, or older than the run): the new kernel would "
                                   "boot with a stale initramfs")
            built = set(_BUILD.findall(made.output))
            if not built:
                self.s.log(f"note: {' '.join(self.spec.commands.mkinitcpio)} did not name the release it built for "
                           "(no 'Starting build' line): only the image's time was checked")
            if built - {release}:
                raise InstallError(f"{self.host}: {' '.join(self.spec.commands.mkinitcpio)} -p {self.spec.pkgbase} "
                                   f"built the initramfs for {', '.join(sorted(built))}, not {release}: the preset "
                                   f"in place is not the package's (a NoUpgrade line, or a hook that rewrote it); "
                                   f"{release} would boot with another release's modules")
        return [Step(f"make the initramfs for {release} ({' '.join(self.spec.commands.mkinitcpio)} -p "
                     f"{self.spec.pkgbase}) and check the release it was built for", [(self.host, argv)], run)]

    def fell_back(self, pre: Preflight, facts: PackageFacts, why: str) -> str:
        """The trial took the host back to the kept kernel by itself: it boots that one until told otherwise."""
        device = self.s.device
        self.s.extlinux_step(pre, self.titles(pre, facts), PREVIOUS).action()
        trial.clear(device, self.spec)
        self.s.got.trial_armed = False
        record = device.record()
        device.save_record({**record, "stage": "fell-back", "pending_reboot": False,
                            "last": {**(record.get("last") or {}), "result": "failed"}})
        return (f"{why}; the boot-once trial brought it back by itself, and {PREVIOUS} ({pre.running}) is the "
                "default entry again")

    # --- the way back ------------------------------------------------------------------------------

    def roll_back(self) -> InstallResult:
        """Back to the kept kernel: the *.ka-prev files the install kept, copied over the default entry's."""
        self.s.phase("preflight")
        self.s.connect()
        self.s.lock()
        pre = self.s.preflight(default_files=False)  # the default entry's files are what it replaces
        self.check_idle()
        previous = (pre.record.get("previous") or {}).get("release")
        if not previous:
            raise InstallError(f"{self.host}: its install record names no kept kernel; roll back from a backup "
                               f"instead: ka-install {self.host} --rollback RELEASE", exit_code=EXIT_BAD_INPUT)
        pairs = self._pairs(pre, previous)
        self.s.result.new_release = previous
        holds = (pre.record.get("installed") or {}).get("release")
        titles = (f"{self.spec.pkgbase} {previous} (kernel-agent, rolled back)", f"previous: {previous}")
        modules = self.modules_back_step(previous)
        self.s.execute([*self.s.trial_clear_steps(), self.s.extlinux_step(pre, titles, extlinux.PREVIOUS),
                      self.copy_back_step(pairs), *modules,
                      self.s.extlinux_step(pre, titles, extlinux.LABEL),
                      self.s.record_step("installed", lambda: {
                          "installed": {**(pre.record.get("previous") or {}), "at": now(), "by": self.s.opts.who},
                          "pending_reboot": True,
                          "last": {"action": "rollback", "at": now(), "result": "rolled back, reboot pending"}})])
        if not self.s.opts.dry_run:
            self.s.phase("reboot")
            self.s.heartbeat(previous, holds if holds != previous else None, "rollback")
        return self.s.result

    def _pairs(self, pre: Preflight, previous: str) -> list[tuple[str, str, str]]:
        """(role, default entry's file, kept file); the kept files must be what the install kept."""
        try:
            pairs = extlinux.pairs(pre.config, self.spec.boot)
        except extlinux.ExtlinuxError as exc:
            raise InstallError(f"{self.host}:{self.spec.extlinux}: {exc}", exit_code=EXIT_BAD_INPUT) from None
        kept = pre.record.get("kept") or {}
        device = self.s.device
        gone = [prev for _, _, prev in pairs if not device.exists(prev)]
        if gone:
            raise InstallError(f"{self.host}: the kept files {', '.join(gone)} are gone, so there is nothing to "
                               f"copy back; restore {previous} from the backup instead: ka-install {self.host} "
                               f"--rollback {previous}; refused, nothing was changed", exit_code=EXIT_BAD_INPUT)
        now_sums = device.sums([prev for _, _, prev in pairs])
        if not kept or any(now_sums.get(path) != digest for path, digest in kept.items()) or set(now_sums) - set(kept):
            raise InstallError(f"{self.host}: the kept files (*{extlinux.PREV_SUFFIX}) are not the ones the install "
                               f"kept (or it did not record them); roll back from the backup instead: ka-install "
                               f"{self.host} --rollback {previous}")
        return pairs

    def modules_back_step(self, release: str) -> list[Step]:
        """The modules of ``release`` in place: the copy an install set aside (complete, hard-linked before
        pacman ran) replaces whatever an interrupted transaction left; refused when neither is there."""
        device = self.s.device
        place, aside = posixpath.join(self.spec.modules, release), self.s.modules_copy(release)
        if device.exists(aside):  # one command: a stop between the removal and the move would lose both
            self.s.got.modules_aside = aside
            cmds = [self.spec.root("sh", "-c", 'rm -rf -- "$1" && mv -T -- "$2" "$1" && sync', "ka-modules-back",
                                   place, aside)]
            return [self.s.commands_step(f"put the modules of {release} back in place ({aside})", cmds)]
        if not device.exists(place):
            raise InstallError(f"{self.host}: the modules of {release} are gone ({place}, and no copy at {aside}): "
                               f"the kept kernel would boot without them; restore {release} from the backup "
                               f"instead: ka-install {self.host} --rollback {release}; refused, nothing was changed",
                               exit_code=EXIT_BAD_INPUT)
        return []

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
        return self.s.commands_step(f"copy the kept *{extlinux.PREV_SUFFIX} files over the default entry's", cmds)
