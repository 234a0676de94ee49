"""Fleet hosts for ka-install tests: a real sshd each, whose "/" is a per-test folder.

The manifest's ``install`` settings point pacman (its own pacman.conf: RootDir, DBPath, log,
keyring and hooks inside the folder), the boot folder, the modules, the reboot command and
the running-kernel command into that folder, as production points them at ``/`` (see
../shared/notes/test-infrastructure.md).  Root is ``unshare -r`` (the ssh user becomes root
in a user namespace), as ``sudo`` makes it in production.

Rebooting is the part a test cannot do for real, so a *power controller* (a thread of the
test process, the machine's BMC if you like) does it: the host's reboot command asks for it,
the controller kills that host's sshd and every session under it, waits, "boots" and starts
sshd again.  Booting reads the host's extlinux.conf as U-Boot does (keywords in any case,
``default``, labels tried in order when one cannot be loaded, ``fallback`` after a kernel that
panics) and decides the running release from what the chosen kernel image says
(``Linux version …``, as in a real arm64 Image); a kernel whose initrd was not made for its
release panics.  ``mode`` makes a host whose new kernel panics, or one that never comes back.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.sshhosts import USER, SshHost, SshLab, run

PACMAN_CONF = """[options]
RootDir = {root}
DBPath = {root}/var/lib/pacman/
CacheDir = {root}/var/cache/pacman/pkg/
LogFile = {root}/var/log/pacman.log
GPGDir = {root}/etc/pacman.d/gnupg/
HookDir = {root}/etc/pacman.d/hooks/
Architecture = aarch64
SigLevel = Required DatabaseOptional
LocalFileSigLevel = Required
"""

#: A stand-in for mkinitcpio -p PRESET: reads the preset ka-build packaged, needs the release's
#: modules, writes the image the preset names (inside the host's root).
MKINITCPIO = """#!/bin/bash
set -eu
root={root}
[ "$1" = "-p" ] || {{ echo "usage: mkinitcpio -p PRESET" >&2; exit 1; }}
preset="$root/etc/mkinitcpio.d/$2.preset"
[ -f "$preset" ] || {{ echo "==> ERROR: preset not found: $2" >&2; exit 1; }}
ALL_kver=; default_image=
. "$preset"
[ -d "$root/usr/lib/modules/$ALL_kver" ] || {{ echo "==> ERROR: no modules for $ALL_kver" >&2; exit 1; }}
echo "==> Building image from preset: /etc/mkinitcpio.d/$2.preset: 'default'"
echo "==> Starting build: '$ALL_kver'"
printf 'initramfs for %s\\n' "$ALL_kver" > "$root$default_image.tmp"
ls "$root/usr/lib/modules/$ALL_kver" >> "$root$default_image.tmp"
mv "$root$default_image.tmp" "$root$default_image"
echo "==> Image generation successful"
"""

REBOOT = """#!/bin/sh
# ask the power controller for a reboot, as systemctl reboot asks the kernel
touch {root}/run/reboot-requested
"""

OWNER_EXTLINUX = """# written by the owner
TIMEOUT 30
MENU TITLE PineTab2 boot
DEFAULT arch

LABEL arch
    MENU LABEL Arch Linux ARM
    LINUX /Image
    INITRD /initramfs-linux-ampere.img
    FDT /dtbs/rockchip/rk3566-pinetab2.dtb
    APPEND root=LABEL=ROOT rw console=ttyS2,1500000 quiet

LABEL rescue
    MENU LABEL rescue shell
    LINUX /Image
    APPEND root=LABEL=ROOT rw init=/bin/sh
"""

BASE_PKGBUILD = """pkgname=fleet-base
pkgver=1
pkgrel=1
pkgdesc="what the fleet's hosts have besides their kernel"
arch=(any)
license=(MIT)
provides=(coreutils kmod mkinitcpio)
package() {
  install -d "$pkgdir/usr/share/fleet-base"
}
"""

_VERSION = re.compile(rb"Linux version (\S+)")


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process under it (sshd's sessions live in sessions of their own)."""
    while True:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry))
        tree, todo = [], [pid]
        while todo:
            p = todo.pop()
            tree.append(p)
            todo += children.get(p, [])
        alive = [p for p in tree if Path(f"/proc/{p}").exists()]
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        if len(alive) <= 1:
            return
        time.sleep(0.02)


