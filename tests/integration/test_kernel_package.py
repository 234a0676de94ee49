"""A real kernel package: Linux 6.12 (Debian's source) built by ka-build for arm64 with a small config.

The headers package builds an out-of-tree module on this machine, its own arm64 host programs (fixdep,
modpost, …) run under qemu-user as they would run on the device; the module's vermagic is the kernel's;
and the packages hold what the kernel's own ``make pacman-pkg`` of the same tree and config holds, but for
the documented differences (``tests/support/upstreampkg.py``).  The module built by the device's own gcc
and loaded on the new kernel is the full loop's proof (``tests/support/fullloop.py``, not run here).

The compiler cache (ka/build/ccache.py) must not change a byte: the packages built with a cache warmed by
another series (one patch more, a changed ``init/main.c``) are the same as those built cold, and all but
the changed file come from the cache.

The two builds take about five minutes on 2 cores, the warm-up build of the other series three more.
Their results (packages, the warmed cache) are kept in ``~/.cache/kernel-agent/kernel-packages/<key>``,
the key a digest of everything that decides them: the build folder ``ka build --render-only`` writes
(PKGBUILD, kconfig.sh, the requested config, the cumulative patch, the baseline's commit) and the
sources of ``ka/build``.  A change to any of those builds again.  The warm build runs every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import PROJECT
from tests.support.buildlab import BuildLab, make_build_lab
from tests.support.kernel import ENV
from tests.support.needs import require
from tests.support.onepatch import add_patch
from tests.support.sshhosts import USER, SshLab, run
from tests.support.upstreampkg import compare, listing, make_pacman_pkg

pytestmark = pytest.mark.kernel

HOST, PKGBASE = "small", "linux-small"
CACHE = Path.home() / ".cache/kernel-agent/kernel-packages"
#: onto the tree's tinyconfig: loadable modules, printk (the module's line), and one module in the tree
#: (its vermagic is the kernel's, to compare the out-of-tree module's with)
FRAGMENT = "CONFIG_MODULES=y\nCONFIG_MODULE_UNLOAD=y\nCONFIG_PRINTK=y\nCONFIG_CRC_ITU_T=m\n"
HELLO_C = """#include <linux/module.h>
#include <linux/init.h>

static int __init hello_init(void)
{
\tpr_info("ka-hello: built against the headers package\\n");
\treturn 0;
}
module_init(hello_init);
MODULE_LICENSE("GPL");
"""
EM_AARCH64 = 183


@dataclass
class Packages:
    """ka-build's packages of host small, and the file list of the kernel's own make pacman-pkg."""

    image: Path
    headers: Path
    upstream: set[str]
    release: str
    lab: BuildLab
    repo: Path
    tree: Path
    work: Path


def _fleet(root: Path, lab: BuildLab, ref: str) -> Path:
    """The sample patches and host small (tinyconfig + FRAGMENT, the sample host ampere's series), committed
    (the commit id, which infra.yaml's lab paths change, is left out of the cache key)."""
    shutil.copytree(PROJECT / "patches", root / "patches")
    sample = (PROJECT / "fleet/ampere.yaml").read_text()
    series = sample[sample.index("apply_order:"):sample.index("parity:")]
    (root / "fleet/configs").mkdir(parents=True)
    (root / "fleet/configs/small.config").write_text(FRAGMENT)
    (root / f"fleet/{HOST}.yaml").write_text(
        f"description: a small arm64 kernel\nbaseline:\n  ref: {ref}\n{series}package:\n  pkgbase: {PKGBASE}\n"
        f"  config:\n    base: tinyconfig\n    fragments: [fleet/configs/small.config]\n"
        f"  source:\n    git: {_stable_source(lab)}\ninstall:\n  ssh: {HOST}\n")
    work = lab.ssh.user_folder("kernel-package", "builds")
    (root / "fleet/infra.yaml").write_text(
        f"build_hosts:\n  - ssh: boltzmann\n    workdir: {work}\n    cross_compile: aarch64-linux-gnu-\n"
        f"repository:\n  ssh: hertz\n  path: {lab.ssh.user_folder('kernel-package', 'repo')}\n  name: fleet\n"
        f"  url: file:///nonexistent\n  key: {lab.fingerprint}\n  gnupghome: {lab.repo_gnupghome}\n")
    env = {**os.environ, **ENV}
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "host small"]):
        subprocess.run(["git", "-C", str(root), *argv], check=True, env=env, capture_output=True)
    return root


def _stable_source(lab: BuildLab) -> str:
    """The kernel source's URL, the same in every lab: a link in the build user's home to this lab's mirror.
    The PKGBUILD names it, and .BUILDINFO records the PKGBUILD's digest: packages of two labs compare equal
    only when it is the same."""
    link = Path(pwd.getpwnam(USER).pw_dir) / "ka-kernel-package.git"
    fresh = link.with_name(f"{link.name}.{os.getpid()}")
    # the build user's own link (git refuses a repository reached through another user's), swapped in at once
    run("ln", "-sfn", lab.source.removeprefix("file://"), str(fresh), user=USER)
    run("mv", "-T", str(fresh), str(link), user=USER)
    return f"file://{link}"


