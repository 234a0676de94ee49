"""A real arm64 fleet host in QEMU: U-Boot → extlinux → Linux → sshd, built without emulation.

The disk image is built once and cached by the versions of its inputs:

1. apt resolves the arm64 package set (names and versions: with this file's text, the cache key);
2. ``mmdebstrap --variant=extract`` unpacks those packages; no maintainer script runs, so nothing is
   emulated (qemu-user would take minutes, most of them in mkinitramfs);
3. this machine configures the tree: users, sshd with a pinned host key and root's key, busybox's
   init, ``modules.dep`` (depmod reads arm64 modules), a small initramfs (busybox and the modules that
   mount the root file system) and ``/boot/extlinux/extlinux.conf``;
4. a raw disk: an MBR, partition 1 ext4 made from the tree (``mkfs.ext4 -d``), partition 2 a small FAT
   file system U-Boot can write (boot state).

A VM boots a qcow2 overlay of that disk with Debian's U-Boot for QEMU as firmware, as a board boots
from its eMMC: U-Boot's distro boot finds extlinux.conf on virtio 0:1.  ssh is forwarded on 127.0.0.1
only (``restrict=on``: the guest reaches no network), the serial console goes to a file.

Run as a script: ``python tests/support/qemuhost.py build`` (prints the image and how long it took) and
``python tests/support/qemuhost.py boot`` (boots it and prints how to log in).  Needs root (mmdebstrap's root
mode, owners in mkfs.ext4 -d) and Debian's qemu-system-arm, u-boot-qemu, mmdebstrap, dosfstools,
fdisk, qemu-utils, e2fsprogs and kmod.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import lzma
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "bookworm"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCES = [f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {SUITE} main",
           f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {SUITE}-updates main",
           f"deb [signed-by={KEYRING}] http://deb.debian.org/debian-security {SUITE}-security main"]
#: what a fleet host needs for ka-install's pacman path, and a shell to look around with
PACKAGES = ["linux-image-arm64", "busybox-static", "dash", "coreutils", "tar", "findutils", "grep", "sed",
            "gzip", "zstd", "kmod", "openssh-server", "openssh-sftp-server", "pacman-package-manager", "gpg",
            "gpgv", "gpg-agent", "bash", "util-linux"]  # util-linux: setsid, as on every Arch (base) host
#: the modules the initramfs loads (with what they need) to mount the root file system
ROOT_MODULES = ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"]
#: bookworm's Essential: yes packages, which maintainer scripts take as given (linux-version is perl)
ESSENTIAL = ["base-files", "base-passwd", "bash", "bsdutils", "coreutils", "dash", "debianutils", "diffutils", "dpkg",
             "findutils", "grep", "gzip", "hostname", "init-system-helpers", "libc-bin", "login", "ncurses-base",
             "ncurses-bin", "perl-base", "sed", "sysvinit-utils", "tar", "util-linux"]
#: the "deb" flavour: a Debian host whose kernel packages install with their own hooks (dpkg -i, apt):
#: no pacman, but dpkg's database, apt, initramfs-tools and u-boot-menu
FLAVOURS = {"pacman": PACKAGES,
            "deb": [*(p for p in PACKAGES if p != "pacman-package-manager"), "apt", "linux-base", "initramfs-tools",
                    "u-boot-menu", "usr-is-merged", "e2fsprogs", *ESSENTIAL]}
#: the "pacman-gcc" flavour: the pacman host with a compiler, to build a module against the headers package
#: on the device as DKMS does (cached in a folder of its own: the other tests' image stays as small)
FLAVOURS["pacman-gcc"] = [*PACKAGES, "gcc", "make", "libc6-dev", "mawk"]
#: u-boot-menu's settings: u-boot-update writes extlinux.conf as write_extlinux does
U_BOOT_DEFAULTS = """\
## written by the owner of this host (u-boot-update(8) reads it)
U_BOOT_ALTERNATIVES="default"
U_BOOT_DEFAULT="l0"
U_BOOT_PROMPT="0"
U_BOOT_TIMEOUT="10"
U_BOOT_MENU_LABEL="Debian GNU/Linux"
U_BOOT_ROOT="root=/dev/vda1"
U_BOOT_PARAMETERS="rw console=ttyAMA0 panic=10"
# no fdtdir line: the device tree is the one QEMU gives U-Boot, not a board's from the kernel package
U_BOOT_FDT_DIR="/usr/lib/no-device-trees-"
"""
#: initramfs-tools made light: the root file system's modules only, busybox, gzip (quick under TCG)
INITRAMFS_CONF = """\
MODULES=list
BUSYBOX=y
COMPRESS=gzip
COMPRESSLEVEL=1
RUNSIZE=10%
FSTYPE=ext4
"""
UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
ROOT_MB, STATE_MB = 3072, 16
GUEST_IP, GATEWAY = "10.0.2.15", "10.0.2.2"  # QEMU's user-mode network

Log = Callable[[str], None]


def cache_dir() -> Path:
    """Where images are kept between runs (``KA_QEMU_CACHE``, else ~/.cache/kernel-agent/qemu)."""
    return Path(os.environ.get("KA_QEMU_CACHE") or Path.home() / ".cache/kernel-agent/qemu")


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a program (sbin folders included: depmod, mkfs, sfdisk); its output is in the error when it fails."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    argv = [shutil.which(argv[0], path=path) or argv[0], *argv[1:]]
    res = subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({res.returncode}):\n{res.stdout[-2000:]}"
                           f"{res.stderr[-3000:]}")
    return res  # type: ignore[no-any-return]


# --- the package set, and the cache key -----------------------------------------------------------

def apt(work: Path) -> list[str]:
    """apt options for an arm64 package index of its own in ``work`` (updated): this machine's is untouched."""
    root = work / "apt"
    for sub in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/dpkg", "var/lib/apt/lists/partial",
                "var/cache/apt/archives/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").touch()
    (root / "etc/apt/sources.list").write_text("\n".join(SOURCES) + "\n")
    opts = [f"-oDir={root}", f"-oDir::State::status={root}/var/lib/dpkg/status", "-oAPT::Architecture=arm64",
            "-oAPT::Architectures=arm64", "-oDebug::NoLocking=1", "-oAPT::Install-Recommends=0"]
    run(["apt-get", *opts, "update", "-qq"])
    return opts


