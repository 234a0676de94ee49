"""Our pacman packages against the kernel's own ``make pacman-pkg`` for the same tree and config.

Both are built from the same patched tree and final ``.config``; their file lists must agree but for
what kernel-agent does on purpose, each a documented difference (README, "Headers that build modules"):

- the image: ours in ``/boot/<image>`` (what U-Boot's extlinux loads), the kernel's in
  ``/usr/lib/modules/<release>/vmlinuz`` (systemd's place, for x86 hibernation);
- the device trees: ours in ``/boot/dtbs`` (extlinux's ``fdtdir``), the kernel's in ``…/<release>/dtb``;
- the headers: ours in ``/usr/src/<pkgbase>`` with ``…/<release>/build`` a relative link to them, the
  kernel's the other way round (the same files, the same relative link);
- ours only: the mkinitcpio preset (the kernel's package leaves the initramfs to the user), the
  kernel-agent record (``…/<release>/kernel-agent``), and depmod's ``modules.*`` indexes (the kernel's
  ``make pacman-pkg`` runs modules_install with ``DEPMOD=true``; pacman's depmod hook writes them).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

#: package metadata, not files
_META = {".PKGINFO", ".BUILDINFO", ".MTREE", ".INSTALL"}


def theirs_as_ours(name: str, pkgbase: str, upstream: str, release: str, image: str = "Image") -> str:
    """A path of the kernel's own packages, where ours keeps the same file."""
    modules = f"usr/lib/modules/{release}"
    rules = [(f"{modules}/build/", f"usr/src/{pkgbase}/"), (f"{modules}/build", f"usr/src/{pkgbase}"),
             (f"usr/src/{upstream}", f"{modules}/build"), (f"{modules}/vmlinuz", f"boot/{image}"),
             (f"{modules}/dtb/", "boot/dtbs/"), (f"{modules}/dtb", "boot/dtbs")]
    for old, new in rules:
        if name == old or (old.endswith("/") and name.startswith(old)):
            return new + name[len(old):]
    return name


def ours_only_on_purpose(name: str, pkgbase: str, release: str) -> bool:
    """A path only our packages have, by design (the module's docstring lists why)."""
    modules = f"usr/lib/modules/{release}"
    return (name in (f"etc/mkinitcpio.d/{pkgbase}.preset", f"{modules}/kernel-agent", "etc", "etc/mkinitcpio.d",
                     "boot")
            or bool(re.fullmatch(re.escape(modules) + r"/modules\.[a-z.]+", name)))


def compare(ours: set[str], theirs: set[str], pkgbase: str, upstream: str, release: str) -> tuple[list[str], list[str]]:
    """What the kernel's packages hold that ours lack (must be empty), and what ours hold beyond the
    documented differences (must be empty)."""
    mapped = {theirs_as_ours(n.rstrip("/"), pkgbase, upstream, release) for n in theirs if n not in _META}
    ours = {n.rstrip("/") for n in ours if n not in _META}
    missing = sorted(mapped - ours)
    extra = sorted(n for n in ours - mapped if not ours_only_on_purpose(n, pkgbase, release))
    return missing, extra


def listing(package: Path) -> set[str]:
    """A package's member names, as bsdtar lists them."""
    out = subprocess.run(["bsdtar", "-tf", str(package)], capture_output=True, text=True, check=True).stdout
    return {n for n in out.split("\n") if n}


def make_pacman_pkg(git_dir: Path, ref: str, patch: Path, config: bytes, folder: Path, user: str,
                    localversion: str = "-1") -> list[Path]:
    """The kernel's own ``make pacman-pkg`` (headers too) of ``ref`` with ``patch`` and the final ``config``,
    cross-built for arm64 in ``folder`` as ``user`` (makepkg refuses root): the packages it made."""
    src = folder / "linux"
    (folder / "cumulative.patch").write_bytes(patch.read_bytes())
    (folder / "config").write_bytes(config)
    subprocess.run(["chown", "-R", f"{user}:{user}", str(folder)], check=True)
    script = (f"set -e; mkdir -p {src}; git --git-dir={git_dir} archive {ref} | tar -x -C {src}; cd {src}; "
              "patch -Np1 -F0 -s < ../cumulative.patch; cp ../config .config; "
              f"make -s ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- LOCALVERSION={localversion} "
              "PACMAN_EXTRAPACKAGES=headers MAKEPKGOPTS='--nodeps --noprogressbar' -j$(nproc) pacman-pkg")
    res = subprocess.run(["runuser", "-u", user, "--", "sh", "-c", script], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"make pacman-pkg failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    # makepkg's PKGEXT comes from the build machine's makepkg.conf (Debian's: .pkg.tar.gz)
    made = sorted(src.glob("linux-upstream*.pkg.tar*"))
    if not made:
        raise RuntimeError(f"make pacman-pkg exited 0 but left no linux-upstream package in {src}")
    return made
