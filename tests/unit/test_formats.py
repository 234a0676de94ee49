"""The package formats as data: each word of the manifests maps to one format, and what differs is answered here."""

from __future__ import annotations

import pytest

from ka.build.flow import BUILD, PUBLISH
from ka.build.render import RENDER
from ka.fleet.formats import DEB, FORMATS, INSTALLERS, PACMAN, PackageFormat, of_file
from ka.install.flow import INSTALLS
from ka.install.installer import REPOSITORIES
from ka.install.recovery import WAYS
from ka.packages.facts import READERS
from ka.packages.files import MEMBERS


@pytest.mark.parametrize(("fmt", "kernel", "names", "file"), [
    (PACMAN, "linux-ampere", ["linux-ampere", "linux-ampere-headers"], "linux-ampere-6.12.117-1-aarch64.pkg.tar.zst"),
    (DEB, "linux-image-6.12.117-ka-1", ["linux-image-6.12.117-ka-1", "linux-headers-6.12.117-ka-1"],
     "linux-image-6.12.117-ka-1_6.12.117-1_arm64.deb"),
])
def test_names_and_files(fmt: PackageFormat, kernel: str, names: list[str], file: str) -> None:
    assert fmt.kernel_package("linux-ampere", "6.12.117-ka-1") == kernel
    assert fmt.package_names("linux-ampere", "6.12.117-ka-1") == names
    assert fmt.file_name(names[0], "6.12.117-1", fmt.arch) == file


def test_one_meaning_for_both_words_of_the_manifests() -> None:
    assert FORMATS == {"pacman": PACMAN, "deb": DEB}  # package.format
    assert INSTALLERS == {"pacman": PACMAN, "apt": DEB}  # install.format: the host's package manager


@pytest.mark.parametrize(("fmt", "tool", "folder", "env"), [
    (PACMAN, "makepkg", "", {"PKGEXT": ".pkg.tar.zst", "CARCH": "aarch64", "PACKAGER": "A <a@b>"}),
    (DEB, "dpkg-buildpackage", "linux", {}),
])
def test_build_command_and_environment(fmt: PackageFormat, tool: str, folder: str, env: dict[str, str]) -> None:
    build = BUILD[fmt.name]
    assert build.command(fmt.arch)[0] == fmt.build_tool == tool and build.folder == folder
    assert build.env(fmt.arch, "A <a@b>") == env


@pytest.mark.parametrize(("name", "fmt"), [("linux-ampere-6.12.117-1-aarch64.pkg.tar.zst", PACMAN),
                                           ("linux-image-6.12.117-1_6.12.117-1_arm64.deb", DEB),
                                           ("something.tar", PACMAN)])
def test_a_files_format_by_its_name(name: str, fmt: PackageFormat) -> None:
    assert of_file(name) is fmt


def test_every_format_has_each_verbs_entry() -> None:
    """A new format needs an entry in every verb's table; this fails until each has one."""
    for table in (BUILD, PUBLISH, RENDER, INSTALLS, REPOSITORIES, READERS, MEMBERS, WAYS):
        assert set(table) == set(FORMATS), table
