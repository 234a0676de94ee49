"""A host manifest's ``package`` section: what ka-build makes for the host.

::

    package:
      format: pacman          # or deb: Debian packages (linux-image-<release>, linux-headers-<release>)
      pkgbase: linux-ampere   # default linux-<host>
      pkgrel: 1               # default 1
      arch: aarch64           # default aarch64 (CARCH); arm64 for deb (dpkg's architecture)
      kernel_arch: arm64      # ARCH= for the kernel's make (default arm64)
      image: Image            # the file the bootloader loads, in /boot (default Image)
      config: fleet/configs/ampere.config   # a full kernel config in this repository (/proc/config.gz of a
                              # running kernel, say); olddefconfig brings it to the baseline
      # or: a base the patched tree makes (a make target) and fragments merged onto it, in order, the way
      # the kernel's scripts/kconfig/merge_config.sh merges them:
      # config: {base: defconfig, fragments: [fleet/configs/fleet.config, fleet/configs/ampere.config]}
      source:                 # the kernel source makepkg fetches (default: kernel.org's stable git)
        git: https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git
        # or: tarball: https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.12.117.tar.xz
        #     b2sum: <128 hex>
        # a builder without internet: git: file:///srv/mirrors/linux.git (a path on the build host)

Every option the config (or a fragment) sets is audited after olddefconfig (``ka/build/kconfig.py``).

The source is checked out at the baseline's tag (``#tag=`` of a VCS source, whose checksum
makepkg skips) or taken from the tarball, whose b2sum is then required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from ka.fleet.formats import FORMATS, PACMAN, PackageFormat
from ka.fleet.repo import clean_relpath
from ka.fleet.yamldoc import Doc, child, key_node
from ka.text import shown

KEYS = ("format", "pkgbase", "pkgrel", "arch", "kernel_arch", "image", "config", "source")
SOURCE_KEYS = ("git", "tarball", "b2sum")
STABLE_GIT = "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git"
_PKGBASE = re.compile(r"[a-z0-9][a-z0-9@._+-]{0,62}")
_PKGREL = re.compile(r"[1-9][0-9]{0,4}(\.[0-9]{1,4})?")
_WORD = re.compile(r"[a-z0-9_]{1,20}")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: a source URL goes into a PKGBUILD that bash sources, and onto the build host's command lines:
#: nothing a shell, make or makepkg gives a meaning to ($ ` ' " ( ) ; & | \\ spaces, and makepkg's
#: own # and ?) may appear in it
_URL = re.compile(r"(https?|git|ssh|file)://[A-Za-z0-9._~:/@+,=%-]{1,400}")
_B2 = re.compile(r"[0-9a-f]{128}")
#: a make target of the kernel tree that writes a .config: defconfig, allnoconfig, rockchip_defconfig…
_BASE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}config")
CONFIG_KEYS = ("base", "fragments")


@dataclass(frozen=True)
class PackageSpec:
    """The validated ``package`` section."""

    format: str
    pkgbase: str
    pkgrel: str
    arch: str
    kernel_arch: str
    image: str
    config: str | None
    git: str | None
    tarball: str | None = None
    tarball_b2sum: str | None = None
    config_line: int | None = None
    config_base: str | None = None  # with fragments: the make target that writes the base .config
    fragments: tuple[str, ...] = ()  # merged onto the base, in order (instead of a full ``config``)

    @property
    def config_files(self) -> tuple[str, ...]:
        """The repository files the kernel config is made of: the full config, or the fragments."""
        return self.fragments if self.config_base is not None else (self.config,) if self.config else ()

    @property
    def kind(self) -> PackageFormat:
        """The format's object: what differs between pacman and deb packages."""
        return FORMATS[self.format]


def pkgver(baseline_ref: str) -> str:
    """pacman's pkgver from a baseline tag: ``v6.12.117`` → ``6.12.117``, ``v6.13-rc3`` → ``6.13.rc3``."""
    return re.sub(r"[^A-Za-z0-9._+]", ".", baseline_ref.removeprefix("v")).strip(".") or "0"


def kernel_version(baseline_ref: str) -> str:
    """The kernel's own version for a baseline tag, as ``make kernelversion`` prints it:
    ``v6.12.117`` → ``6.12.117``, ``v6.13`` → ``6.13.0``, ``v6.13-rc3`` → ``6.13.0-rc3``."""
    found = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(-rc\d+)?", baseline_ref)
    if found is None:
        return pkgver(baseline_ref)
    major, minor, sub, rc = found.groups()
    return f"{major}.{minor}.{sub or 0}{rc or ''}"


