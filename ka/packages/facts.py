"""A kernel package file as ka-install takes it: signed by the repository's key, holding the image
the bootloader loads, for exactly one kernel release, and named as the host's kernel package."""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ka.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, KaError, ToolMissing
from ka.fleet.installspec import InstallSpec
from ka.packages.files import deb_control, members, pkginfo
from ka.packages.sign import verify

_RELEASE = re.compile(r"[A-Za-z0-9._+~-]{1,100}")


class PackageRefused(KaError):
    """The package is not one to install: nothing was touched."""

    exit_code = EXIT_CHECK_FAILED


@dataclass(frozen=True)
class PackageFacts:
    """A verified kernel package."""

    path: Path
    name: str
    version: str
    release: str
    image_sha256: str
    boot_bytes: int
    signer: str
    inputs: dict[str, str] = field(default_factory=dict)  # usr/lib/modules/<release>/kernel-agent, from ka-build
    boot_files: frozenset[str] = frozenset()  # what the package puts in the boot folder (paths inside it)


def package_facts(path: Path, spec: InstallSpec, key: str | None, gnupghome: Path | None) -> PackageFacts:
    """Check a package file: its signature (by ``key``), its kernel image, its kernel release."""
    sig = path.with_name(path.name + ".sig")
    if not path.is_file():
        raise PackageRefused(f"{path}: no such package file", exit_code=EXIT_BAD_INPUT)
    if key is None:
        raise PackageRefused("fleet/infra.yaml names no repository key to verify the package with; refused",
                             exit_code=EXIT_BAD_INPUT)
    if not sig.is_file():
        raise PackageRefused(f"{sig.name}: missing: an unsigned package is never installed")
    try:
        signer = verify(path, sig, key, gnupghome).signer
    except KaError as exc:
        raise PackageRefused(f"{path.name}: refused: {exc}") from None
    if not path.name.endswith(spec.kind.extension):
        raise PackageRefused(f"{path.name}: not a {spec.kind.extension} package, and {spec.ssh} installs with "
                             f"{spec.format} (install.format)", exit_code=EXIT_BAD_INPUT)
    try:
        return READERS[spec.kind.name](path, spec, signer)
    except (PackageRefused, ToolMissing):  # not the package's fault
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, KaError) as exc:
        raise PackageRefused(f"{path.name}: cannot be read as a {spec.kind.extension} package ({type(exc).__name__}: "
                             f"{exc}): a corrupt or cut-short file (it was signed that way); refused") from None


def _pacman_facts(path: Path, spec: InstallSpec, signer: str) -> PackageFacts:
    """A pacman kernel package: ``boot/<install.image>``, one release under usr/lib/modules, named pkgbase."""
    info = pkginfo(path)
    image, releases, boot_bytes, inputs, boot = None, set(), 0, {}, set()
    for m in members(path, keep=lambda name: name.endswith("/kernel-agent")):
        if re.fullmatch(r"usr/lib/modules/[^/]+/kernel-agent", m.name) and m.data is not None:
            inputs = dict(ln.split("=", 1) for ln in m.data.decode("utf-8", "replace").splitlines() if "=" in ln)
        if m.name == f"boot/{spec.image}":
            image = m.digest
        if m.name.startswith("boot/") and m.kind == "file":
            boot_bytes += m.size
            boot.add(m.name.removeprefix("boot/"))
        found = re.fullmatch(r"usr/lib/modules/([^/]+)/pkgbase", m.name)
        if found:
            releases.add(found.group(1))
    if image is None:
        raise PackageRefused(f"{path.name}: has no boot/{spec.image}, the image the bootloader loads "
                             f"(install.image); refused", exit_code=EXIT_BAD_INPUT)
    if len(releases) != 1 or not _RELEASE.fullmatch(next(iter(releases))):
        raise PackageRefused(f"{path.name}: cannot tell its kernel release (usr/lib/modules/<release>/pkgbase: "
                             f"{sorted(releases) or 'none'}); refused", exit_code=EXIT_BAD_INPUT)
    name, version = info.get("pkgname", [""])[0], info.get("pkgver", [""])[0]
    if name != spec.pkgbase:
        raise PackageRefused(f"{path.name}: is {name}, not the host's kernel package {spec.pkgbase}; refused",
                             exit_code=EXIT_BAD_INPUT)
    return PackageFacts(path, name, version, releases.pop(), image, boot_bytes, signer, inputs, frozenset(boot))


def _deb_facts(path: Path, spec: InstallSpec, signer: str) -> PackageFacts:
    """A Debian kernel package: exactly one ``boot/vmlinuz-<release>``, named ``linux-image-<release>``."""
    images: dict[str, str] = {}
    boot_bytes, inputs = 0, {}
    for m in members(path, keep=lambda name: name.endswith("/kernel-agent")):
        found = re.fullmatch(r"boot/vmlinuz-([^/]+)", m.name)
        if found and m.kind == "file":
            images[found.group(1)] = m.digest
        if m.name.startswith("boot/") and m.kind == "file":
            boot_bytes += m.size
        if re.fullmatch(r"(usr/)?lib/modules/[^/]+/kernel-agent", m.name) and m.data is not None:
            inputs = dict(ln.split("=", 1) for ln in m.data.decode("utf-8", "replace").splitlines() if "=" in ln)
    if len(images) != 1 or not _RELEASE.fullmatch(next(iter(images))):
        raise PackageRefused(f"{path.name}: cannot tell its kernel release (boot/vmlinuz-<release>: "
                             f"{sorted(images) or 'none'}); refused", exit_code=EXIT_BAD_INPUT)
    release, image = images.popitem()
    control = deb_control(path)
    name, version = control.get("Package", ""), control.get("Version", "")
    if name != spec.kernel_package(release):
        raise PackageRefused(f"{path.name}: is {name or 'unnamed'}, not linux-image-{release}, the package of the "
                             "kernel it holds; refused", exit_code=EXIT_BAD_INPUT)
    return PackageFacts(path, name, version, release, image, boot_bytes, signer, inputs)


READERS = {"pacman": _pacman_facts, "deb": _deb_facts}  # what each package format's file tells
