"""A small generated kernel git tree and real patches against it, for tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: Debian's linux-source-6.12: the real Linux 6.12 tests import (``ka baseline import``)
TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
BASE_TAG = "v6.12.0"
NEXT_TAG = "v6.12.1"  # point_release(): goodix.c fixed upstream where the goodix patch changes it
GOODIX = "drivers/input/touchscreen/goodix.c"
ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str, data: bytes | None = None) -> bytes:
    """Run git in ``cwd`` with a fixed identity; fail loudly."""
    import os

    return subprocess.run(["git", "-C", str(cwd), *args], input=data, capture_output=True,
                          check=True, env={**os.environ, **ENV}).stdout


def _lines(prefix: str, n: int) -> str:
    return "".join(f"{prefix} line {i}\n" for i in range(1, n + 1))


#: A stand-in for the kernel's build: the same targets and outputs (an Image, a module, a device
#: tree; modules_install's absolute build and source links), made from the tree's files at once.
#: A "#error" in goodix.c is a compile error.
MAKEFILE = """VERSION = 6
PATCHLEVEL = 12
SUBLEVEL = 0
EXTRAVERSION =
NAME = Baby Opossum Posse

ARCH ?= arm64
CONFIG_LOCALVERSION := $(shell sed -n 's/^CONFIG_LOCALVERSION="\\(.*\\)"$$/\\1/p' .config 2>/dev/null)
KERNELRELEASE := $(VERSION).$(PATCHLEVEL).$(SUBLEVEL)$(EXTRAVERSION)$(CONFIG_LOCALVERSION)$(LOCALVERSION)
BOOT := arch/$(ARCH)/boot
MODULE := drivers/input/touchscreen/goodix.ko
DTB := arch/arm64/boot/dts/rockchip/rk3566-pinetab2.dtb

.PHONY: kernelrelease defconfig olddefconfig syncconfig Image modules dtbs modules_install dtbs_install
kernelrelease:
\t@echo $(KERNELRELEASE)
defconfig:
\tcp arch/arm64/configs/defconfig .config
olddefconfig:
\t@test -f .config || cp arch/arm64/configs/defconfig .config
\t@grep -q '^CONFIG_' .config
syncconfig:
\t@true  # this build reads .config itself: there is no include/config/auto.conf to write
Image:
\t@if grep -n '#error' drivers/input/touchscreen/goodix.c; then echo 'goodix.c: error: #error' >&2; exit 1; fi
\tmkdir -p $(BOOT)
\tprintf 'Linux version %s (kernel-agent test build)\\n' $(KERNELRELEASE) > $(BOOT)/Image
\tcat .config arch/arm64/configs/defconfig drivers/staging/Kconfig >> $(BOOT)/Image
\tprintf 'ffffffc080000000 T _text\\n' > System.map
modules:
\tcat drivers/input/touchscreen/goodix.c include/linux/mmc/sdio_ids.h > $(MODULE)
\tprintf '0x00000000\\tprintk\\tvmlinux\\tEXPORT_SYMBOL\\t\\n' > Module.symvers
dtbs:
\tcat arch/arm64/boot/dts/rockchip/rk3566-pinetab2.dtsi > $(DTB)
modules_install:
\tinstall -Dm644 $(MODULE) $(INSTALL_MOD_PATH)/lib/modules/$(KERNELRELEASE)/kernel/$(MODULE)
\techo "kernel/$(MODULE):" > $(INSTALL_MOD_PATH)/lib/modules/$(KERNELRELEASE)/modules.dep
\tln -sfn $(CURDIR) $(INSTALL_MOD_PATH)/lib/modules/$(KERNELRELEASE)/build
\tln -sfn $(CURDIR) $(INSTALL_MOD_PATH)/lib/modules/$(KERNELRELEASE)/source
dtbs_install:
\tinstall -Dm644 $(DTB) $(INSTALL_DTBS_PATH)/rockchip/rk3566-pinetab2.dtb
"""

#: merge_config.sh -m as the kernel's does it: a fragment's value for a symbol replaces the base's
MERGE_CONFIG = """#!/bin/sh
while [ "${1#-}" != "$1" ]; do shift; done
base=$1; shift
tmp=$(mktemp)
cp "$base" "$tmp"
for f in "$@"; do
    for sym in $(sed -n 's/^\\(CONFIG_[A-Za-z0-9_]*\\)=.*/\\1/p' "$f") \\
               $(sed -n 's/^# \\(CONFIG_[A-Za-z0-9_]*\\) is not set$/\\1/p' "$f"); do
        sed -i "/^$sym=/d; /^# $sym is not set$/d" "$tmp"
    done
    cat "$f" >> "$tmp"