def _key(lab: BuildLab, repo: Path, tree: Path, scratch: Path) -> str:
    """What decides the packages, as a digest: the rendered build folder (its commit id left out) and ka/build's
    sources."""
    res = lab.ka("build", HOST, "--render-only", str(scratch), "--repo", str(repo), "--kernel-tree", str(tree))
    assert res.returncode == 0, res.stderr + res.stdout
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    digest = hashlib.sha256()
    files = sorted(p for p in scratch.rglob("*") if p.is_file())
    files += sorted((PROJECT / "ka/build").glob("*.py"))
    for path in files:
        text = path.read_bytes().replace(commit.encode(), b"<commit>")
        digest.update(path.name.encode() + b"\0" + text + b"\0")
    return digest.hexdigest()[:24]


def _ka_build(lab: BuildLab, repo: Path, tree: Path, *args: str) -> dict[str, Any]:
    """ka-build of host small (its --json)."""
    res = lab.ka("build", HOST, "--repo", str(repo), "--kernel-tree", str(tree), "--json", *args, timeout=3600)
    assert res.returncode == 0, res.stderr[-4000:] + res.stdout[-4000:]  # stdout: --json's log of the build
    built: dict[str, Any] = json.loads(res.stdout)
    return built


def _build(lab: BuildLab, repo: Path, tree: Path, ref: str, into: Path) -> None:
    """ka-build of host small (its compiler cache emptied first: a cold build), then make pacman-pkg of the
    same tree, patch and final .config; the packages and the upstream file list written to ``into``."""
    shutil.rmtree(_ccache(lab), ignore_errors=True)
    made = [Path(a["path"]) for a in _ka_build(lab, repo, tree)["artifacts"]]
    headers = next(p for p in made if "-headers-" in p.name)
    config = subprocess.run(["bsdtar", "-xOf", str(headers), f"usr/src/{PKGBASE}/.config"], capture_output=True,
                            check=True).stdout
    patch = repo / "out" / HOST / f"{HOST}-cumulative.patch"
    upstream = make_pacman_pkg(Path(lab.source.removeprefix("file://")), ref, patch, config,
                               lab.ssh.user_folder("kernel-package", "upstream"), USER)
    into.mkdir(parents=True)
    for p in made:
        shutil.copy(p, into / p.name)
    names = sorted({n for p in upstream for n in listing(p)})
    (into / "upstream.json").write_text(json.dumps(names, indent=0))


@pytest.fixture(scope="module")
def packages(real_kernel: tuple[Path, str], ssh_lab: SshLab,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packages]:
    """Host small's packages: from the cache when its key matches, else built (about five minutes)."""
    for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64", "makepkg", "bsdtar", "flex", "bison", "bc"):
        require(shutil.which(tool) is not None, f"{tool} (scripts/setup test installs it)")
    tree, ref = real_kernel
    work = tmp_path_factory.mktemp("kernel-package")
    lab = make_build_lab(ssh_lab, SimpleNamespace(bare=tree), work)  # type: ignore[arg-type]
    try:
        repo = _fleet(work / "fleet", lab, ref)
        cached = CACHE / _key(lab, repo, tree, work / "render")
        if not (cached / "upstream.json").is_file():
            fresh = cached.with_name(cached.name + f".new{os.getpid()}")
            shutil.rmtree(fresh, ignore_errors=True)
            _build(lab, repo, tree, ref, fresh)
            shutil.rmtree(cached, ignore_errors=True)
            fresh.rename(cached)
        made = sorted(cached.glob("*.pkg.tar.zst"))
        headers = next(p for p in made if "-headers-" in p.name)
        release = next(n.split("/")[3] for n in listing(headers)
                       if n.startswith("usr/lib/modules/") and n.endswith("/build"))
        yield Packages(next(p for p in made if p != headers), headers,
                       set(json.loads((cached / "upstream.json").read_text())), release, lab, repo, tree, work)
    finally:
        lab.stop_agents()


def _machine(path: Path) -> int | None:
    """The ELF machine of ``path``, None when it is not an ELF file."""
    with path.open("rb") as f:
        head = f.read(20)
    return int.from_bytes(head[18:20], "little") if head[:4] == b"\x7fELF" and len(head) == 20 else None


def _run_under_qemu(root: Path) -> list[str]:
    """Every arm64 program under ``root`` becomes a wrapper that runs it with qemu-aarch64 (this machine has
    no binfmt_misc entry for arm64); the programs wrapped, relative to ``root``."""
    wrapped = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        if _machine(path) != EM_AARCH64 or path.suffix in (".o", ".ko"):
            continue
        real = path.with_name(path.name + ".aarch64")
        path.rename(real)
        path.write_text(f'#!/bin/sh\nexec qemu-aarch64 -L /usr/aarch64-linux-gnu "{real}" "$@"\n')
        path.chmod(0o755)
        wrapped.append(str(path.relative_to(root)))
    return wrapped


