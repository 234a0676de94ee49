"""The build folder of a host's kernel package, rendered: a PKGBUILD and its sources (pacman), or the
source's ``debian/`` folder (deb); ``RENDER`` holds each format's renderer.

``templates/package/`` (Jinja2, ``StrictUndefined``: ``PKGBUILD.j2``, or ``debian/``) is filled
from the manifest's ``package`` section, the baseline, the cumulative patch ka-promote made and
the host's kernel config; b2sums are computed here.  The same inputs render the same bytes: nothing in it
depends on the time, the machine or the build host (the cross-compiler prefix comes from the
build host's environment at build time, not from the PKGBUILD).
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ka.build.kconfig import ConfigInput, read_config
from ka.errors import BadInput, ManifestError, Problem
from ka.fleet.packagespec import PackageSpec, kernel_version, pkgver
from ka.fleet.repo import RepoView
from ka.promote.cumulative import b2sum
from ka.promote.flow import HostPlan
from ka.text import shown

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "package"
DEB_SCRIPTS = ("preinst", "postinst", "prerm", "postrm")
_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]+")
_TARBALL_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,100}")
_RELEASE_PART = re.compile(r'"[A-Za-z0-9._+~-]{0,64}"')
_PACKAGER = re.compile(r"[^\x00-\x1f\x7f<>$`\\]{1,100} <[A-Za-z0-9._+-]{1,64}@[A-Za-z0-9.-]{1,190}>")
_ENV = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, autoescape=False,  # noqa: S701 - a shell file: values are quoted by the shell filter or validated
                   keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["shell"] = shlex.quote
_ENV.filters["b2sum"] = b2sum


@dataclass(frozen=True)
class BuildFolder:
    """What the build needs, as files: for makepkg the PKGBUILD, the cumulative patch, the config and
    the preset; for dpkg-buildpackage ``debian/`` (control, changelog, rules, maintainer scripts), the
    patch and the config."""

    host: str
    spec: PackageSpec
    pkgver: str
    files: dict[str, bytes]
    release: str = ""  # deb: the kernel release the packages are named after
    baseline: str = ""  # the baseline's tag
    source_commit: str | None = None  # the baseline's commit id, where a git source is checked out

    @property
    def version(self) -> str:
        """The package version: ``<pkgver>-<pkgrel>``."""
        return f"{self.pkgver}-{self.spec.pkgrel}"

    @property
    def digest(self) -> str:
        """A b2sum over every file: the same inputs, the same digest (and the same build path)."""
        return b2sum(b"".join(name.encode() + b"\0" + data + b"\0" for name, data in sorted(self.files.items())))

    @property
    def name(self) -> str:
        """The folder's name on a build host: stable for the same inputs, so builds are reproducible."""
        return f"{self.spec.pkgbase}-{self.pkgver}-{self.spec.pkgrel}-{self.digest[:12]}"

    def names(self) -> list[str]:
        """The package names: the kernel's, then the headers'."""
        return self.spec.kind.package_names(self.spec.pkgbase, self.release)

    def packages(self, arch: str | None = None) -> list[str]:
        """The file names the build will make: the kernel and its headers."""
        arch = arch or self.spec.arch
        return [self.spec.kind.file_name(name, self.version, arch) for name in self.names()]

    def write(self, folder: Path) -> None:
        """Write the files (a new or empty folder); debian/rules and the maintainer scripts executable."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if name == "debian/rules" or name.startswith("debian/maint/"):
                path.chmod(0o755)


def spec_of(plan: HostPlan) -> PackageSpec:
    """The host's package section; BadInput naming the manifest when there is none."""
    spec = plan.manifest.package
    if spec is None:
        raise ManifestError([Problem(plan.manifest.path, None, "package",
                                     "missing: ka-build needs a package section (at least package.config)")])
    if not spec.config_files:
        raise ManifestError([Problem(plan.manifest.path, None, "package.config", "missing (required)")])
    return spec


