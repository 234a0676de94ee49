"""The package formats kernel-agent builds and installs, as objects every verb asks what differs.

One vocabulary: ``package.format`` names the format (``pacman``, ``deb``); ``install.format``
names the package manager that installs it on the host (``pacman``, ``apt``), and each word maps
to one :class:`PackageFormat` here.  What a format is (its names, files, default architecture,
initramfs maker, repository, build tool, file ending, whether a kernel goes in beside the running
one) lives in these objects; what each verb does with it (render, build, publish, read, install,
the way back) lives in that verb's own per-format table, keyed by the format's name
(tests/unit/test_formats.py checks that every table has every format).  No other module compares
a format's name or a package file's ending.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PackageFormat:
    """One package format."""

    name: str  # package.format
    installer: str  # install.format: the package manager on the host
    arch: str  # the default architecture name (pacman's CARCH, dpkg's)
    initramfs: str  # the initramfs maker its hosts use by default
    repository_key: str  # the section of fleet/infra.yaml that names its repository
    build_tool: str  # makepkg, dpkg-buildpackage
    beside: bool  # a kernel is a package of its own release, installed beside the running one (not in its place)
    extension: str  # the package file's ending

    def kernel_package(self, pkgbase: str, release: str) -> str:
        """The package that holds the kernel ``release``."""
        return f"linux-image-{release}" if self.beside else pkgbase

    def package_names(self, pkgbase: str, release: str) -> list[str]:
        """The packages a build makes: the kernel's, then the headers'."""
        if self.beside:
            return [f"linux-image-{release}", f"linux-headers-{release}"]
        return [pkgbase, f"{pkgbase}-headers"]

    def file_name(self, name: str, version: str, arch: str) -> str:
        """A package's file name."""
        if self.beside:
            return f"{name}_{version}_{arch}{self.extension}"
        return f"{name}-{version}-{arch}{self.extension}"


PACMAN = PackageFormat(name="pacman", installer="pacman", arch="aarch64", initramfs="mkinitcpio",
                       repository_key="repository", build_tool="makepkg", beside=False, extension=".pkg.tar.zst")
DEB = PackageFormat(name="deb", installer="apt", arch="arm64", initramfs="initramfs-tools",
                    repository_key="apt_repository", build_tool="dpkg-buildpackage", beside=True, extension=".deb")
FORMATS = {f.name: f for f in (PACMAN, DEB)}  # by package.format
INSTALLERS = {f.installer: f for f in (PACMAN, DEB)}  # by install.format


def of_file(name: str) -> PackageFormat:
    """The format of a package file, by its name: a ``.deb``, else pacman's (whose reader says so when the
    file is not a zstd tar)."""
    return named(name) or PACMAN


def named(name: str) -> PackageFormat | None:
    """The format a file name ends in (``.pkg.tar.zst``, ``.deb``); None when it names no package."""
    return next((f for f in (PACMAN, DEB) if name.endswith(f.extension)), None)
