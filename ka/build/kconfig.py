"""A host's kernel config: what its manifest asks for, the file ka-build ships, and the audit.

``package.config`` is a full config (what ``/proc/config.gz`` of a running kernel gives) or a base,
a make target of the patched tree (``defconfig``), plus fragments merged onto it in order, the way
the kernel's ``scripts/kconfig/merge_config.sh`` merges them: a later value for a symbol replaces
an earlier one.  Either way every option the files set is a *request*: after ``olddefconfig`` the
final ``.config`` must hold it, or the build stops before compiling, naming the option, the value
asked, the value got and the file and line that asked (merge_config.sh's "Value requested for …
not in final .config").  A symbol asked for that no Kconfig file defines is a finding too.

The audit is one script, ``templates/package/kconfig.sh.j2``, shipped in the build folder and run
where the kernel is configured: the PKGBUILD's ``prepare()``, ``debian/rules``, and
:func:`audit_locally` (``ka-build --render-only`` with a kernel tree at hand).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ka.errors import KaError, ManifestError, Problem, ToolMissing
from ka.fleet.packagespec import PackageSpec
from ka.fleet.repo import FILE, PathEscapes, RepoView
from ka.io.runner import run
from ka.promote.baseline import KernelTree, patched_tree
from ka.text import shown

_SET = re.compile(r'(CONFIG_[A-Za-z0-9_]+)=("(?:[^"\\\x00-\x1f]|\\.)*"|[A-Za-z0-9_+-]+)')
_UNSET = re.compile(r"# (CONFIG_[A-Za-z0-9_]+) is not set")
#: what the configuration step needs of the tree: the top Makefile, scripts/, the architecture's
#: folder (its Makefile and configs/), kernel/configs/ (tinyconfig's seeds, fragments such as
#: kvm_guest.config that a base may name) and every Kconfig file
_NEEDED = ("Makefile", "scripts/", "arch/{arch}/", "kernel/configs/")


@dataclass(frozen=True)
class Request:
    """One option the host's config asks for."""

    symbol: str
    value: str  # as .config writes it; "n" for "is not set"
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ConfigInput:
    """The host's config as ka-build ships it: ``data`` (the file ``config``: the full config as it is, or the
    fragments merged), the base to start from (None: ``data`` is the full config) and the requests."""

    base: str | None
    data: bytes
    requests: tuple[Request, ...]

    def request(self, symbol: str) -> Request | None:
        """The (last) request for ``symbol``."""
        return next((r for r in self.requests if r.symbol == symbol), None)

    def requested(self) -> bytes:
        """``config.requested``, the audit's input: symbol, value, file:line, tab-separated."""
        return "".join(f"{r.symbol}\t{r.value}\t{r.where}\n" for r in self.requests).encode()


def parse(text: str, file: str) -> tuple[list[Request], list[Problem]]:
    """The options a config file or fragment sets; a line that is neither an option nor a comment is a problem."""
    found: list[Request] = []
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        unset, setting = _UNSET.fullmatch(line), _SET.fullmatch(line)
        if unset:
            found.append(Request(unset.group(1), "n", file, number))
        elif setting:
            found.append(Request(setting.group(1), setting.group(2), file, number))
        elif line and not line.startswith("#"):
            problems.append(Problem(file, number, "package.config",
                                    f"{shown(line)} is neither CONFIG_NAME=value (y, m, a number or a quoted "
                                    "string) nor '# CONFIG_NAME is not set'"))
    return found, problems


def merged(requests: list[Request]) -> tuple[Request, ...]:
    """The last request per symbol, in the order the symbols were first asked for."""
    last = {r.symbol: r for r in requests}
    order = list(dict.fromkeys(r.symbol for r in requests))
    return tuple(last[s] for s in order)


def read_config(view: RepoView, manifest_path: str, spec: PackageSpec) -> ConfigInput:
    """The host's config from the repository; :class:`ManifestError` naming the file and line of what is wrong."""
    requests: list[Request] = []
    problems: list[Problem] = []
    texts: list[tuple[str, bytes]] = []
    for path in spec.config_files:
        data = _tracked(view, manifest_path, spec, path)
        found, bad = parse(data.decode("utf-8", "replace"), path)
        requests += found
        problems += bad
        texts.append((path, data))
    if problems:
        raise ManifestError(problems)
    final = merged(requests)
    if spec.config_base is None:
        return ConfigInput(None, texts[0][1], final)
    return ConfigInput(spec.config_base, _merged_text(final, spec), final)