def render(view: RepoView, plan: HostPlan, commit: str | None, *, epoch: int = 1,
           packager: str = "kernel-agent <kernel-agent@localhost>", source_commit: str | None = None) -> BuildFolder:
    """Render the build folder of ``plan``'s host from the repository as ``view`` shows it (``epoch`` and
    ``packager`` go into a Debian changelog; makepkg takes them from its environment).

    ``source_commit`` is the baseline's commit id, read from the kernel tree: the git source is checked
    out at it (``#commit=``), since a tag can be moved on the remote or in the build host's cache and a
    commit id cannot; without it (no kernel tree, ``--render-only``) the source names the tag.
    """
    spec = spec_of(plan)
    m = plan.manifest
    if not _PACKAGER.fullmatch(packager):
        raise BadInput(f"KA_PACKAGER {shown(packager)} is not 'Name <address>' (one line; it becomes the "
                       "packages' PACKAGER and Debian's Maintainer field)")
    config = read_config(view, m.path, spec)
    if source_commit is not None and not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", source_commit):
        raise BadInput(f"the baseline's commit {shown(source_commit)} is not a full commit id")
    return RENDER[spec.kind.name](plan, commit, config, epoch, packager, source_commit)


def _render_pacman(plan: HostPlan, commit: str | None, config: ConfigInput, epoch: int, packager: str,
                   source_commit: str | None) -> BuildFolder:
    """A PKGBUILD, the patch, the config and the mkinitcpio preset (makepkg reads the packager from its
    environment, so ``epoch`` and ``packager`` are not written here)."""
    spec, m = spec_of(plan), plan.manifest
    localversion(plan, config)
    patch_name = f"{m.host}-cumulative.patch"
    preset_name = f"{spec.pkgbase}.preset"
    preset = _ENV.get_template("preset.j2").render(pkgbase=spec.pkgbase).encode()
    kconfig = _config_files(m.host, config)
    version = pkgver(m.baseline_ref)
    srcdir = "linux" if spec.git else _tarball_dir(spec.tarball or "")
    pkgbuild = _ENV.get_template("PKGBUILD.j2").render(
        host=m.host, commit=commit, pkgbase=spec.pkgbase, pkgver=version, pkgrel=spec.pkgrel,
        srctag=m.baseline_ref, srccommit=source_commit,
        description=f"{m.host}: {m.description}" if m.description else m.host,
        arch=spec.arch, kernel_arch=spec.kernel_arch, image=spec.image, git=spec.git, tarball=spec.tarball,
        tarball_b2sum=spec.tarball_b2sum, srcdir=srcdir, patch_name=patch_name, preset_name=preset_name,
        patch_b2sum=plan.cumulative.b2sum, config_b2sum=b2sum(config.data), preset_b2sum=b2sum(preset),
        kconfig=kconfig, kconfig_base=config.base).encode()
    files = {"PKGBUILD": pkgbuild, patch_name: plan.cumulative.data, preset_name: preset, **kconfig}
    return BuildFolder(m.host, spec, version, files, baseline=m.baseline_ref, source_commit=source_commit)


def _config_files(host: str, config: ConfigInput) -> dict[str, bytes]:
    """The config, what it asks for, and the script that makes and audits the final .config."""
    script = _ENV.get_template("kconfig.sh.j2").render(host=host, base=config.base).encode()
    return {"config": config.data, "config.requested": config.requested(), "kconfig.sh": script}


def deb_release(plan: HostPlan, config: ConfigInput) -> str:
    """The kernel release a deb build makes: the baseline's version, CONFIG_LOCALVERSION, ``-<pkgrel>``.
    The packages are named after it, before the build; the build checks that the kernel agrees."""
    spec = spec_of(plan)
    auto = config.request("CONFIG_LOCALVERSION_AUTO")
    if (auto.value if auto else "n" if config.base is None else "y") != "n":
        why = (f"{auto.where} sets CONFIG_LOCALVERSION_AUTO={auto.value}" if auto else
               f"CONFIG_LOCALVERSION_AUTO is on after `make {config.base}` and no fragment turns it off")
        raise ManifestError([Problem(plan.manifest.path, spec.config_line, "package.config",
                                     f"{why}: the kernel release would depend on the git tree, and a .deb is named "
                                     "after its release; add '# CONFIG_LOCALVERSION_AUTO is not set' to the config")])
    release = f"{kernel_version(plan.manifest.baseline_ref)}{localversion(plan, config)}-{spec.pkgrel}"
    if not _DEB_NAME.fullmatch(f"linux-image-{release}"):
        asked = config.request("CONFIG_LOCALVERSION")
        raise ManifestError([Problem(plan.manifest.path, spec.config_line, "package.config",
                                     f"CONFIG_LOCALVERSION ({asked.where if asked else 'unset'}) gives the release "
                                     f"{release}, and "
                                     f"linux-image-{release} is not a Debian package name (lowercase letters, digits, "
                                     "'.', '+', '-')")])
    if not _DEB_NAME.fullmatch(spec.pkgbase):
        raise ManifestError([Problem(plan.manifest.path, None, "package.pkgbase",
                                     f"{spec.pkgbase} is not a Debian source package name (lowercase letters, "
                                     "digits, '.', '+', '-'; at least two)")])
    return release