@dataclass
class Firmware:
    """U-Boot's extlinux boot, as far as a test needs it."""

    boot: Path

    def labels(self) -> tuple[dict[str, str], list[tuple[str, dict[str, str]]]]:
        globals_: dict[str, str] = {}
        labels: list[tuple[str, dict[str, str]]] = []
        for line in (self.boot / "extlinux/extlinux.conf").read_text().splitlines():
            words = line.strip().split(None, 1)
            if not words or words[0].startswith("#"):
                continue
            key, value = words[0].lower(), (words[1] if len(words) > 1 else "")
            if key == "label":
                labels.append((value, {}))
            elif labels:
                labels[-1][1][key] = value
            else:
                globals_[key] = value
        return globals_, labels

    def load(self, entry: dict[str, str]) -> tuple[str, bool] | None:
        """(release, panics) of an entry's kernel, or None when it cannot be loaded."""
        kernel = self.boot / (entry.get("linux") or entry.get("kernel") or "/missing").lstrip("/")
        if not kernel.is_file():
            return None
        found = _VERSION.search(kernel.read_bytes()[:200])
        if not found:
            return None
        release = found.group(1).decode()
        initrd = entry.get("initrd")
        if initrd is None:
            return release, False
        path = self.boot / initrd.lstrip("/")
        if not path.is_file():
            return None
        return release, not path.read_text(errors="replace").startswith(f"initramfs for {release}\n")

    def choose(self, bad: set[str]) -> str | None:
        """The release that comes up: the default; when it cannot be loaded, the next labels; when its
        kernel panics (one of ``bad``, or an initrd of another release), the ``fallback`` label (bootcount)."""
        globals_, labels = self.labels()
        order = sorted(labels, key=lambda lab: lab[0] != globals_.get("default"))
        for _, entry in order:
            loaded = self.load(entry)
            if loaded is None:
                continue  # U-Boot tries the labels it has not attempted yet
            release, panics = loaded
            if panics or release in bad:
                fallback = dict(labels).get(globals_.get("fallback", ""))
                again = self.load(fallback) if fallback else None
                return again[0] if again and not again[1] and again[0] not in bad else None
            return release
        return None


