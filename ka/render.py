"""The build folder of a host's kernel package: the PKGBUILD and its sources, rendered.

``templates/package/PKGBUILD.j2`` (Jinja2, ``StrictUndefined``) is filled from the manifest's
``package`` section, the baseline, the cumulative patch ka-promote made and the host's kernel
config; b2sums are computed here.  The same inputs render the same bytes: nothing in it
depends on the time, the machine or the build host (the cross-compiler prefix comes from the
build host's environment at build time, not from the PKGBUILD).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ka.cumulative import b2sum
from ka.errors import BadInput, ManifestError, Problem
from ka.package import PackageSpec, pkgver
from ka.promote import HostPlan
from ka.repo import FILE, PathEscapes, RepoView

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "package"
PKGEXT = ".pkg.tar.zst"
_ENV = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, autoescape=False,  # noqa: S701 - a shell file: values are quoted by the shell filter or validated
                   keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["shell"] = shlex.quote


@dataclass(frozen=True)
class BuildFolder:
    """What makepkg needs, as files: the PKGBUILD, the cumulative patch, the config, the preset."""

    host: str
    spec: PackageSpec
    pkgver: str
    files: dict[str, bytes]

    @property
    def digest(self) -> str:
        """A b2sum over every file: the same inputs, the same digest (and the same build path)."""
        return b2sum(b"".join(name.encode() + b"\0" + data + b"\0" for name, data in sorted(self.files.items())))

    @property
    def name(self) -> str:
        """The folder's name on a build host: stable for the same inputs, so builds are reproducible."""
        return f"{self.spec.pkgbase}-{self.pkgver}-{self.spec.pkgrel}-{self.digest[:12]}"

    def packages(self, arch: str | None = None) -> list[str]:
        """The file names makepkg will make: the kernel and its headers."""
        tail = f"{self.pkgver}-{self.spec.pkgrel}-{arch or self.spec.arch}{PKGEXT}"
        return [f"{self.spec.pkgbase}-{tail}", f"{self.spec.pkgbase}-headers-{tail}"]

    def write(self, folder: Path) -> None:
        """Write the files (a new or empty folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)


def spec_of(plan: HostPlan) -> PackageSpec:
    """The host's package section; BadInput naming the manifest when there is none."""
    spec = plan.manifest.package
    if spec is None:
        raise ManifestError([Problem(plan.manifest.path, None, "package",
                                     "missing: ka-build needs a package section (at least package.config)")])
    if spec.config is None:
        raise ManifestError([Problem(plan.manifest.path, None, "package.config", "missing (required)")])
    return spec


def render(view: RepoView, plan: HostPlan, commit: str | None) -> BuildFolder:
    """Render the build folder of ``plan``'s host from the repository as ``view`` shows it."""
    spec = spec_of(plan)
    m = plan.manifest
    config = _config(view, m.path, spec)
    patch_name = f"{m.host}-cumulative.patch"
    preset_name = f"{spec.pkgbase}.preset"
    preset = _ENV.get_template("preset.j2").render(pkgbase=spec.pkgbase).encode()
    version = pkgver(m.baseline_ref)
    srcdir = "linux" if spec.git else _tarball_dir(spec.tarball or "")
    pkgbuild = _ENV.get_template("PKGBUILD.j2").render(
        host=m.host, commit=commit, pkgbase=spec.pkgbase, pkgver=version, pkgrel=spec.pkgrel,
        srctag=m.baseline_ref, description=f"{m.host}: {m.description}" if m.description else m.host,
        arch=spec.arch, kernel_arch=spec.kernel_arch, image=spec.image, git=spec.git, tarball=spec.tarball,
        tarball_b2sum=spec.tarball_b2sum, srcdir=srcdir, patch_name=patch_name, preset_name=preset_name,
        patch_b2sum=plan.cumulative.b2sum, config_b2sum=b2sum(config), preset_b2sum=b2sum(preset)).encode()
    files = {"PKGBUILD": pkgbuild, patch_name: plan.cumulative.data, "config": config, preset_name: preset}
    return BuildFolder(m.host, spec, version, files)


def _config(view: RepoView, manifest_path: str, spec: PackageSpec) -> bytes:
    path = spec.config or ""
    try:
        found = view.kind(path) == FILE
    except PathEscapes:
        found = False
    if not found or not view.tracked(path):
        raise ManifestError([Problem(manifest_path, spec.config_line, "package.config",
                                     f"{path} is not a file git tracks in the repository")])
    return view.read(path)


def _tarball_dir(url: str) -> str:
    name = url.rsplit("/", 1)[-1]
    for ext in (".tar.xz", ".tar.gz", ".tar.zst", ".tar.bz2", ".tgz", ".tar"):
        if name.endswith(ext):
            return name[: -len(ext)]
    raise BadInput(f"package.source.tarball: {url}: not a tarball name (.tar.xz, .tar.gz, …)")