def localversion(plan: HostPlan, config: ConfigInput) -> str:
    """The config's ``CONFIG_LOCALVERSION``: part of the kernel release, which names files and packages on the
    build host and the device, so only letters, digits and ``. _ + ~ -``."""
    asked = config.request("CONFIG_LOCALVERSION")
    value = asked.value if asked and asked.value != "n" else '""'
    if not _RELEASE_PART.fullmatch(value):
        spec = spec_of(plan)
        raise ManifestError([Problem(plan.manifest.path, spec.config_line, "package.config",
                                     f"{asked.where if asked else ''}: CONFIG_LOCALVERSION={shown(value)}: the "
                                     "quoted value may hold only letters, digits and '.', '_', '+', '~', '-' (it "
                                     "becomes part of the kernel release)")])
    return value[1:-1]


def _render_deb(plan: HostPlan, commit: str | None, config: ConfigInput, epoch: int, packager: str,
                source_commit: str | None) -> BuildFolder:
    spec, m = spec_of(plan), plan.manifest
    release, version = deb_release(plan, config), f"{pkgver(m.baseline_ref)}-{spec.pkgrel}"
    patch_name = f"{m.host}-cumulative.patch"
    description = " ".join(f"{m.host}: {m.description}".split()) if m.description else m.host
    values = dict(host=m.host, commit=commit, pkgbase=spec.pkgbase, release=release, version=version,
                  pkgrel=spec.pkgrel, arch=spec.arch, kernel_arch=spec.kernel_arch, image_target=spec.image,
                  baseline=m.baseline_ref, patch_name=patch_name, patch_b2sum=plan.cumulative.b2sum,
                  config_b2sum=b2sum(config.data), maintainer=packager, description=description[:72],
                  date=time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch)))
    files = {f"debian/{name}": _ENV.get_template(f"debian/{name}.j2").render(**values).encode()
             for name in ("control", "changelog", "rules")}
    for script in DEB_SCRIPTS:
        files[f"debian/maint/{script}"] = _ENV.get_template("debian/maintscript.j2").render(
            script=script, release=release).encode()
    files.update({patch_name: plan.cumulative.data, **_config_files(m.host, config)})
    return BuildFolder(m.host, spec, pkgver(m.baseline_ref), files, release, m.baseline_ref, source_commit)


RENDER = {"pacman": _render_pacman, "deb": _render_deb}  # each package format's build folder


def pacman_release(plan: HostPlan, config: ConfigInput) -> str:
    """The kernel release a pacman build makes (read from the tree after the build): the baseline's version,
    CONFIG_LOCALVERSION, ``-<pkgrel>``, unless CONFIG_LOCALVERSION_AUTO adds the tree's state to it."""
    return f"{kernel_version(plan.manifest.baseline_ref)}{localversion(plan, config)}-{spec_of(plan).pkgrel}"


RELEASE = {"pacman": pacman_release, "deb": deb_release}  # each format's kernel release, before a build


def _tarball_dir(url: str) -> str:
    name = url.rsplit("/", 1)[-1]
    for ext in (".tar.xz", ".tar.gz", ".tar.zst", ".tar.bz2", ".tgz", ".tar"):
        if name.endswith(ext) and _TARBALL_DIR.fullmatch(name[: -len(ext)]):
            return name[: -len(ext)]
    raise BadInput(f"package.source.tarball: {url}: not a tarball name (a letter or digit, then letters, digits, "
                   "'.', '_', '+', '-', then .tar.xz, .tar.gz, …)")