def test_headers_package_builds_a_module(packages: Packages, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for pkg in (packages.image, packages.headers):
        subprocess.run(["bsdtar", "-xf", str(pkg), "-C", str(root), "--exclude", ".*"], check=True)
    build = root / "usr/lib/modules" / packages.release / "build"
    assert build.is_symlink() and not os.readlink(build).startswith("/")
    wrapped = _run_under_qemu(build.resolve())
    # the host programs were rebuilt for the device (install-extmod-build), not left built for this machine
    assert {"scripts/basic/fixdep", "scripts/mod/modpost"} <= set(wrapped), wrapped
    hello = tmp_path / "hello"
    hello.mkdir()
    (hello / "hello.c").write_text(HELLO_C)
    (hello / "Makefile").write_text("obj-m := hello.o\n")
    res = subprocess.run(["make", "-C", str(build), f"M={hello}", "ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-",
                          "modules"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert _machine(hello / "hello.ko") == EM_AARCH64
    in_tree = next((root / "usr/lib/modules" / packages.release / "kernel").rglob("crc-itu-t.ko*"))
    assert _vermagic(hello / "hello.ko") == _vermagic(in_tree)
    assert _vermagic(hello / "hello.ko").startswith(packages.release + " ")


def _vermagic(module: Path) -> str:
    res = subprocess.run(["modinfo", "-F", "vermagic", str(module)], capture_output=True, text=True, check=True)
    return res.stdout.strip()


def test_same_files_as_make_pacman_pkg(packages: Packages) -> None:
    ours = listing(packages.image) | listing(packages.headers)
    missing, extra = compare(ours, packages.upstream, PKGBASE, "linux-upstream", packages.release)
    assert (missing, extra) == ([], []), f"theirs, missing from ours: {missing}; ours, undocumented: {extra}"
    assert len(packages.upstream) > 1000  # headers, scripts and modules: a real package, not an empty one


def _ccache(lab: BuildLab) -> Path:
    """Host small's compiler cache on the lab's build host."""
    return lab.ssh.user_folder("kernel-package", "builds") / "ccache" / HOST


def _other_series(packages: Packages, root: Path) -> Path:
    """Host small's fleet with one patch more (tests/support/onepatch.py), committed."""
    shutil.copytree(packages.repo, root, symlinks=True)
    add_patch(root, HOST, packages.tree, before="board/pinetab2")
    return root


def _warmed(packages: Packages) -> Path:
    """The cache a build of the other series left, from an empty one (kept beside the packages)."""
    other = _other_series(packages, packages.work / "other")
    kept = CACHE / (_key(packages.lab, other, packages.tree, packages.work / "render-other") + "-ccache")
    if not kept.is_dir():
        shutil.rmtree(_ccache(packages.lab), ignore_errors=True)
        built = _ka_build(packages.lab, other, packages.tree, "--no-publish")  # its own bytes, the same version
        hits, calls = _hits(built)
        assert calls > 300 and hits < 0.1 * calls, built["ccache"]  # cold (its hits: the same file compiled twice)
        fresh = kept.with_name(kept.name + f".new{os.getpid()}")
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(_ccache(packages.lab), fresh, symlinks=True)
        fresh.rename(kept)
    return kept


def _hits(built: dict[str, Any]) -> tuple[int, int]:
    """(compilations from the cache, compilations) of a build's ``ccache`` line."""
    got = re.match(r"ccache: (\d+) of (\d+) compilations", built["ccache"])
    assert got is not None, built["ccache"]
    return int(got[1]), int(got[2])


def test_a_warm_compiler_cache_gives_the_same_packages_as_a_cold_build(packages: Packages) -> None:
    """The cache a build of another series (one patch more) left, in another build folder of another lab:
    host small built again from it compiles only the file that differs, and its packages are the same."""
    warm = _warmed(packages)
    target = _ccache(packages.lab)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(warm, target, symlinks=True)
    # the build user's, as ka-build makes it (a cache it cannot write fails every compile, the first being
    # Kconfig's assembler check)
    subprocess.run(["chown", "-R", f"{USER}:", str(target.parent)], check=True)
    built = _ka_build(packages.lab, packages.repo, packages.tree, "--no-publish")
    hits, calls = _hits(built)
    assert calls > 300 and calls - hits >= 1 and hits >= 0.95 * calls, built["ccache"]  # init/main.c, at least
    made = {Path(a["path"]).name: Path(a["path"]) for a in built["artifacts"]}
    assert set(made) == {packages.image.name, packages.headers.name}
    for cold in (packages.image, packages.headers):
        res = packages.lab.ka("pkgdiff", str(cold), str(made[cold.name]))
        assert res.returncode == 0 and "the same, modulo when and where" in res.stdout, res.stdout + res.stderr
    print(f"warm rebuild: {built['ccache']}; makepkg {built['phases']['makepkg']:.0f} s")
