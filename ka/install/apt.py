"""ka-install on a Debian host (``install.format: apt``): the package comes from the fleet's apt
repository, and the package's own hooks make the initramfs and the boot menu.

A Debian kernel package is named after its release (``linux-image-<release>``), so the new kernel
is installed beside the running one, whose package, files and boot entry stay: the way back is
the running kernel's own entry.  Order:

1. preflight (after the host's lock): the package (newest in ``apt_repository``, or a file), its
   signature and inputs, as for pacman; a release other than the running one and not installed
   yet; the running kernel is the default entry's; room in the boot folder; the backup host;
2. back up the running kernel to the backup host, verified there;
3. the repository as an apt source of its own (``/etc/apt/sources.list.d/kernel-agent.list``, the
   key in ``/etc/apt/keyrings/kernel-agent.gpg``: apt checks the signed index, then the package's
   sum); ``apt-get update`` of that source alone; ``apt-get install linux-image-<release>=<version>``,
   whose hooks run ``update-initramfs`` and u-boot-menu's ``u-boot-update``;
4. checks: dpkg has it installed, the image is the package's, its initramfs was written by this
   run, extlinux.conf's default entry boots it and another entry still boots the running kernel;
5. the boot-once trial (``trial_boot: uboot-script``) tries the new entry, falling back to the
   running kernel's; reboot and heartbeat.  A kernel that does not come up is removed again
   (``apt-get remove``), so that u-boot-update makes the kept kernel the default once more.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

from ka.errors import EXIT_BAD_INPUT
from ka.install import extlinux, trial
from ka.install.device import now
from ka.install.extlinux import menu
from ka.install.installer import MARGIN, Installer, InstallError, InstallResult, Preflight, Step
from ka.install.transaction import Transaction, check_detachable
from ka.packages import aptrepo
from ka.packages.facts import PackageFacts
from ka.packages.sign import SignError, public_key

SOURCE = "/etc/apt/sources.list.d/kernel-agent.list"
KEYRING = "/etc/apt/keyrings/kernel-agent.gpg"
#: apt reads only kernel-agent's source for the update, and keeps the other sources' lists
SOURCE_ONLY = [f"-oDir::Etc::SourceList={SOURCE}", "-oDir::Etc::SourceParts=-", "-oAPT::Get::List-Cleanup=0"]
NONINTERACTIVE = ["env", "DEBIAN_FRONTEND=noninteractive"]
#: dpkg's lock may be held a while (unattended-upgrades): wait for it rather than fail
LOCK_WAIT = "-oDPkg::Lock::Timeout=300"
ABSENT = ("not-installed", "config-files")


class AptInstall:
    """What an install on an apt host does its own way: the package goes in beside the running kernel, whose
    package, files and entry stay (the way back is removing the new package); the flow asks for the rest."""

    keeps = False  # the running kernel keeps its own package, files and entry

    def __init__(self, session: Installer) -> None:
        self.s = session
        self.spec, self.host = session.spec, session.host
        self.labels: tuple[str, str] = (extlinux.LABEL, extlinux.PREVIOUS)  # named by u-boot-update, read back
        self.started = 0  # the host's clock when apt-get install started: the new initramfs is younger
        self.removed = False  # a rollback removed the newer package

    def check_host(self, pre: Preflight, facts: PackageFacts) -> None:
        self.check_new_release(pre, facts)
        self.check_default(pre, facts)
        self.check_published(facts)
        check_detachable(self.s)

    def check_default(self, pre: Preflight, facts: PackageFacts) -> None:
        """The default entry boots the running kernel (it is what the backup saves and the way back keeps), and
        the new release is the one u-boot-update will make the default (it sorts above every other kernel)."""
        device = self.s.device
        default, boots = menu(pre.text, self.spec.boot)
        running = self.spec.deb_image(pre.running)
        if boots.get(default or "") != running:
            raise InstallError(f"{self.host}:{self.spec.extlinux}: the default entry ({default or 'none'}) does "
                               f"not boot the running kernel {running}: run u-boot-update there (or reboot into the "
                               "default), then install again; refused, nothing was changed", exit_code=EXIT_BAD_INPUT)
        others = sorted({posixpath.basename(p).removeprefix("vmlinuz-") for p in device.boot_files()
                         if posixpath.basename(p).startswith("vmlinuz-")} - {facts.release})
        order = device.remote.run(["linux-version", "sort", "--reverse", facts.release, *others], timeout=60,
                                  check=False)
        first = order.output.split()[:1]
        if order.ok and first != [facts.release]:
            raise InstallError(f"{facts.release} would not be {self.host}'s default kernel: u-boot-update boots the "
                               f"highest release, {first[0]}; remove that kernel first (apt-get remove "
                               f"linux-image-{first[0]}), or build a higher release; refused, nothing was changed",
                               exit_code=EXIT_BAD_INPUT)

    def check_published(self, facts: PackageFacts) -> None:
        """apt installs from the repository: ``--package FILE`` must be what the index lists, byte for byte."""
        repo = self.s.infra.apt_repository
        if repo is None:
            raise InstallError(f"{self.s.infra.path}: no apt_repository: an apt host installs from it; refused",
                               exit_code=EXIT_BAD_INPUT)
        if self.s.opts.package is None:
            return  # fetched from the repository, its sum checked against the index
        sha = hashlib.sha256(facts.path.read_bytes()).hexdigest()
        if not aptrepo.published_sum(self.s.opts.ssh, repo, facts.name, sha):
            raise InstallError(f"{facts.path.name} is not in {repo.name} ({repo.ssh}:{repo.path}) with these bytes: "
                               "apt on the host installs what the repository serves; publish it first (ka-build "
                               "publishes what it builds); refused, nothing was changed", exit_code=EXIT_BAD_INPUT)

    def check_room(self, pre: Preflight, facts: PackageFacts) -> None:
        """Room in the boot folder for the new kernel's files and its initramfs (about the running one's size):
        nothing is replaced, the running kernel keeps its files."""
        device = self.s.device
        self.s.require_room(int((facts.boot_bytes + device.size([self.spec.deb_initrd(pre.running)])) * MARGIN),
                          "the new kernel and its initramfs", "apt-get remove an old linux-image-<release>")

    def check_new_release(self, pre: Preflight, facts: PackageFacts) -> None:
        """Another release than the running one, not installed yet: it goes in beside the running kernel."""
        if facts.release == pre.running:
            raise InstallError(f"{facts.name} is the running kernel's release: installing it would replace the files "
                               f"{self.host} boots now in place.  Raise package.pkgrel and build again; refused, "
                               "nothing was changed", exit_code=EXIT_BAD_INPUT)
        device = self.s.device
        state = device.deb_status(facts.name)
        if state not in ABSENT:
            raise InstallError(f"{self.host} has {facts.name} already ({state}, not running): reboot into it, or "
                               f"remove it first (ka-install {self.host} --rollback); refused, nothing was changed")

    def steps(self, pre: Preflight, facts: PackageFacts) -> list[Step]:
        installed = {"release": facts.release, "version": facts.version, "package": facts.name, "at": now(),
                     "by": self.s.opts.who}
        previous = {"release": pre.running, "version": pre.installed, "package": self.spec.kernel_package(pre.running)}
        record: dict[str, Any] = {"host": self.host, "replaced_release": pre.running, "replaced_version": pre.installed,
                                  "installed_version": facts.version, "installed_release": facts.release,
                                  "at": now(), "by": self.s.opts.who,
                                  "paths": {"boot": self.spec.boot, "extlinux": self.spec.extlinux,
                                            "modules": self.spec.modules}}
        # the stage that holds the host (until a reboot or --rollback) starts when dpkg is about to change it
        return [self.s.backup_step(pre, record), self.source_step(), self.update_step(),
                self.s.record_step("installing", lambda: {"installed": installed, "previous": previous,
                                                        "pending_reboot": True, "backup": self.s.result.backup}),
                self.apt_step(facts), self.check_step(pre, facts),
                self.s.record_step("installed", lambda: {"last": {"action": "install", "at": now(),
                                                                "result": "installed, reboot pending"}}),
                *self.s.trial_steps(lambda: self.labels, ("<new entry>", "<running kernel's entry>"))]

    def source_step(self) -> Step:
        """The fleet's repository as apt's source, with its key (what apt checks the index's signature with)."""
        device, repo = self.s.device, self.s.infra.apt_repository
        if repo is None:  # check_published refused it already, unless a dry run could not reach the host
            raise InstallError(f"{self.s.infra.path}: no apt_repository: an apt host installs from it; refused",
                               exit_code=EXIT_BAD_INPUT)
        line = f"deb [signed-by={KEYRING}] {repo.url} {repo.name} main\n"

        def run() -> None:
            self.s.got.changed = True
            device.root(["mkdir", "-p", "--", posixpath.dirname(KEYRING)], timeout=60)
            try:
                key = public_key(repo.key, self.s.opts.gnupghome)
            except SignError as exc:
                raise InstallError(f"{exc}: apt on {self.host} would not trust the repository") from None
            device.write(KEYRING, key)
            device.write(SOURCE, f"# written by kernel-agent (ka-install): the fleet's kernels\n{line}".encode())
        return Step(f"apt source {SOURCE} ({repo.url} {repo.name}) and the key {repo.key[-16:]} in {KEYRING}",
                    [(self.host, argv) for path in (KEYRING, SOURCE) for argv in device.write_commands(path)], run,
                    writes=line)

    def apt(self, *args: str) -> list[str]:
        """An apt-get command line, as root, without questions."""
        return self.spec.root(*NONINTERACTIVE, *self.spec.commands.apt_get, LOCK_WAIT, *args)

    def _apt_run(self, argv: list[str], what: str) -> None:
        """apt-get detached from the ssh channel (ka/install/transaction.py): a dropped connection or an
        interrupt never leaves dpkg half-way through configuring a kernel."""
        command = argv[len(self.spec.commands.prefix):]  # the transaction runs it as root
        code, output = Transaction(self.s, "apt-get").run(command)
        if code != 0:
            raise InstallError(f"apt-get {what} failed on {self.host} (exit {code}): "
                               + " | ".join(output.strip().splitlines()[-3:]))

    def update_step(self) -> Step:
        """apt-get update of the fleet's source alone (the host's other sources are not read)."""
        argv = self.apt(*SOURCE_ONLY, "update")
        return Step("apt-get update (the fleet's source only)", [(self.host, argv)],
                    lambda: self._apt_run(argv, "update"))

    def apt_step(self, facts: PackageFacts) -> Step:
        """Install the package: its hooks run on the host (initramfs-tools, u-boot-menu)."""
        device = self.s.device
        argv = self.apt("install", "--yes", "--no-install-recommends", "-oDpkg::Options::=--force-confold",
                        f"{facts.name}={facts.version}")

        def run() -> None:
            self.started = int(device.remote.run(["date", "+%s"], timeout=30).output.strip())
            self.s.got.changed, self.s.got.apt_package = True, facts.name
            self._apt_run(argv, f"install {facts.name}={facts.version}")
        return Step(f"apt-get install {facts.name}={facts.version} (its hooks: update-initramfs, u-boot-update)",
                    [(self.host, argv)], run)

    def check_step(self, pre: Preflight, facts: PackageFacts) -> Step:
        """dpkg has it; the image is the package's; its initramfs is new; extlinux boots it, and keeps the old."""
        device = self.s.device
        image, initrd = self.spec.deb_image(facts.release), self.spec.deb_initrd(facts.release)

        def run() -> None:
            if device.installed(facts.name) != facts.version:
                raise InstallError(f"dpkg on {self.host} does not have {facts.name} {facts.version} after apt")
            sums = device.sums([image])
            if sums.get(image) != facts.image_sha256:
                raise InstallError(f"{self.host}:{image} is not the package's image after the install")
            self._check_initrd(initrd)
            self.labels = self._check_menu(pre, facts, image)
            self.s.log(f"{self.spec.extlinux}: {self.labels[0]} boots {facts.release} by default, {self.labels[1]} "
                     f"boots {pre.running}")
        return Step(f"check: dpkg has {facts.name}, {image} is the package's, {initrd} is new, {self.spec.extlinux} "
                    f"boots {facts.release} by default and still has {pre.running}",
                    [(self.host, ["dpkg-query", "-W", facts.name]), (self.host, self.spec.root("sha256sum", image)),
                     (self.host, self.spec.root("stat", "-c", "%Y", initrd)),
                     (self.host, self.spec.root("cat", self.spec.extlinux))], run)

    def _check_initrd(self, initrd: str) -> None:
        if self.spec.initramfs == "none":
            return
        device = self.s.device
        got = device.root(["stat", "-c", "%Y", "--", initrd], timeout=60, check=False).output.strip()
        if not got.isdigit() or int(got) < self.started:
            raise InstallError(f"{self.host}:{initrd} was not written by the package's hooks (initramfs-tools): the "
                               "new kernel would boot without its initramfs; is initramfs-tools installed?")

    def _check_menu(self, pre: Preflight, facts: PackageFacts, image: str) -> tuple[str, str]:
        """(the default label, the first label booting the running kernel) of the rewritten extlinux.conf."""
        device = self.s.device
        default, boots = menu(device.read(self.spec.extlinux, 1 << 20).decode("utf-8", "replace"), self.spec.boot)
        if default is None or boots.get(default) != image:
            raise InstallError(f"{self.host}:{self.spec.extlinux}: the default entry ({default}) does not boot {image} "
                               "after the install: did u-boot-menu's hook run (is u-boot-menu installed)?")
        old = self.spec.deb_image(pre.running)
        keep = next((name for name, path in boots.items() if path == old), None)
        if keep is None:
            raise InstallError(f"{self.host}:{self.spec.extlinux}: no entry boots {old} any more: the running kernel "
                               "would have no way back")
        return default, keep

    def fell_back(self, pre: Preflight, facts: PackageFacts, why: str) -> str:
        """Back on the kept kernel by itself: remove the new package, so that it is the default again."""
        device = self.s.device
        self.remove(facts.name)
        trial.clear(device, self.spec)
        self.s.got.trial_armed = False
        record = device.record()
        device.save_record({**record, "stage": "booted", "pending_reboot": False,
                            "installed": record.get("previous") or {},
                            "last": {**(record.get("last") or {}), "result": "failed"}})
        return f"{why}; the boot-once trial brought it back by itself, {facts.name} was removed and " + \
            self.default_after_removal(pre.running)

    def default_after_removal(self, back: str) -> str:
        """Whether u-boot-update made ``back`` the default again, as words (raises when it did not)."""
        device = self.s.device
        default, boots = menu(device.read(self.spec.extlinux, 1 << 20).decode("utf-8", "replace"), self.spec.boot)
        if boots.get(default or "") != self.spec.deb_image(back):
            raise InstallError(f"{self.host}:{self.spec.extlinux}: after the removal the default entry "
                               f"({default or 'none'}) does not boot {self.spec.deb_image(back)}: run "
                               "u-boot-update there and look at the file")
        return f"{back} is the default entry again"

    def remove(self, name: str) -> None:
        """``apt-get remove`` a kernel package: its hooks take its entry out of extlinux.conf."""
        self.s.got.changed, self.s.got.apt_package = True, name
        self._apt_run(self.apt("remove", "--yes", name), f"remove {name}")

    # --- the way back ------------------------------------------------------------------------------

    def roll_back(self) -> InstallResult:
        """Remove the kernel the last install put in, so that u-boot-update makes the kernel it replaced the
        default again; reboot (unless nothing was removed and the host runs that kernel already)."""
        self.s.phase("preflight")
        self.s.connect()
        self.s.lock()
        pre = self.s.preflight()
        installed, previous = pre.record.get("installed") or {}, pre.record.get("previous") or {}
        name, back = installed.get("package"), previous.get("release")
        if not name or not back or installed.get("release") == back:
            raise InstallError(f"{self.host}: its install record names no installed kernel and no kernel it replaced; "
                               "nothing to roll back (ka-install --rollback RELEASE restores a backup)",
                               exit_code=EXIT_BAD_INPUT)
        self.s.result.new_release = back
        self.s.got.apt_package = str(name)
        self.s.execute([*self.s.trial_clear_steps(), self.remove_step(str(name), str(back)),
                      self.s.record_step("installed", lambda: {
                          "installed": {**previous, "at": now(), "by": self.s.opts.who}, "pending_reboot": True,
                          "last": {"action": "rollback", "at": now(), "result": "rolled back, reboot pending"}})])
        if self.s.opts.dry_run:
            return self.s.result
        if not self.removed and pre.running == back:  # nothing was there to remove, and it runs the kernel
            self.s.device.save_record({**self.s.device.record(), "stage": "booted", "pending_reboot": False})
            self.s.result.state = "succeeded"
            self.s.result.message = f"{self.host} runs {back}; {name} was not installed"
            return self.s.result
        self.s.phase("reboot")
        self.s.heartbeat(str(back), installed.get("release") if pre.running != back else None, "rollback")
        return self.s.result

    def remove_step(self, name: str, back: str) -> Step:
        device = self.s.device
        argv = self.apt("remove", "--yes", name)
        image = self.spec.deb_image(back)

        def run() -> None:
            if device.deb_status(name) not in ABSENT:  # half-configured or unpacked count: dpkg retries those
                self.remove(name)
                self.removed = True
            self.default_after_removal(back)
        return Step(f"apt-get remove {name}: u-boot-update makes {back} ({image}) the default again",
                    [(self.host, argv)], run)