def _merged_text(final: tuple[Request, ...], spec: PackageSpec) -> bytes:
    lines = [f"# kernel-agent: {', '.join(spec.fragments)} merged in that order (a later value replaces an earlier "
             f"one), to be merged onto `make {spec.config_base}`"]
    for path in spec.fragments:
        mine = [r for r in final if r.file == path]
        lines += [f"# {path}"] + [f"# {r.symbol} is not set" if r.value == "n" else f"{r.symbol}={r.value}"
                                  for r in mine]
    return ("\n".join(lines) + "\n").encode()


def _tracked(view: RepoView, manifest_path: str, spec: PackageSpec, path: str) -> bytes:
    try:
        found = view.kind(path) == FILE
    except PathEscapes:
        found = False
    if not found or not view.tracked(path):
        raise ManifestError([Problem(manifest_path, spec.config_line, "package.config",
                                     f"{path} is not a file git tracks in the repository")])
    return view.read(path)


@dataclass(frozen=True)
class Audit:
    """The local audit's outcome: ``ok``, and what the script printed (its ``config audit:`` lines)."""

    ok: bool
    lines: list[str]

    @property
    def findings(self) -> list[str]:
        return [ln for ln in self.lines if ln.startswith("config audit:")]


def audit_locally(kernel: KernelTree, commit: str, patch: bytes, files: dict[str, bytes],
                  kernel_arch: str) -> Audit:
    """Configure the patched baseline here as the build host will (``kconfig.sh`` of the build folder
    ``files``) and audit it: only the files configuring needs are taken from the tree (a few seconds)."""
    with _config_tree(kernel, commit, patch, kernel_arch) as (src, make_vars):
        inputs = src.parent / "in"
        inputs.mkdir()
        for name in ("kconfig.sh", "config", "config.requested"):
            (inputs / name).write_bytes(files[name])
        res = run(["sh", str(inputs / "kconfig.sh"), str(inputs), *make_vars], cwd=src, check=False, timeout=600)
        return Audit(res.ok, (res.stdout + res.stderr).decode("utf-8", "replace").splitlines())


def olddefconfig_locally(kernel: KernelTree, commit: str, patch: bytes, config: bytes, kernel_arch: str) -> bytes:
    """``config`` carried to the patched baseline by its own Kconfig (``make olddefconfig``), the way a
    maintainer brings an older kernel's config forward; :class:`KaError` with make's words when it fails."""
    with _config_tree(kernel, commit, patch, kernel_arch) as (src, make_vars):
        (src / ".config").write_bytes(config)
        res = run(["make", *make_vars, "olddefconfig"], cwd=src, check=False, timeout=600)
        if not res.ok:
            raise KaError(f"make olddefconfig on {commit[:12]} failed:\n{res.err().strip()[-1500:]}")
        return (src / ".config").read_bytes()


@contextmanager
def _config_tree(kernel: KernelTree, commit: str, patch: bytes, kernel_arch: str) -> Iterator[tuple[Path, list[str]]]:
    """A temporary folder with the files of the patched baseline that configuring needs, and the make
    variables (ARCH=, CROSS_COMPILE=) to configure it with; :class:`ToolMissing` without make and gcc."""
    missing = [t for t in ("make", "gcc", "flex", "bison", "awk") if shutil.which(t) is None]
    if missing:
        raise ToolMissing(" ".join(missing))  # Kconfig runs here: its conf program is built with gcc
    with tempfile.TemporaryDirectory(prefix="ka-kconfig-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        wanted = tuple(p.format(arch=kernel_arch) for p in _NEEDED)
        patched_tree(kernel, commit, patch, src, lambda name: name.startswith(wanted)
                     or name.rsplit("/", 1)[-1].startswith("Kconfig"))
        cross = _cross(kernel_arch)
        yield src, [f"ARCH={kernel_arch}"] + ([f"CROSS_COMPILE={cross}"] if cross else [])


def _cross(kernel_arch: str) -> str:
    """The cross-compiler prefix Kconfig probes (it asks the compiler what it supports): CROSS_COMPILE,
    else Debian's for arm64 when installed, else none (the host's gcc: options that depend on what the
    compiler supports may then differ from the build host's)."""
    if "CROSS_COMPILE" in os.environ:
        return os.environ["CROSS_COMPILE"]
    prefix = {"arm64": "aarch64-linux-gnu-", "arm": "arm-linux-gnueabihf-"}.get(kernel_arch, "")
    return prefix if prefix and shutil.which(prefix + "gcc") else ""