def parse_package(doc: Doc, host: str) -> PackageSpec | None:
    """The section, validated into ``doc.problems``; None when the manifest has none."""
    value, node = doc.data.get("package"), child(doc.node, "package")
    if value is None:
        return None
    if not isinstance(value, dict):
        doc.add(node, "package", f"must be a mapping of {', '.join(KEYS)}")
        return None
    doc.check_keys(node, KEYS, "package.")  # type: ignore[arg-type]
    fmt = _pick(doc, node, value, "format", PACMAN.name, None, f"one of {', '.join(FORMATS)}", tuple(FORMATS))
    git, tarball, b2 = _source(doc, node, value.get("source"))
    config, base, fragments = _config(doc, key_node(doc.node, "package"), node, value.get("config"))
    return PackageSpec(
        format=fmt, pkgbase=_pick(doc, node, value, "pkgbase", f"linux-{host}", _PKGBASE, "a package name"),
        pkgrel=_pick(doc, node, value, "pkgrel", "1", _PKGREL, "a release number (1, 2, 1.1)"),
        arch=_pick(doc, node, value, "arch", FORMATS[fmt].arch, _WORD, "an architecture such as aarch64"),
        kernel_arch=_pick(doc, node, value, "kernel_arch", "arm64", _WORD, "a kernel ARCH such as arm64"),
        image=_pick(doc, node, value, "image", "Image", _IMAGE, "a file name such as Image"),
        config=config, git=git, tarball=tarball, tarball_b2sum=b2,
        config_line=_line(child(node, "config")), config_base=base, fragments=fragments)


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _pick(doc: Doc, node: yaml.Node | None, value: dict[str, Any], key: str, default: str,
          pattern: re.Pattern[str] | None, what: str, choices: tuple[str, ...] = ()) -> str:
    got = value.get(key)
    if got is None:
        return default
    text = str(got) if isinstance(got, int | str) and not isinstance(got, bool) else None
    ok = text is not None and (text in choices if choices else bool(pattern and pattern.fullmatch(text)))
    if not ok or text is None:
        doc.add(child(node, key), f"package.{key}", f"{shown(got)} is not {what}")
        return default
    return text


def _config(doc: Doc, key: yaml.Node | None, node: yaml.Node | None,
            value: Any) -> tuple[str | None, str | None, tuple[str, ...]]:
    """``package.config``: a full config's path, or ``{base, fragments}``."""
    if value is None:
        doc.add(key, "package.config", "missing (required): the kernel config, a path in this repository, or "
                "{base: defconfig, fragments: [paths]}")
        return None, None, ()
    if isinstance(value, dict):
        return (None, *_fragments(doc, child(node, "config"), value))
    return _path(doc, child(node, "config"), "package.config", value), None, ()


def _path(doc: Doc, node: yaml.Node | None, fld: str, value: Any) -> str | None:
    if not isinstance(value, str) or clean_relpath(value) is None:
        doc.add(node, fld, f"{shown(value)} must be a path inside the repository (no '..', no absolute path, "
                "nothing in .git)")
        return None
    return value


def _fragments(doc: Doc, node: yaml.Node | None, value: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    doc.check_keys(node, CONFIG_KEYS, "package.config.")  # type: ignore[arg-type]
    base = value.get("base", "defconfig")
    if not isinstance(base, str) or not _BASE.fullmatch(base):
        doc.add(child(node, "base"), "package.config.base",
                f"{shown(base)} is not a make target that writes a .config (defconfig, allnoconfig, …)")
        base = None
    items, items_node = value.get("fragments"), child(node, "fragments")
    if not isinstance(items, list) or not items:
        doc.add(items_node or node, "package.config.fragments",
                "a list of one or more config fragments (paths in this repository), merged onto the base in order")
        return None, ()
    nodes = items_node.value if isinstance(items_node, yaml.SequenceNode) else [None] * len(items)
    paths = [_path(doc, n, f"package.config.fragments[{i}]", v)
             for i, (v, n) in enumerate(zip(items, nodes, strict=False))]
    if base is None or None in paths:
        return None, ()
    return base, tuple(p for p in paths if p is not None)


def _source(doc: Doc, node: yaml.Node | None, value: Any) -> tuple[str | None, str | None, str | None]:
    if value is None:
        return STABLE_GIT, None, None
    src, src_key = child(node, "source"), key_node(node, "source")
    if not isinstance(value, dict):
        doc.add(src, "package.source", "must be a mapping with git (a URL), or tarball and b2sum")
        return None, None, None
    doc.check_keys(src, SOURCE_KEYS, "package.source.")  # type: ignore[arg-type]
    git, tarball, b2 = value.get("git"), value.get("tarball"), value.get("b2sum")
    if (git is None) == (tarball is None):
        doc.add(src_key, "package.source", "give one of git or tarball")
        return None, None, None
    url = git if git is not None else tarball
    if not isinstance(url, str) or not _URL.fullmatch(url):
        doc.add(child(src, "git" if git is not None else "tarball"), f"package.source.{'git' if git else 'tarball'}",
                f"{shown(url)} is not a URL (https, git, ssh or file://) of letters, digits and . _ ~ : / @ + , = % -")
        return None, None, None
    if tarball is not None and not (isinstance(b2, str) and _B2.fullmatch(b2)):
        doc.add(child(src, "b2sum") or src_key, "package.source.b2sum", "a tarball needs its b2sum (128 lowercase hex)")
        return None, None, None
    return (git, None, None) if git is not None else (None, tarball, b2)