done
mv "$tmp" .config
"""

#: install-extmod-build as the kernel's does it, for this tree: what building a module needs, into $1
INSTALL_EXTMOD_BUILD = """#!/bin/sh
set -eu
destdir=$1
mkdir -p "$destdir"
{ echo Makefile; find "arch/${SRCARCH}" -maxdepth 1 -name 'Makefile*'; find include scripts -type f
  echo Module.symvers; } |
    tar -c -f - -T - | tar -xf - -C "$destdir"
[ "${CC}" = "${HOSTCC}" ] || echo "Rebuilding host programs with ${CC}..."
"""

#: the symbols the test configs ask for, as the kernel's Kconfig files define them
KCONFIG = "config LOCALVERSION\n\tstring \"Local version\"\n\nconfig LOCALVERSION_AUTO\n\tbool\n" + (
    "\nconfig MODULES\n\tbool \"modules\"\n") + "".join(
    f"\nconfig OPTION_{i}\n\ttristate \"option {i}\"\n" for i in range(1, 51))

BASE_FILES = {
    "Makefile": MAKEFILE,
    "Kconfig": KCONFIG,
    "scripts/kconfig/merge_config.sh": MERGE_CONFIG,
    "scripts/package/install-extmod-build": INSTALL_EXTMOD_BUILD,
    "arch/arm64/Makefile": "# arm64 make\n",
    "arch/arm64/configs/defconfig": "".join(f"CONFIG_OPTION_{i}=y\n" for i in range(1, 51)),
    "arch/arm64/boot/dts/rockchip/rk3566-pinetab2.dtsi": _lines("\tdts", 40),
    "drivers/staging/Kconfig": _lines("# staging kconfig", 20),
    "drivers/staging/Makefile": _lines("# staging make", 20),
    "drivers/input/touchscreen/goodix.c": _lines("/* goodix */", 60),
    "include/linux/mmc/sdio_ids.h": _lines("#define SDIO_ID", 30),
}


def _replace_line(text: str, number: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[number - 1] = new
    return "".join(lines)


def _insert_after(text: str, number: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines.insert(number, new)
    return "".join(lines)


@dataclass
class SmallKernel:
    """A bare kernel tree tagged ``v6.12.0`` and named patches that apply (or not) on it."""

    bare: Path
    work: Path
    patches: dict[str, bytes] = field(default_factory=dict)

    def diff(self, subject: str, edits: dict[str, str | None], on: list[str] = ()) -> bytes:
        """A format-patch style patch of ``edits`` made on top of the patches named in ``on``."""
        git(self.work, "checkout", "-q", "--detach", BASE_TAG)
        for name in on:
            git(self.work, "apply", "--index", "-", data=self.patches[name])
        if on:
            git(self.work, "commit", "-qm", "base for the next patch")
        base = {p: (self.work / p).read_text() if (self.work / p).exists() else None for p in edits}
        for path, new in edits.items():
            target = self.work / path
            if new is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(new(base[path]) if callable(new) else new)
        git(self.work, "add", "-A")
        body = git(self.work, "diff", "--cached", "--full-index")
        git(self.work, "reset", "-q", "--hard")
        git(self.work, "clean", "-qfd")
        head = f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n" \
               f"From: Test <t@example.invalid>\nSubject: [PATCH] {subject}\n\n{subject}.\n---\n\n"
        return head.encode() + body


def build_small_kernel(root: Path) -> SmallKernel:
    """Create the tree and the standard patch set under ``root``."""
    work = root / "work"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "master")
    for path, text in BASE_FILES.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "Linux 6.12")
    git(work, "tag", BASE_TAG)
    bare = root / "kernel.git"
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    k = SmallKernel(bare=bare, work=work)
    _standard_patches(k)
    return k


def _standard_patches(k: SmallKernel) -> None:
    dts = "arch/arm64/boot/dts/rockchip/rk3566-pinetab2.dtsi"
    p = k.patches
    p["defconfig"] = k.diff("arm64: defconfig: enable option 10 as module",
                            {"arch/arm64/configs/defconfig": lambda t: _replace_line(t, 10, "CONFIG_OPTION_10=m\n")})
    p["dts-wifi"] = k.diff("pinetab2: add wifi", {dts: lambda t: _insert_after(t, 20, "\twifi@1 { };\n")})
    p["dts-wake"] = k.diff("pinetab2: wifi wake", {dts: lambda t: t.replace("\twifi@1 { };\n",
                                                                            "\twifi@1 { wake; };\n")},
                           on=["dts-wifi"])
    p["bes-new"] = k.diff("staging: bes2600: new driver",
                          {"drivers/staging/bes2600/Kconfig": "config BES2600\n\ttristate \"BES2600\"\n"})
    p["bes-hook"] = k.diff("staging: hook bes2600", {"drivers/staging/Kconfig": lambda t: t + "source bes2600\n"})
    p["goodix"] = k.diff("goodix: longer delay", {"drivers/input/touchscreen/goodix.c":
                                                  lambda t: _replace_line(t, 30, "/* goodix */ line 30 delay\n")})
    p["sdio"] = k.diff("mmc: sdio ids",
                       {"include/linux/mmc/sdio_ids.h": lambda t: _insert_after(t, 5, "#define BES\n")})
    # Broken on purpose: the kinds of failure the baseline check must name.
    p["goodix-two-hunks"] = k.diff("goodix: two places", {"drivers/input/touchscreen/goodix.c": lambda t: _replace_line(
        _replace_line(t, 5, "/* goodix */ line 5 changed\n"), 50, "/* goodix */ line 50 changed\n")})
    p["ctx-mismatch"] = p["goodix-two-hunks"].replace(b" /* goodix */ line 48\n", b" /* goodix */ line 48 (other)\n")
    p["missing-file"] = p["goodix"].replace(b"drivers/input/touchscreen/goodix.c", b"drivers/input/nope.c")
    p["file-exists"] = k.diff("add a Makefile that exists", {"drivers/staging/bes2600/Kconfig": "x\n"}).replace(
        b"drivers/staging/bes2600/Kconfig", b"drivers/staging/Makefile")
    p["malformed"] = b"Subject: [PATCH] broken\n\ndiff --git a/Makefile b/Makefile\n--- a/Makefile\n" \
                     b"+++ b/Makefile\n@@ -1,3 +1,3 @@\n garbage\n"
    # Applies, but does not build (the stand-in Makefile stops at an #error).
    p["broken-build"] = k.diff("goodix: a change that does not compile", {
        "drivers/input/touchscreen/goodix.c": lambda t: _insert_after(t, 3, "#error broken\n")})


def point_release(k: SmallKernel, root: Path) -> Path:
    """A copy of the small tree (``<root>/kernel.git``, its work tree ``<root>/work``) with ``v6.12.1``: line
    30 of goodix.c (which the goodix patch changes) fixed upstream, so that patch no longer applies;
    everything else as in v6.12.0."""
    tree, work = root / "kernel.git", root / "work"
    root.mkdir(parents=True, exist_ok=True)
    git(root, "clone", "-q", "--bare", str(k.bare), str(tree))
    git(root, "clone", "-q", str(tree), str(work))
    git(work, "checkout", "-q", "--detach", BASE_TAG)
    (work / GOODIX).write_text(_replace_line((work / GOODIX).read_text(), 30, "/* goodix */ line 30 fixed upstream\n"))
    (work / "Makefile").write_text((work / "Makefile").read_text().replace("SUBLEVEL = 0", "SUBLEVEL = 1"))
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "Linux 6.12.1")
    git(work, "tag", NEXT_TAG)
    git(work, "push", "-q", "origin", NEXT_TAG)
    return tree


def write_fleet(root: Path, hosts: dict[str, str], files: dict[str, bytes | str], commit: bool = True) -> Path:
    """A kernel-agent repository at ``root``: manifests, files, and (with ``commit``) one git commit."""
    (root / "fleet").mkdir(parents=True)
    (root / "patches").mkdir()
    for host, text in hosts.items():
        (root / "fleet" / f"{host}.yaml").write_text(text)
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
    if commit:
        git(root, "init", "-q", "-b", "main")
        git(root, "add", "-A")
        git(root, "commit", "-qm", "fleet")
    return root