@dataclass
class Target:
    """A fleet host: its sshd, its root folder, its power controller."""

    name: str
    host: SshHost
    root: Path
    mode: str = "boot"  # boot | dead (never comes back)
    bad: set[str] = field(default_factory=set)  # releases whose kernel panics
    down_for: float = 0.3
    boots: list[str | None] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    cycling: bool = False  # the power controller is rebooting it

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._watch, name=f"power-{self.name}", daemon=True)
        self.thread.start()

    @property
    def release_file(self) -> Path:
        return self.root / "run/kernel-release"

    def install_yaml(self, up: int = 20, down: int = 20) -> str:
        """The manifest's ``install`` section for this host."""
        r = self.root
        return (f"install:\n  ssh: {self.name}\n  boot: {r}/boot\n  extlinux: {r}/boot/extlinux/extlinux.conf\n"
                f"  modules: {r}/usr/lib/modules\n  state: {r}/var/lib/kernel-agent\n"
                f"  pacman_log: {r}/var/log/pacman.log\n  panic: 10\n  commands:\n    prefix: [unshare, -r]\n"
                f"    pacman: [pacman, --config, {r}/etc/pacman.conf]\n    mkinitcpio: [{r}/usr/bin/mkinitcpio]\n"
                f"    reboot: [{r}/usr/bin/reboot]\n    release: [cat, {r}/run/kernel-release]\n"
                f"    boot_id: [cat, {r}/run/boot-id]\n"
                f"  heartbeat:\n    down: {down}\n    up: {up}\n")

    def boot(self) -> str | None:
        """Power on: choose the kernel as U-Boot would, and record it as running."""
        release = Firmware(self.root / "boot").choose(self.bad)
        self.boots.append(release)
        if release is not None:
            self.release_file.write_text(release + "\n")
            (self.root / "run/boot-id").write_text(f"{uuid.uuid4()}\n")
        return release

    def _watch(self) -> None:
        request = self.root / "run/reboot-requested"
        while not self.stopping.is_set():
            if request.exists():
                self.cycling = True
                request.unlink()
                self.power_cycle()
                self.cycling = False
            time.sleep(0.05)

    def power_cycle(self) -> None:
        if self.host.proc is not None:
            kill_tree(self.host.proc.pid)
            self.host.proc.wait()
        shutil.rmtree(self.root / "tmp", ignore_errors=True)  # /tmp is a tmpfs on Arch: gone with the boot
        run("mkdir", "-p", str(self.root / "tmp"), user=USER)
        time.sleep(self.down_for)
        if self.mode == "dead" or self.boot() is None:
            return
        self.host.start()

    def settle(self, timeout: float = 60) -> None:
        """Wait for a reboot that was asked for to end (the controller looks every 50 ms)."""
        end = time.monotonic() + timeout
        time.sleep(0.2)
        while self.cycling or (self.root / "run/reboot-requested").exists():
            assert time.monotonic() < end, f"{self.name} never came back from its reboot"
            time.sleep(0.05)

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the root (path → bytes), to show that nothing changed."""
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*"))
                if p.is_file() and not p.is_symlink()}

    def stop(self) -> None:
        self.stopping.set()
        self.host.stop()


@dataclass
class TargetLab:
    """Makes target hosts in an ssh lab: fresh roots with the old kernel installed by pacman."""

    ssh: SshLab
    keyring: Path  # a pacman keyring that trusts the fleet's signing key
    sign: Callable[[Path], object]  # signs a package with that key
    template: Path | None = None
    made: list[Target] = field(default_factory=list)
    number: int = 30

    def root(self, tag: str) -> Path:
        """An empty host root owned by the ssh user."""
        root = self.ssh.user_folder(tag, "root")
        for d in ("boot/extlinux", "etc/pacman.d/hooks", "etc/mkinitcpio.d", "var/lib/pacman",
                  "var/cache/pacman/pkg", "var/log", "usr/bin", "usr/lib/modules", "bin", "run", "tmp"):
            run("mkdir", "-p", str(root / d), user=USER)
        return root

    def configure(self, root: Path) -> None:
        """The files that name the root: pacman.conf, the stand-in programs, the keyring, /bin/sh."""
        files = {"etc/pacman.conf": PACMAN_CONF.format(root=root), "usr/bin/mkinitcpio": MKINITCPIO.format(root=root),
                 "usr/bin/reboot": REBOOT.format(root=root)}
        for rel, text in files.items():
            (root / rel).write_text(text)
        for rel in ("usr/bin/mkinitcpio", "usr/bin/reboot"):
            (root / rel).chmod(0o755)
        if not (root / "etc/pacman.d/gnupg").exists():
            shutil.copytree(self.keyring, root / "etc/pacman.d/gnupg", ignore=shutil.ignore_patterns("S.*"))
        if not (root / "bin/sh").exists():
            shutil.copy("/bin/busybox", root / "bin/busybox")
            (root / "bin/sh").symlink_to("busybox")
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(root)], check=True)

    def prepare(self, package: Path, pkgbase: str) -> None:
        """Once a session: a root with ``package`` installed by pacman, its initramfs and the owner's extlinux.conf."""
        root = self.root("template")
        self.configure(root)
        readable = self.ssh.user_folder("packages")
        for path in (package, package.with_name(package.name + ".sig")):
            run("cp", str(path), str(readable / path.name))  # pytest's folders are root's alone
        base = self.base_package(readable)
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(readable)], check=True)
        self.pacman(root, "-U", "--noconfirm", "--noprogressbar", str(base), str(readable / package.name))
        run(str(root / "usr/bin/mkinitcpio"), "-p", pkgbase, user=USER)
        (root / "boot/extlinux/extlinux.conf").write_text(OWNER_EXTLINUX)
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(root)], check=True)
        self.template = root

    def base_package(self, folder: Path) -> Path:
        """What a real host has that the kernel package depends on (coreutils, kmod, mkinitcpio), as one
        package made by makepkg and signed, so that pacman checks the dependencies as it does in production."""
        return self.make_package(folder, BASE_PKGBUILD, "fleet-base-1-1-any.pkg.tar.zst")

    def make_package(self, folder: Path, pkgbuild: str, name: str, env: tuple[str, ...] = ()) -> Path:
        """A package made by makepkg as the ssh user in ``folder``, signed with the fleet's key."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "PKGBUILD").write_text(pkgbuild)
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(folder)], check=True)
        run("env", "PKGEXT=.pkg.tar.zst", *env, "makepkg", "--nodeps", "--noconfirm", "--noprogressbar", "--force",
            user=USER, cwd=folder)
        package = folder / name
        self.sign(package)
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(folder)], check=True)
        return package

    def pacman(self, root: Path, *args: str) -> str:
        return run("unshare", "-r", "pacman", "--config", str(root / "etc/pacman.conf"), *args, user=USER).stdout

    def target(self, tag: str, mode: str = "boot", bad: tuple[str, ...] = ()) -> Target:
        """A fresh host ``t-<tag>``: a copy of the template root, its sshd started, booted."""
        assert self.template is not None
        root = self.ssh.user_folder(tag) / "root"
        run("cp", "-a", str(self.template), str(root), user=USER)
        self.configure(root)
        self.number += 1
        name = f"t-{tag}"
        run("mkdir", "-p", str(root / "tmp"), user=USER)
        host = self.ssh.add(name, self.number, extra=(f"SetEnv TMPDIR={root}/tmp",))
        target = Target(name, host, root)
        assert target.boot() is not None
        target.mode, target.bad = mode, set(bad)
        self.made.append(target)
        return target

    def stop(self) -> None:
        for t in self.made:
            t.stop()