def resolve(work: Path, packages: list[str] = PACKAGES) -> list[str]:
    """``name version`` of every arm64 package the image holds, as apt resolves them today."""
    out = run(["apt-get", *apt(work), "install", "-s", *packages]).stdout
    found = sorted(f"{line.split()[1]} {line.split()[2].strip('(')}" for line in out.splitlines()
                   if line.startswith("Inst "))
    if not found:
        raise RuntimeError(f"apt resolved no packages:\n{out[-2000:]}")
    return found


def builder_digest() -> str:
    """This file's text: images from another version of it are not used."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def cache_key(versions: list[str]) -> str:
    """This file's text and the package versions: a change in either builds a new image."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update("\n".join(versions).encode())
    return digest.hexdigest()[:16]


# --- the image ----------------------------------------------------------------------------------

@dataclass
class Image:
    """A built disk image and what it takes to log in to it."""

    folder: Path

    @property
    def disk(self) -> Path:
        return self.folder / "disk.raw"

    @property
    def info(self) -> dict[str, object]:
        return json.loads((self.folder / "image.json").read_text())  # type: ignore[no-any-return]

    @property
    def release(self) -> str:
        return str(self.info["release"])

    @property
    def client_key(self) -> Path:
        return self.folder / "id_ed25519"

    @property
    def host_key(self) -> str:
        """The guest's ssh host key (``ssh-ed25519 AAAA…``), pinned in known_hosts by the tests."""
        return " ".join((self.folder / "ssh_host_ed25519_key.pub").read_text().split()[:2])


def image(log: Log = print, cache: Path | None = None, flavour: str = "pacman") -> Image:
    """The cached image for today's package versions, built first when there is none; ``flavour``
    "deb": dpkg's database filled, apt, initramfs-tools and u-boot-menu (in a folder of its own)."""
    cache = cache or cache_dir()
    if flavour != "pacman":
        cache = cache / flavour
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions build it once
        try:
            with tempfile.TemporaryDirectory(dir=cache, prefix="resolve.") as tmp:
                versions = resolve(Path(tmp), FLAVOURS[flavour])
        except RuntimeError as exc:  # no archive to ask: the newest image this builder made still boots
            built = sorted((p for p in cache.glob("*/image.json") if json.loads(p.read_text()).get("builder")
                            == builder_digest()), key=lambda p: p.stat().st_mtime)
            if not built:
                raise
            log(f"qemu host image: cannot resolve today's packages ({str(exc).splitlines()[0]}); "
                f"using the newest cached image")
            return Image(built[-1].parent)
        folder = cache / cache_key(versions)
        if (folder / "image.json").exists():
            log(f"qemu host image: cached at {folder}")
            return Image(folder)
        start = time.monotonic()
        scratch = cache / f"{folder.name}.building"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            _build(scratch, versions, log, flavour)
            took = round(time.monotonic() - start, 1)
            info = json.loads((scratch / "image.json").read_text())
            (scratch / "image.json").write_text(json.dumps({**info, "built_seconds": took}, indent=1))
            shutil.rmtree(scratch / "root")  # the disk holds it; an image kept its whole tree before
            scratch.rename(folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for old in cache.glob("*/image.json"):  # images of older inputs: each is about 0.5 GB
            if old.parent != folder:
                shutil.rmtree(old.parent, ignore_errors=True)
        log(f"qemu host image: built in {took}s at {folder}")
        return Image(folder)


def _build(out: Path, versions: list[str], log: Log, flavour: str = "pacman") -> None:
    root = out / "root"
    deb = flavour == "deb"
    log(f"qemu host image: mmdebstrap (extract, arm64, {flavour})")
    run(["mmdebstrap", "--mode=root", "--arch=arm64", "--variant=extract",
         f"--include={','.join(FLAVOURS[flavour])}", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
         *(["--skip=cleanup/apt/cache"] if deb else []), "--quiet", SUITE, str(root), *SOURCES])
    if deb:  # before anything changes a conffile: dpkg's database records them as the packages hold them
        log("qemu host image: dpkg's database")
        dpkg_database(root, sorted((root / "var/cache/apt/archives").glob("*.deb")))
    for junk in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt"):
        shutil.rmtree(root / junk, ignore_errors=True)
    release = _kernel_release(root)
    log(f"qemu host image: configuring (kernel {release})")
    trim_modules(root, release)
    for name in ("ssh_host_ed25519_key", "id_ed25519"):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"ka-qemu-{name}", "-f", str(out / name)])
    configure(root, out, release)
    if deb:
        debian(root, release)
    else:
        tools(root)
    if "mawk" in FLAVOURS[flavour]:  # awk is an alternative, which mawk's postinst (not run here) makes
        (root / "usr/bin/awk").symlink_to("mawk")
    (root / f"boot/initrd.img-{release}").write_bytes(initramfs(root, release, out / "initramfs"))
    log("qemu host image: disk (ext4 root, FAT state)")
    make_disk(root, out / "disk.raw", out)
    (out / "image.json").write_text(json.dumps({"release": release, "versions": versions, "flavour": flavour,
                                                "builder": builder_digest()}, indent=1))


def trim_modules(root: Path, release: str) -> None:
    """Keep the modules this machine needs (PACKAGE_MODULES and theirs), as the kernel package does:
    all 3,000 make each backup of the running kernel a minute longer under emulation."""
    run(["depmod", "-b", str(root), release])
    shown = run(["modprobe", "-d", str(root), "-S", release, "-a", "--show-depends", *PACKAGE_MODULES]).stdout
    keep = {Path(line.split()[1]).resolve() for line in shown.splitlines() if line.startswith("insmod ")}
    for module in (root / "usr/lib/modules" / release / "kernel").rglob("*.ko*"):
        if module.resolve() not in keep:
            module.unlink()
    run(["depmod", "-b", str(root), release])


def _kernel_release(root: Path) -> str:
    found = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(found) != 1:
        raise RuntimeError(f"expected one kernel in the image, found {found}")
    return found[0]


INITTAB = """\
::sysinit:/etc/ka-rc
::respawn:/usr/sbin/sshd -D -e
ttyAMA0::askfirst:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
"""

RC = f"""#!/bin/sh
# the boot of a small fleet host: file systems, network, what sshd needs
mount -t proc proc /proc; mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null; mkdir -p /dev/pts; mount -t devpts devpts /dev/pts
mount -o remount,rw /
mount -t tmpfs -o mode=0755 tmpfs /run; mount -t tmpfs tmpfs /tmp
mkdir -p /run/sshd /var/log /boot/state
mount -t vfat /dev/vda2 /boot/state || echo "ka-rc: the state partition /dev/vda2 did not mount" > /dev/console
hostname -F /etc/hostname
modprobe virtio_net; modprobe virtio_rng 2>/dev/null || true
ip link set lo up; ip link set eth0 up
ip addr add {GUEST_IP}/24 dev eth0; ip route add default via {GATEWAY}
echo "ka-rc: up, running $(uname -r)" > /dev/console
"""

SSHD_CONFIG = """\
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
Subsystem sftp /usr/lib/openssh/sftp-server
"""

PACMAN_CONF = """\
[options]
RootDir = /
DBPath = /var/lib/pacman/
CacheDir = /var/cache/pacman/pkg/
LogFile = /var/log/pacman.log
GPGDir = /etc/pacman.d/gnupg/
HookDir = /etc/pacman.d/hooks/
Architecture = aarch64
SigLevel = Required DatabaseOptional
LocalFileSigLevel = Required
"""

#: as Arch Linux ARM's kmod package does: new modules get their modules.dep from a pacman hook
DEPMOD_HOOK = """\
[Trigger]
Type = Path
Operation = Install
Operation = Upgrade
Target = usr/lib/modules/*/
Target = !usr/lib/modules/*/?*

[Action]
Description = Updating module dependencies...
When = PostTransaction
Exec = /usr/local/sbin/ka-depmod
NeedsTargets
"""

DEPMOD = """#!/bin/sh
# called by the depmod pacman hook with the module folders that changed; a failure fails the hook
set -e
while read -r target; do
    release=${target#usr/lib/modules/}; release=${release%/}
    if [ -e "/usr/lib/modules/$release/modules.order" ]; then depmod "$release"; fi
done
"""

#: the host's initramfs maker, called as mkinitcpio is (``-p PRESET``, a bash file): it reads ALL_kver and
#: default_image from the preset ka-build packages, and packs busybox, the modules that mount the root
#: file system (decompressed: busybox's insmod reads plain .ko) and the same /init as the first one
MKINITRAMFS = """#!/bin/bash
set -euo pipefail
[ "${1:-}" = -p ] && [ -n "${2:-}" ] || { echo "usage: ka-mkinitramfs -p PRESET" >&2; exit 2; }
. "/etc/mkinitcpio.d/$2.preset"
release=$ALL_kver; out=$default_image
[ -e "/usr/lib/modules/$release/modules.dep" ] || depmod "$release"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/dev" "$work/proc" "$work/sys" "$work/modules" "$work/newroot"
cp /usr/bin/busybox "$work/bin/busybox"; install -m755 /usr/share/ka-qemu/init "$work/init"
mknod -m 600 "$work/dev/console" c 5 1; : > "$work/modules.order"
modprobe -S "$release" -a --show-depends MODULES | while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    name=$(basename "$path")
    case "$name" in
        *.xz) name=${name%.xz}; busybox unxz -c "$path" > "$work/modules/$name" ;;
        *) cp "$path" "$work/modules/$name" ;;
    esac
    grep -qx "$name" "$work/modules.order" || echo "$name" >> "$work/modules.order"
done
(cd "$work" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -9n > "$out.ka-new"
sync "$out.ka-new"; mv "$out.ka-new" "$out"
echo "ka-mkinitramfs: $out for $release ($(wc -l < "$work/modules.order") modules)"
"""

#: busybox applets the host uses where Debian's minimal set has no program of its own
APPLETS = ["init", "reboot", "poweroff", "halt", "ip", "mount", "umount", "hostname", "sh"]


def configure(root: Path, keys: Path, release: str) -> None:
    """Users, init, sshd with the pinned host key, root's login key, fstab, extlinux.conf."""
    etc = root / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\n")
    os.chmod(etc / "shadow", 0o640)
    (etc / "hostname").write_text("ka-qemu\n")
    (etc / "fstab").write_text("/dev/vda1 / ext4 rw 0 1\n")
    (etc / "inittab").write_text(INITTAB)
    (etc / "ka-rc").write_text(RC)
    os.chmod(etc / "ka-rc", 0o755)
    for applet in APPLETS:
        link = root / "usr/sbin" / applet if applet != "sh" else root / "usr/bin/sh"
        if not link.exists() or applet == "init":
            link.unlink(missing_ok=True)
            link.symlink_to("/usr/bin/busybox" if applet != "sh" else "dash")
    ssh = etc / "ssh"
    ssh.mkdir(exist_ok=True)
    (ssh / "sshd_config").write_text(SSHD_CONFIG)
    for suffix in ("", ".pub"):
        shutil.copy(keys / f"ssh_host_ed25519_key{suffix}", ssh / f"ssh_host_ed25519_key{suffix}")
    os.chmod(ssh / "ssh_host_ed25519_key", 0o600)
    dot_ssh = root / "root/.ssh"
    dot_ssh.mkdir(parents=True, exist_ok=True)
    os.chmod(dot_ssh, 0o700)
    shutil.copy(keys / "id_ed25519.pub", dot_ssh / "authorized_keys")
    os.chmod(dot_ssh / "authorized_keys", 0o600)
    for folder in ("proc", "sys", "dev", "run", "tmp", "boot/state", "var/log", "var/lib/kernel-agent"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    write_extlinux(root, release)


def tools(root: Path) -> None:
    """pacman (its config, a keyring, the depmod hook) and the initramfs maker."""
    (root / "etc/pacman.conf").write_text(PACMAN_CONF)
    hooks = root / "etc/pacman.d/hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / "60-depmod.hook").write_text(DEPMOD_HOOK)
    for folder in ("var/lib/pacman", "var/cache/pacman/pkg", "usr/local/sbin", "usr/share/ka-qemu"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    scripts = {"ka-depmod": DEPMOD, "ka-mkinitramfs": MKINITRAMFS.replace("MODULES", " ".join(ROOT_MODULES))}
    for name, text in scripts.items():
        (root / "usr/local/sbin" / name).write_text(text)
        os.chmod(root / "usr/local/sbin" / name, 0o755)
    provided(root / "var/lib/pacman/local")
    (root / "usr/share/ka-qemu/init").write_text(INIT)
    os.chmod(root / "usr/share/ka-qemu/init", 0o755)
    # the keyring's own key, made here (gpg's files are the same on arm64): the guest only adds the
    # repository's key to it, which takes seconds under emulation instead of a key generation.  Made in a
    # short folder: gpg-agent's socket in the image's own (a long cache path) passes the 108-byte limit
    # of a socket's path, and pacman-key then leaves an empty keyring without failing.
    with tempfile.TemporaryDirectory(prefix="ka-pk-") as tmp:
        run(["pacman-key", "--gpgdir", tmp, "--init"])
        run(["gpgconf", "--homedir", tmp, "--kill", "all"])  # its agent would outlive the build
        if not any(Path(tmp, "private-keys-v1.d").iterdir()):
            raise RuntimeError("pacman-key --init made no key")
        shutil.copytree(tmp, root / "etc/pacman.d/gnupg", ignore=shutil.ignore_patterns("S.*"), dirs_exist_ok=True)


#: what a kernel package ka-build makes depends on, which Debian's packages give this host
PROVIDED = ["coreutils", "kmod", "mkinitcpio"]


def provided(local: Path) -> None:
    """A package in pacman's local database that provides :data:`PROVIDED` (files Debian's packages own)."""
    entry = local / "ka-qemu-base-1-1"
    entry.mkdir(parents=True, exist_ok=True)
    (local / "ALPM_DB_VERSION").write_text("9\n")
    (entry / "desc").write_text("%NAME%\nka-qemu-base\n\n%VERSION%\n1-1\n\n%DESC%\nwhat Debian's packages give "
                                "this host\n\n%ARCH%\nany\n\n%PROVIDES%\n" + "\n".join(PROVIDED) + "\n\n")
    (entry / "files").write_text("%FILES%\n\n")


def write_extlinux(root: Path, release: str) -> None:
    """The owner's extlinux.conf, as Debian's u-boot-menu would write it (a menu, a short timeout)."""
    conf = root / "boot/extlinux/extlinux.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"""## written by the owner of this host
menu title ka-qemu boot menu
timeout 10
default debian

label debian
\tmenu label Debian GNU/Linux, kernel {release}
\tlinux /boot/vmlinuz-{release}
\tinitrd /boot/initrd.img-{release}
\tappend root=/dev/vda1 rw console=ttyAMA0 panic=10
""")


# --- the "deb" flavour: dpkg's database, as if the packages had been installed ------------------------

#: control files dpkg keeps in /var/lib/dpkg/info (the maintainer scripts too: prerm and postrm run
#: when a package is removed or upgraded on the host)
INFO_FILES = ("md5sums", "conffiles", "preinst", "postinst", "prerm", "postrm", "triggers", "shlibs", "symbols",
              "templates", "config")


def dpkg_database(root: Path, debs: list[Path]) -> None:
    """/var/lib/dpkg/status and info/ for the extracted ``debs``, as ``dpkg --configure`` leaves them, but
    no maintainer script runs (the builder configures what they would); file triggers are registered."""
    admin = root / "var/lib/dpkg"
    for folder in ("info", "triggers", "updates"):
        (admin / folder).mkdir(parents=True, exist_ok=True)
    stanzas, file_triggers, explicit = [], [], {}  # type: ignore[var-annotated]
    for deb in debs:
        with tempfile.TemporaryDirectory() as tmp:
            stanzas.append(_dpkg_entry(root, deb, Path(tmp), file_triggers, explicit))
    (admin / "status").write_text("\n".join(stanzas))
    (admin / "available").touch()
    (admin / "triggers/File").write_text("".join(f"{line}\n" for line in sorted(file_triggers)))
    for trigger, who in explicit.items():
        (admin / "triggers" / trigger).write_text("".join(f"{w}\n" for w in who))
    (admin / "triggers/Unincorp").touch()


def _dpkg_entry(root: Path, deb: Path, ctrl: Path, file_triggers: list[str], explicit: dict[str, list[str]]) -> str:
    """One package's info/ files and trigger interests; its status stanza."""
    from ka.packages.files import deb_control, members

    info = root / "var/lib/dpkg/info"
    run(["dpkg-deb", "--control", str(deb), str(ctrl)])
    fields = deb_control(deb)
    package = fields["Package"]
    name = f"{package}:{fields['Architecture']}" if fields.get("Multi-Arch") == "same" else package
    listed = ["/.", *("/" + m.name.rstrip("/") for m in members(deb) if not m.name.startswith("DEBIAN/"))]
    (info / f"{name}.list").write_text("\n".join(listed) + "\n")
    for part in INFO_FILES:
        if (ctrl / part).exists():
            shutil.copy2(ctrl / part, info / f"{name}.{part}")
    for line in (ctrl / "triggers").read_text().splitlines() if (ctrl / "triggers").exists() else []:
        kind, _, trigger = line.partition(" ")
        if kind.startswith("interest"):
            who = package + ("/noawait" if kind == "interest-noawait" else "")
            if trigger.strip().startswith("/"):
                file_triggers.append(f"{trigger.strip()} {who}")
            else:
                explicit.setdefault(trigger.strip(), []).append(who)
    lines = (ctrl / "control").read_text().rstrip("\n").splitlines()
    lines.insert(1, "Status: install ok installed")
    conffiles = [ln.strip() for ln in (ctrl / "conffiles").read_text().splitlines() if ln.strip()] \
        if (ctrl / "conffiles").exists() else []
    if conffiles:
        lines.append("Conffiles:")
        for conf in conffiles:
            path = conf.removeprefix("remove-on-upgrade ").strip()
            target = root / path.lstrip("/")
            digest = hashlib.md5(target.read_bytes()).hexdigest() if target.is_file() else "newconffile"
            lines.append(f" {path} {digest}")
    return "\n".join(lines) + "\n"


def debian(root: Path, release: str) -> None:
    """What the packages' maintainer scripts would set up, and the owner's settings: apt (its user and
    folders), u-boot-menu writing extlinux.conf like write_extlinux, initramfs-tools made light.  The
    kernel in the image keeps this builder's initramfs (initramfs-tools has no record of it, so
    ``update-initramfs -u`` leaves it); kernels installed later get initramfs-tools' one."""
    with open(root / "etc/passwd", "a") as fh:
        fh.write("_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n")
    with open(root / "etc/shadow", "a") as fh:
        fh.write("_apt:*:19000:0:99999:7:::\n")
    for folder in ("var/cache/apt/archives/partial", "var/lib/apt/lists/partial", "etc/apt/keyrings",
                   "etc/apt/sources.list.d", "var/lib/initramfs-tools", "var/log/apt"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list").write_text("# the fleet's repositories are in sources.list.d\n")
    (root / "etc/default/u-boot").write_text(U_BOOT_DEFAULTS)
    (root / "etc/initramfs-tools/initramfs.conf").write_text(INITRAMFS_CONF)
    (root / "etc/initramfs-tools/modules").write_text("".join(f"{m}\n" for m in ROOT_MODULES))
    # the alternatives maintainer scripts would make, that initramfs-tools and apt use
    for link, target in (("usr/bin/awk", "/etc/alternatives/awk"), ("etc/alternatives/awk", "/usr/bin/mawk")):
        if not (root / link).exists() and not (root / link).is_symlink():
            (root / link).parent.mkdir(parents=True, exist_ok=True)
            (root / link).symlink_to(target)
    (root / "etc/dpkg/dpkg.cfg.d/ka-modules").write_text(modules_filter(root, release))
    conf = root / "boot/extlinux/extlinux.conf"
    conf.write_text(u_boot_menu_conf([release]))


def modules_filter(root: Path, release: str) -> str:
    """dpkg's path filter for kernel packages: PACKAGE_MODULES and theirs (their paths in the image's kernel)
    only, as trim_modules keeps: unpacking Debian's 4,000 modules and their depmod take minutes under TCG."""
    shown = run(["modprobe", "-d", str(root), "-S", release, "-a", "--show-depends", *PACKAGE_MODULES]).stdout
    base = root / "usr/lib/modules" / release
    wanted = sorted({str(Path(line.split()[1]).resolve().relative_to(base.resolve())).split(".ko")[0]
                     for line in shown.splitlines() if line.startswith("insmod ")})
    lines = ["# written by the owner of this host: kernel packages keep the modules a QEMU virt machine needs"]
    for prefix in ("/lib/modules", "/usr/lib/modules"):
        lines.append(f"path-exclude={prefix}/*/kernel/*")
        lines += [f"path-include={prefix}/*/{module}.ko*" for module in wanted]
    return "\n".join(lines) + "\n"


def u_boot_menu_conf(releases: list[str]) -> str:
    """extlinux.conf as bookworm's u-boot-update writes it with U_BOOT_DEFAULTS (newest kernel first, l0)."""
    text = """## /boot/extlinux/extlinux.conf
##
## IMPORTANT WARNING
##
## The configuration of this file is generated automatically.
## Do not edit this file manually, use: u-boot-update

default l0
menu title U-Boot menu
prompt 0
timeout 10
"""
    for number, release in enumerate(releases):
        text += f"""

label l{number}
\tmenu label Debian GNU/Linux {release}
\tlinux /boot/vmlinuz-{release}
\tinitrd /boot/initrd.img-{release}
\t
\t
\tappend root=/dev/vda1 rw console=ttyAMA0 panic=10"""
    return text + "\n"


# --- the initramfs ------------------------------------------------------------------------------

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/modules/$m" || echo "initramfs: insmod $m failed"; done
root=/dev/vda1
for arg in $(cat /proc/cmdline); do case "$arg" in root=/dev/*) root="${arg#root=}";; esac; done
n=0; while [ ! -b "$root" ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
mkdir -p /newroot
if ! mount -t ext4 -o rw "$root" /newroot; then
    echo "initramfs: cannot mount $root on $(uname -r): the kernel panics and reboots (panic=)"
    exit 1
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""


def module_order(root: Path, release: str, wanted: list[str]) -> list[str]:
    """The module files (relative to the release's folder) for ``wanted`` and their dependencies, in load order."""
    base = root / "usr/lib/modules" / release
    deps: dict[str, list[str]] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        name, _, rest = line.partition(":")
        deps[name] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        if path not in order:
            order.append(path)
    for name in wanted:
        if name in by_name:  # built in, else
            visit(by_name[name])
    return order


def initramfs(root: Path, release: str, work: Path) -> bytes:
    """A newc cpio (gzip) with busybox, the root file system's modules and an /init that mounts it."""
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("bin", "dev", "proc", "sys", "modules", "newroot"):
        (work / sub).mkdir(parents=True)
    shutil.copy(root / "usr/bin/busybox", work / "bin/busybox")
    (work / "init").write_text(INIT)
    os.chmod(work / "init", 0o755)
    os.mknod(work / "dev/console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))  # the initramfs's messages are seen
    order = module_order(root, release, ROOT_MODULES)
    for rel in order:
        shutil.copy(root / "usr/lib/modules" / release / rel, work / "modules" / Path(rel).name)
    (work / "modules.order").write_text("".join(Path(rel).name + "\n" for rel in order))
    files = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    cpio = _cpio(work, files)
    shutil.rmtree(work)
    return cpio


def _cpio(work: Path, files: list[str]) -> bytes:
    res = subprocess.run(["bsdtar", "--format", "newc", "--uid", "0", "--gid", "0", "-cf", "-", "-n", *files],
                         cwd=work, capture_output=True, check=True)
    return subprocess.run(["gzip", "-9n"], input=res.stdout, capture_output=True, check=True).stdout


# --- the disk -----------------------------------------------------------------------------------

def make_disk(root: Path, disk: Path, work: Path) -> None:
    """MBR; partition 1 (bootable, ext4) from ``root``; partition 2 FAT for boot state."""
    part1, part2 = work / "part1.img", work / "part2.img"
    run(["mkfs.ext4", "-q", "-F", "-L", "ROOT", "-d", str(root), str(part1), f"{ROOT_MB}M"])
    run(["mkfs.vfat", "-n", "STATE", "-C", str(part2), str(STATE_MB * 1024)])
    with open(disk, "wb") as fh:
        fh.truncate((1 + ROOT_MB + STATE_MB + 1) << 20)
    table = (f"label: dos\nstart=2048, size={ROOT_MB * 2048}, type=83, bootable\n"
             f"start={(1 + ROOT_MB) * 2048}, size={STATE_MB * 2048}, type=c\n")
    run(["sfdisk", "--quiet", str(disk)], input=table)
    for part, start in ((part1, 1), (part2, 1 + ROOT_MB)):
        run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={start}", "conv=notrunc,sparse", "status=none"])
        part.unlink()


# --- the firmware's environment ---------------------------------------------------------------------

ENV_SIZE, FLASH_SIZE = 0x40000, 64 << 20  # U-Boot's env in the virt machine's second flash


def default_env() -> dict[str, str]:
    """U-Boot's built-in environment, as it lies in u-boot.bin (what ``printenv`` shows on a fresh board)."""
    data = UBOOT.read_bytes()
    start = data.index(b"bootcmd=run distro_bootcmd\0")
    end = data.index(b"\0\0", start)
    return dict(item.decode().split("=", 1) for item in data[start:end].split(b"\0"))


def board_env() -> dict[str, str]:
    """The board's environment: no boot delay, and ka-install's boot-once trial before the distro boot,
    with its state on the FAT partition (virtio 0:2), as ka/install/trial.py asks of a board's U-Boot."""
    from ka.install.trial import uboot_script

    name, _, script = uboot_script("virtio 0:2").partition("=")
    # initrd_high and fdt_high all ones (64-bit): the ramdisk and device tree stay where they are; U-Boot's
    # default (0xffffffff) copies them below its own memory at the top of RAM, and an initramfs-tools one (6 MB)
    # or the device tree has hung there after a warm reboot
    return {**default_env(), "bootdelay": "0", "initrd_high": "0xffffffffffffffff",
            "fdt_high": "0xffffffffffffffff", name: script,
            "bootcmd": "pci enum; virtio scan; run ka_trial; run distro_bootcmd"}


def write_env(path: Path, env: dict[str, str]) -> None:
    """A flash image holding ``env`` as U-Boot stores it (CRC32, then NUL-separated name=value pairs);
    mkenvimage's format, written here so that no u-boot-tools are needed."""
    blob = b"".join(f"{k}={v}".encode() + b"\0" for k, v in sorted(env.items())) + b"\0"
    data = blob.ljust(ENV_SIZE - 4, b"\0")
    with open(path, "wb") as fh:
        fh.write(struct.pack("<I", zlib.crc32(data)) + data)
        fh.truncate(FLASH_SIZE)


# --- a running VM -------------------------------------------------------------------------------

#: one guest connection (stdin/stdout of a guestfwd ``cmd:``) relayed to 127.0.0.1:PORT
RELAY = """import os, selectors, socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ)
sel.register(sock, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj == 0:
            data = os.read(0, 65536)
            if not data:
                sel.unregister(0)
                sock.shutdown(socket.SHUT_WR)
            else:
                sock.sendall(data)
        else:
            data = sock.recv(65536)
            if not data:
                sys.exit(0)
            os.write(1, data)
"""


def http_forward(port: int, folder: Path, guest: str = "10.0.2.100:80") -> str:
    """A guestfwd rule: the guest's connections to ``guest`` reach 127.0.0.1:``port`` (an apt repository).
    ``cmd:`` starts the relay per connection; a ``tcp:`` chardev would connect once, when QEMU starts."""
    relay = folder / "relay.py"
    folder.mkdir(parents=True, exist_ok=True)
    relay.write_text(RELAY)
    return f"tcp:{guest}-cmd:{sys.executable} {relay} {port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Vm:
    """One VM on a qcow2 overlay of an :class:`Image`; ssh on 127.0.0.1:``port``."""

    image: Image
    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0
    #: guest addresses forwarded to the host (:func:`http_forward`): restrict=on lets the guest reach nothing
    #: else, 10.0.2.2 (the host) included
    guestfwd: list[str] = field(default_factory=list)

    @property
    def serial(self) -> Path:
        return self.folder / "serial.log"

    @property
    def overlay(self) -> Path:
        return self.folder / "vm.qcow2"

    def command(self) -> list[str]:
        # One vCPU: a CI run once hung on a boot of the guest's own 6.1 kernel, CPU0 in stop_machine for
        # 300 s (soft lockup in multi_cpu_stop) while CPU1 never ran its stopper thread and never reported
        # a lockup of its own: asleep in WFI, its wakeup IPI lost in QEMU 7.2's multi-threaded TCG.  With
        # one vCPU there is no IPI to lose and stop_machine waits for no other CPU; boots to ssh take the
        # same 6 s (measured), and the host keeps a core for ssh and the build host.
        return ["qemu-system-aarch64", "-M", "virt", "-cpu", "max,pauth-impdef=on", "-smp", "1", "-m", "1024",
                "-display", "none", "-nodefaults", "-no-user-config", "-bios", str(UBOOT),
                "-drive", f"if=pflash,format=raw,unit=1,file={self.folder / 'env.img'}",
                "-drive", f"if=none,id=hd0,file={self.overlay},format=qcow2,cache=unsafe",
                "-device", "virtio-blk-pci,drive=hd0",
                "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22"
                + "".join(f",guestfwd={rule}" for rule in self.guestfwd),
                "-device", "virtio-net-pci,netdev=n0,romfile=", "-device", "virtio-rng-pci",
                "-chardev", f"file,id=s0,path={self.serial},append=on", "-serial", "chardev:s0"]

    def start(self) -> Vm:
        """Boot (the serial console is appended to ``serial``); a fresh overlay on the first start."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.overlay.exists():
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.image.disk),
                 str(self.overlay)])
            write_env(self.folder / "env.img", board_env())
        with open(self.folder / "qemu.err", "ab") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)
        self.boots += 1
        return self

    def wait_ssh(self, timeout: float = 240) -> float:
        """Seconds until the guest's sshd sends its banner (slirp accepts connections before that)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"qemu exited ({self.proc.returncode}): {self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=3) as s:
                    s.settimeout(5)
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"no ssh on 127.0.0.1:{self.port} after {timeout:g}s; console: {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        text = self.serial.read_text(errors="replace") if self.serial.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Power off: the process is killed, as pulling the plug (the overlay is cache=unsafe)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None

    def known_hosts(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.image.host_key}\n"

    def join(self, ssh_config: Path, known_hosts: Path, name: str) -> None:
        """Make the VM host ``name`` of an ssh config, its host key pinned in ``known_hosts``."""
        with open(ssh_config, "a") as fh:
            fh.write(self.ssh_config(name))
        with open(known_hosts, "a") as fh:
            fh.write(self.known_hosts())

    def ssh_config(self, name: str) -> str:
        return (f"Host {name}\n  HostName 127.0.0.1\n  Port {self.port}\n  User root\n"
                f"  IdentityFile {self.image.client_key}\n")


def trust_key(settings: object, name: str, gnupghome: Path, fingerprint: str) -> None:
    """Make the guest's pacman trust a signing key of ``gnupghome`` (``settings``: ka.io.ssh.SshSettings reaching it
    as ``name``): what pacman-key --add and --lsign-key do (Debian's pacman-key needs makepkg's scripts and perl)."""
    from ka.io.ssh import connect

    armored = run(["gpg", "--homedir", str(gnupghome), "--export", "--armor", fingerprint]).stdout.encode()
    with connect(settings, name) as host:  # type: ignore[arg-type]
        with host.sftp.open("/tmp/fleet-key.asc", "wb") as fh:
            fh.write(armored)
        gpg = ["gpg", "--homedir", "/etc/pacman.d/gnupg", "--batch", "--yes"]
        host.run([*gpg, "--import", "/tmp/fleet-key.asc"], timeout=120)
        host.run([*gpg, "--quick-lsign-key", fingerprint], timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["build", "boot"])
    parser.add_argument("--folder", type=Path, default=Path("qemu-host"), help="the VM's overlay, console log")
    args = parser.parse_args(argv)
    img = image()
    print(json.dumps({k: v for k, v in img.info.items() if k not in ("versions", "builder")}))
    if args.action == "build":
        return 0
    vm = Vm(img, args.folder.resolve()).start()
    try:
        took = vm.wait_ssh()
        known = args.folder / "known_hosts"
        known.write_text(vm.known_hosts())
        print(f"ssh answered after {took:.0f}s: ssh -o UserKnownHostsFile={known} -i {img.client_key} "
              f"-p {vm.port} root@127.0.0.1   (console: {vm.serial}; Ctrl-C stops the VM)")
        assert vm.proc is not None
        vm.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        vm.stop()
    return 0


# --- a real kernel for the host, as a fleet kernel package ----------------------------------------

#: the fleet's baseline release, as Debian builds it for arm64 (from the security archive)
KERNEL_DEB = "linux-image-6.12.117+deb12-arm64"
#: the modules the package keeps of Debian's 3,000: what this machine needs (all of them make the
#: package four times bigger and its install under emulation minutes slower)
PACKAGE_MODULES = [*ROOT_MODULES, "virtio_net", "virtio_rng", "vfat", "nls_cp437", "nls_ascii", "nls_utf8"]


def debian_kernel(name: str = KERNEL_DEB, cache: Path | None = None) -> Path:
    """Debian's arm64 kernel package ``name`` (downloaded once into the cache)."""
    debs = (cache or cache_dir()) / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    with open(debs / "download.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if found:
            return found[-1]
        with tempfile.TemporaryDirectory(dir=debs) as tmp:
            run(["apt-get", *apt(Path(tmp)), "download", name], cwd=tmp)
            got = list(Path(tmp).glob(f"{name}_*.deb"))
            if len(got) != 1:
                raise RuntimeError(f"apt-get download {name} gave {got}")
            return Path(shutil.move(got[0], debs / got[0].name))


@dataclass(frozen=True)
class KernelFiles:
    """Debian's kernel laid out as a fleet kernel package holds it (what ka-build's package holds)."""

    release: str
    tarball: Path  # boot/Image, usr/lib/modules/<release>/…, etc/mkinitcpio.d/<pkgbase>.preset
    modules: int


def foreign_module(deb: Path, name: str, work: Path) -> bytes:
    """Module ``name`` (``fs/ext4/ext4.ko``) of another kernel package, xz-compressed as Debian's 6.12 are."""
    work.mkdir(parents=True, exist_ok=True)
    run(["sh", "-c", 'bsdtar -xOf "$1" "data.tar.*" | bsdtar -xf - -C "$2" --include "*/$3*"', "sh", str(deb),
         str(work), name])
    found = [p for p in work.rglob(Path(name).name + "*") if p.is_file()]
    if len(found) != 1:
        raise RuntimeError(f"{deb.name}: expected one {name}, found {found}")
    data = found[0].read_bytes()
    return data if found[0].suffix == ".xz" else lzma.compress(data, check=lzma.CHECK_CRC32)


def kernel_files(deb: Path, pkgbase: str, work: Path, ext4: bytes | None = None) -> KernelFiles:
    """The package's files from Debian's ``deb``; ``ext4``: another kernel's ext4 module in its place (a
    package built wrongly: depmod reads it, but this kernel refuses it, so the initramfs cannot mount the
    root file system, /init gives up and the kernel panics)."""
    shutil.rmtree(work, ignore_errors=True)
    data, payload = work / "data", work / "payload"
    data.mkdir(parents=True)
    run(["sh", "-c", 'bsdtar -xOf "$1" "data.tar.*" | bsdtar -xf - -C "$2"', "sh", str(deb), str(data)])
    release = _kernel_release(data)
    run(["depmod", "-b", str(data), release])
    shown = run(["modprobe", "-d", str(data), "-S", release, "-a", "--show-depends", *PACKAGE_MODULES]).stdout
    chosen = list(dict.fromkeys(line.split()[1] for line in shown.splitlines() if line.startswith("insmod ")))
    src = data / "lib/modules" / release
    dst = payload / "usr/lib/modules" / release
    for path in chosen:
        rel = Path(path).relative_to(src)  # modprobe -d names them under the tree
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
        if ext4 is not None and rel.name.startswith("ext4.ko"):
            (dst / rel).write_bytes(ext4)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    (dst / "pkgbase").write_text(pkgbase + "\n")
    (payload / "boot").mkdir()
    shutil.copy2(data / f"boot/vmlinuz-{release}", payload / "boot/Image")
    preset = payload / f"etc/mkinitcpio.d/{pkgbase}.preset"
    preset.parent.mkdir(parents=True)
    preset.write_text(f"ALL_kver=\"{release}\"\nPRESETS=('default')\ndefault_image=\"/boot/initramfs-{pkgbase}.img\"\n")
    tarball = work / f"{pkgbase}-files.tar"
    run(["bsdtar", "-cf", str(tarball), "-C", str(payload), "--uid", "0", "--gid", "0", "boot", "etc", "usr"])
    shutil.rmtree(data)
    shutil.rmtree(payload)
    return KernelFiles(release, tarball, len(chosen))


def kernel_pkgbuild(pkgbase: str, pkgver: str, pkgrel: int, files: KernelFiles) -> str:
    """A PKGBUILD that packages ``files`` as the host's kernel package (arch aarch64, nothing stripped)."""
    return f"""pkgname={pkgbase}
pkgver={pkgver}
pkgrel={pkgrel}
pkgdesc="Debian's arm64 kernel {files.release}, as a fleet host's kernel package"
arch=(aarch64)
license=(GPL-2.0-only)
options=(!strip !debug)
source=({files.tarball.name})
noextract=({files.tarball.name})
sha256sums=(SKIP)
package() {{
  bsdtar -xf "$srcdir/{files.tarball.name}" -C "$pkgdir"
}}
"""


if __name__ == "__main__":
    sys.exit(main())
