"""ka-build: a host's kernel package, rendered, built over ssh, checked, signed and published.

Phases: promote (the cumulative patch must apply and match its parity reference, or nothing is
built), render (the PKGBUILD and its sources, the same bytes for the same inputs), connect (the
first build host of ``infra.yaml`` that answers; one that does not is logged and the next is
tried), upload (into a folder named after the inputs, so the build path, and with it the
package, is the same for the same inputs), the build tool (makepkg, or dpkg-buildpackage in the
unpacked source: ``BUILD``; a fixed ``SOURCE_DATE_EPOCH`` and packager; its output streamed),
fetch, check (the headers' ``build`` link is relative and resolves; no absolute link dangles),
sign (verified at once), publish (``PUBLISH``: ``repo-add`` or reprepro under a lock, then the
repository must list the version).  A build that fails on a reachable host is a
failure of the inputs: no fallback, and the remote folder is kept for inspection.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ka.build import ccache
from ka.build.kconfig import audit_locally
from ka.build.render import BuildFolder, render, spec_of
from ka.build.slots import Slot, take
from ka.build.wanted import Wanted, wanted
from ka.errors import EXIT_CHECK_FAILED, EXIT_ENVIRONMENT, KaError, ToolMissing
from ka.fleet.formats import PACMAN
from ka.fleet.infra import BuildHost, Infra, Repository
from ka.fleet.repo import RepoView
from ka.io.outputs import Outputs
from ka.io.runner import run
from ka.io.ssh import Remote, RemoteFailed, SshSettings, Unreachable, connect
from ka.io.who import who
from ka.packages.aptrepo import publish_deb
from ka.packages.diff import PkgDiff, compare
from ka.packages.files import members
from ka.packages.pacmanrepo import publish
from ka.packages.published import Published, PublishError
from ka.packages.sign import sign, verify
from ka.promote.baseline import KernelTree
from ka.promote.canonical import references
from ka.promote.cumulative import b2sum
from ka.promote.flow import (
    HostPlan,
    PromoteResult,
    default_patch_path,
    plan_host,
    promote_many,
    stage_outputs,
)

Log = Callable[[str], None]
DEFAULT_PACKAGER = "kernel-agent <kernel-agent@localhost>"
SLOT_POLL = 5.0  # seconds between looks for a free build slot when every build host is busy


class BuildError(KaError):
    """The build could not be done or failed; ``result`` holds what is known (for --json and the bot)."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, result: BuildResult | None = None, exit_code: int | None = None) -> None:
        super().__init__(message, exit_code=exit_code)
        self.result = result


@dataclass(frozen=True)
class BuildOptions:
    """Settings resolved once by the caller (the CLI, the bot)."""

    out_dir: Path
    ssh: SshSettings
    packager: str = DEFAULT_PACKAGER
    gnupghome: Path | None = None
    publish: bool = True
    replace: bool = False  # publish over a version published with other bytes (else refused)
    publish_only: bool = False  # publish what an earlier build of these inputs made and signed; build nothing
    timeout: float = 4 * 3600.0
    check_against: Path | None = None
    who: str = field(default_factory=who)  # the owner a build folder's lock names
    canonical_cache: Path | None = None  # parity.canonical: HOST:PATH, re-read only when it changed
    #: False for a pull request's commit: its code runs on the build host, so it builds on
    #: infra.yaml's pull_request_build_hosts and is neither signed nor published
    trusted: bool = True
    #: with trusted False: the parity references the default branch names, the only ones read (None: any
    #: inside infra.yaml's parity_references)
    named_references: frozenset[tuple[str, str]] | None = None


@dataclass
class Artifact:
    """A built package."""

    file: str
    path: str
    size: int
    b2sum: str
    sha256: str
    signer: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BuildResult:
    """What a build did, phase by phase."""

    host: str
    commit: str | None
    patch_b2sum: str = ""
    baseline: str = ""
    pkgbase: str = ""
    version: str = ""
    build_host: str | None = None
    fallback: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    published: Published | None = None
    remote_folder: str | None = None
    kept: str | None = None  # host:folder left for inspection after a failed build
    log: str = ""
    diff: PkgDiff | None = None
    unpublished: str = ""  # why the packages were neither signed nor published
    audit: list[str] = field(default_factory=list)  # the config audit's lines (ka/build/kconfig.py)
    ccache: str = ""  # what the build took from the compiler cache (ka/build/ccache.py)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "commit": self.commit, "patch_b2sum": self.patch_b2sum, "baseline": self.baseline,
                "pkgbase": self.pkgbase, "version": self.version,
                "build_host": self.build_host, "fallback": self.fallback,
                "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "artifacts": [a.as_dict() for a in self.artifacts],
                "repository": None if self.published is None else self.published.__dict__,
                "kept": self.kept, "log": self.log, "pkgdiff": self.diff.as_dict() if self.diff else None,
                "unpublished": self.unpublished, "audit": self.audit, "ccache": self.ccache}


class _Phases:
    def __init__(self, result: BuildResult, show: Callable[[str], None]) -> None:
        self.result, self.show = result, show
        self.name: str | None = None
        self.start = time.monotonic()

    def __call__(self, name: str) -> None:
        self.end()
        self.name, self.start = name, time.monotonic()
        self.show(name)

    def end(self) -> None:
        if self.name:
            self.result.phases[self.name] = time.monotonic() - self.start
        self.name = None


def source_date_epoch(repo: Path, rev: str | None) -> int:
    """The committer time of the kernel-agent commit built from (HEAD for a work tree)."""
    res = run(["git", "-C", repo, "show", "-s", "--format=%ct", rev or "HEAD"], check=False)
    return int(res.text().strip()) if res.ok and res.text().strip().isdigit() else 1


def build(view: RepoView, host: str, infra: Infra, kernel: KernelTree | None, opts: BuildOptions, *,
          render_only: Path | None = None, log: Log = lambda line: None,
          phase: Callable[[str], None] = lambda name: None, into: BuildResult | None = None) -> BuildResult:
    """Build ``host``'s packages (see the module's docstring); :class:`BuildError` when it cannot.  ``into``:
    the result to fill as the build goes (a live view of many builds reads its build host)."""
    result = into or BuildResult(host, view.rev)
    phases = _Phases(result, phase)
    try:
        phases("promote")
        plan, promoted = _promote(view, host, kernel, infra, opts, log)
        result.patch_b2sum, result.baseline = promoted.b2sum, promoted.baseline
        phases("render")
        epoch = source_date_epoch(view.root, view.rev)
        folder = render(view, plan, view.rev, epoch=epoch, packager=opts.packager,
                        source_commit=promoted.baseline_commit)
        if folder.spec.git and folder.source_commit is None:
            if render_only is None:
                raise BuildError(f"{host}: the kernel source is checked out at the baseline's commit id, read from the "
                                 "kernel tree: give --kernel-tree or KA_KERNEL_TREE", result, 2)
            log(f"render only, no kernel tree: the source names the tag {promoted.baseline}; ka-build pins its commit")
        result.pkgbase, result.version = folder.spec.pkgbase, folder.version
        if render_only is not None:
            folder.write(render_only)
            _write_env(render_only, folder, opts, epoch)
            log(f"rendered {len(folder.files)} files into {render_only}")
            _audit_here(folder, plan, promoted, kernel, result, phases, log)
            return result
        if opts.publish_only:
            _publish_only(folder, wanted(view, host), infra, opts, result, phases, log)
            return result
        _remote_build(folder, infra, opts, epoch, result, phases, log)
        _finish(folder, infra, opts, result, phases, log)
        return result
    finally:
        phases.end()


def _promote(view: RepoView, host: str, kernel: KernelTree | None, infra: Infra, opts: BuildOptions,
             log: Log) -> tuple[HostPlan, PromoteResult]:
    named = opts.named_references
    remote = references(opts.ssh, infra, view.limits, opts.canonical_cache, log,
                        None if named is None else lambda: named)
    try:
        plan = plan_host(view, host, remote)  # a broken manifest: ManifestError, with file and line
    finally:
        remote.close()
    spec_of(plan)  # a manifest without a package section fails here, before anything else
    (promoted,) = promote_many([plan], kernel, view.rev)
    if promoted.applies is False and promoted.failure:
        raise BuildError(f"{host}: the cumulative patch does not apply on {promoted.baseline}: "
                         f"{promoted.failure.patch}: {promoted.failure.detail}; nothing was built")
    if promoted.parity.state == "mismatch":
        raise BuildError(f"{host}: parity mismatch: {promoted.parity.reason}; nothing was built")
    outputs = Outputs()
    stage_outputs(outputs, plan, promoted, default_patch_path(opts.out_dir, host))
    outputs.commit()
    checked = "applies on " + promoted.baseline if promoted.applies else "baseline not checked (no kernel tree)"
    log(f"promote: {promoted.b2sum[:16]} {checked}, parity {promoted.parity.state}")
    return plan, promoted


def _audit_here(folder: BuildFolder, plan: HostPlan, promoted: PromoteResult, kernel: KernelTree | None,
                result: BuildResult, phases: _Phases, log: Log) -> None:
    """``--render-only``: configure the patched baseline here and audit the config, as the build host will."""
    if kernel is None or promoted.baseline_commit is None:
        log("config audit: not run here (no kernel tree); the build host runs it before compiling")
        return
    phases("config audit")
    try:
        audit = audit_locally(kernel, promoted.baseline_commit, plan.cumulative.data, folder.files,
                              folder.spec.kernel_arch)
    except ToolMissing as exc:
        log(f"config audit: not run here: {exc}; the build host runs it before compiling")
        return
    result.audit = audit.findings
    for line in audit.findings:
        log(line)
    if not audit.ok:
        raise _audit_failed(folder.host, audit.findings, audit.lines, result)


def _audit_failed(host: str, findings: list[str], lines: list[str], result: BuildResult) -> BuildError:
    """The config does not hold what the manifest asks for (or could not be made): nothing is compiled."""
    if not findings or findings[-1].startswith("config audit: all "):
        tail = "\n".join(lines[-15:])
        return BuildError(f"{host}: the kernel config could not be made (base, merge or olddefconfig failed):\n{tail}",
                          result)
    return BuildError(f"{host}: the final .config does not hold what fleet/{host}.yaml's package.config asks for; "
                      "nothing was compiled:\n" + "\n".join(findings), result)


def _write_env(folder: Path, build: BuildFolder, opts: BuildOptions, epoch: int) -> None:
    """``ka-build.env``: the environment ka-build gives makepkg, for building by hand the same way."""
    env = _build_env(build, opts, epoch, None)
    (folder / "ka-build.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    (folder / "ka-build.folder").write_text(build.name + "\n")


def _build_env(folder: BuildFolder, opts: BuildOptions, epoch: int, bh: BuildHost | None) -> dict[str, str]:
    """The build's environment: a fixed time, builder and packager, so the same inputs give the same bytes."""
    env = {"SOURCE_DATE_EPOCH": str(epoch), "KBUILD_BUILD_TIMESTAMP": time.strftime("%a %b %d %H:%M:%S UTC %Y",
                                                                                  time.gmtime(epoch)),
           "KBUILD_BUILD_USER": "kernel-agent", "KBUILD_BUILD_HOST": "kernel-agent", "KBUILD_BUILD_VERSION": "1"}
    env.update(BUILD[folder.spec.kind.name].env(folder.spec.arch, opts.packager))
    if bh is not None:
        env["SRCDEST"] = posixpath.join(bh.workdir, "sources")  # the kernel's git clone, kept between builds
        if bh.cross_compile:
            env["CROSS_COMPILE"] = bh.cross_compile
    return env


def _reach(infra: Infra, opts: BuildOptions, result: BuildResult, log: Log) -> tuple[Remote, BuildHost, Slot]:
    """The first build host, in infra.yaml's order, that answers and has a free slot (ka/build/slots.py); one
    that cannot be reached is skipped, and when every one that answers is busy, the build waits its turn."""
    hosts = _build_hosts(infra, opts, result)
    unreachable: set[str] = set()
    waited_since = time.monotonic()
    while True:
        busy = []
        for bh in hosts:
            if bh.ssh in unreachable:
                continue
            try:
                remote = connect(opts.ssh, bh.ssh, bh.role)
            except Unreachable as exc:
                unreachable.add(bh.ssh)
                result.fallback.append(str(exc))
                log(f"build host {bh.ssh} cannot be reached: {exc}; trying the next")
                continue
            slot = _take(remote, bh)
            if slot is not None:
                result.build_host = bh.ssh
                log(f"build host {bh.ssh}: slot {slot.number + 1} of {bh.max_builds}")
                return remote, bh, slot
            busy.append(bh.ssh)
        if not busy:
            raise BuildError("no build host can be reached:" + "".join(f"\n  {why}" for why in result.fallback),
                             result, exit_code=EXIT_ENVIRONMENT)
        if time.monotonic() - waited_since > opts.timeout:
            raise BuildError(f"no free build slot on {', '.join(busy)} after {opts.timeout:.0f} s: their builds "
                             "run on (see max_builds in fleet/infra.yaml)", result, exit_code=EXIT_ENVIRONMENT)
        log(f"waiting for a free build slot: {', '.join(busy)} busy (max_builds in fleet/infra.yaml)")
        time.sleep(SLOT_POLL)


def _take(remote: Remote, bh: BuildHost) -> Slot | None:
    """A slot of ``bh`` on this connection, or None (the connection closed) when all are taken."""
    try:
        slot = take(remote, bh)
    except BaseException:
        remote.close()
        raise
    if slot is None:
        remote.close()
    return slot


def _build_hosts(infra: Infra, opts: BuildOptions, result: BuildResult) -> tuple[BuildHost, ...]:
    """The build hosts this build may use: a pull request's apart from the default branch's."""
    hosts = infra.build_hosts if opts.trusted else infra.pull_request_build_hosts
    if not infra.build_hosts:
        raise BuildError(f"{infra.path}: no build_hosts: ka-build needs at least one", exit_code=2)
    if not hosts:
        raise BuildError(f"{infra.path}: no pull_request_build_hosts: a pull request's build runs its code (its "
                         "patches and Makefiles) on the build host, so it needs an account or machine of its own, "
                         "where it cannot change what the default branch's builds compile; add "
                         "pull_request_build_hosts, or build after the merge", result, 2)
    if not opts.trusted:
        _apart(opts.ssh, infra)
    return hosts


def _apart(ssh: SshSettings, infra: Infra) -> None:
    """A pull request's build host must not be a default-branch build host under another ssh name."""
    trusted = {(t.hostname, t.port, t.user): t.name for t in (ssh.target(b.ssh) for b in infra.build_hosts)}
    for bh in infra.pull_request_build_hosts:
        t = ssh.target(bh.ssh)
        if (t.hostname, t.port, t.user) in trusted:
            raise BuildError(f"{infra.path}: pull_request_build_hosts {bh.ssh} leads to the same account as build "
                             f"host {trusted[(t.hostname, t.port, t.user)]} in the ssh config: a pull request's code "
                             "would run where the default branch's builds are made", exit_code=2)


def _remote_build(folder: BuildFolder, infra: Infra, opts: BuildOptions, epoch: int, result: BuildResult,
                  phases: _Phases, log: Log) -> None:
    phases("connect")
    remote, bh, slot = _reach(infra, opts, result, log)
    with remote:
        try:
            where = posixpath.join(bh.workdir, folder.name)
            result.remote_folder = f"{bh.ssh}:{where}"
            with _folder_lock(remote, bh, where, opts.who):
                _build_there(remote, bh, where, folder, opts, epoch, result, phases, log)
        finally:
            slot.release()
    log(f"built {', '.join(a.file for a in result.artifacts)} on {bh.ssh}")


@contextmanager
def _folder_lock(remote: Remote, bh: BuildHost, where: str, owner: str) -> Iterator[None]:
    """One build of these inputs at a time on this host: they share the folder named after them (an atomic
    ``mkdir`` of ``<folder>.lock``, with who holds it since when)."""
    lock = where + ".lock"
    remote.run(["mkdir", "-p", "--", bh.workdir], timeout=60)
    if not remote.run(["mkdir", "--", lock], timeout=60, check=False).ok:
        held = remote.run(["cat", "--", posixpath.join(lock, "owner")], timeout=60, check=False).output.strip()
        raise BuildError(f"another build of these inputs is running on {bh.ssh} ({held or 'owner unknown'}): it "
                         f"uses {where}; wait for it to end.  If none runs (a crash), remove {lock} there",
                         exit_code=EXIT_ENVIRONMENT)
    try:
        with remote.sftp.open(posixpath.join(lock, "owner"), "w") as fh:
            fh.write(f"{owner} since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n")
        yield
    finally:
        with suppress(KaError):  # the connection dropped: the next build names the lock left behind
            remote.run(["rm", "-rf", "--", lock], timeout=60, check=False)


def _build_there(remote: Remote, bh: BuildHost, where: str, folder: BuildFolder, opts: BuildOptions, epoch: int,
                 result: BuildResult, phases: _Phases, log: Log) -> None:
    """Upload, build, fetch, in the folder ``where`` on the build host (its lock held)."""
    jobs = remote.run(["nproc"], timeout=60, check=False).output.strip()
    phases("upload")
    local = opts.out_dir / folder.host / "build" / folder.name
    _fresh(local)
    folder.write(local)
    remote.run(["rm", "-rf", "--", where], timeout=300)
    remote.run(["mkdir", "-p", "--", posixpath.join(bh.workdir, "sources")], timeout=60)
    try:
        sent = remote.put_tree(local, where)
    except OSError as exc:
        raise _out_of_space(remote, bh, where, f"the upload failed ({exc})", result) from None
    log(f"uploaded {sent} bytes to {bh.ssh}:{where}")
    lines: list[str] = []
    full: list[str] = []

    def line(text: str) -> None:
        lines.append(text)
        del lines[:-40]
        if _FULL.search(text):
            full.append(text)
        if text.startswith("config audit:"):
            result.audit.append(text.strip())
        log(text)
    tool = folder.spec.kind.build_tool
    try:
        env = {**_build_env(folder, opts, epoch, bh), **({"MAKEFLAGS": f"-j{jobs}"} if jobs.isdigit() else {})}
        cache = ccache.find(remote, bh, folder.host, where, line)
        env.update(cache.env() if cache else {})
        phases("source")
        BUILD[folder.spec.kind.name].source_first(remote, folder, bh, where, env, line)
        phases(tool)
        argv, cwd = _build_command(folder, where)
        shared = BUILD[folder.spec.kind.name].sources_fetched if bh.max_builds > 1 else ()
        remote.run([*argv, *shared], cwd=cwd, env=env, timeout=opts.timeout, on_line=line)
    except RemoteFailed as exc:
        if full:
            raise _out_of_space(remote, bh, where, f"{tool} stopped: {full[-1].strip()[-200:]}", result) from None
        result.kept, result.log = result.remote_folder, "\n".join(lines[-20:])
        if result.audit and not result.audit[-1].startswith("config audit: all "):
            raise _audit_failed(folder.host, result.audit, lines, result) from None
        what = tool if exc.argv[:1] == [tool] else shlex.join(exc.argv[:3])
        raise BuildError(f"{what} failed on {bh.ssh} (exit {exc.code}); the folder is kept for inspection "
                         f"at {result.remote_folder}", result) from None
    if cache is not None:
        result.ccache = ccache.report(remote, cache)
        log(result.ccache)
    phases("fetch")
    out = opts.out_dir / folder.host
    for name in folder.packages():
        remote.get(posixpath.join(where, name), out / name)
        result.artifacts.append(_artifact(out / name))
    remote.run(["rm", "-rf", "--", where], timeout=300)


def _out_of_space(remote: Remote, bh: BuildHost, where: str, why: str, result: BuildResult) -> BuildError:
    """The build host's disk filled up: its folder goes (it holds the space), and the message says so; an
    upload that failed for another reason says that instead."""
    left = remote.free(bh.workdir)  # before anything is removed
    free = "?" if left is None else str(left >> 10)
    if left is None or left >= FULL_KIB << 10:  # the space ran out elsewhere (/tmp), or not at all
        result.kept = result.remote_folder
        return BuildError(f"{bh.ssh}:{where}: {why}; {free} KiB free in {bh.workdir}, so not there (a full /tmp?); "
                          f"the folder is kept for inspection at {result.remote_folder}", result, EXIT_ENVIRONMENT)
    remote.run(["rm", "-rf", "--", where], timeout=600, check=False)
    return BuildError(f"the build host {bh.ssh} ran out of disk space in {bh.workdir} ({why}; {free} KiB free); "
                      "its build folder was removed to give the space back: make room there, or build on another "
                      "host", result, EXIT_ENVIRONMENT)


def _build_command(folder: BuildFolder, where: str) -> tuple[list[str], str]:
    """The build's command line and folder: makepkg in the build folder, dpkg-buildpackage in the source."""
    build = BUILD[folder.spec.kind.name]
    return build.command(folder.spec.arch), posixpath.join(where, build.folder) if build.folder else where


def _sources_lock(bh: BuildHost) -> str:
    """The lock on ``<workdir>/sources``, which the builds of one build host share (max_builds): one fetch into
    a git mirror, or one download, at a time."""
    return posixpath.join(bh.workdir, "sources", ".ka-sources.lock")


# Under the sources lock, the kernel's git mirror made once ($1, from $2) and fetched at each build after.
_SYNC_MIRROR = ('if [ -e "$1/HEAD" ]; then git -C "$1" remote set-url origin "$2" && '
                'git -C "$1" fetch --quiet --prune origin; else git clone --quiet --mirror -- "$2" "$1"; fi')
# Under the sources lock, the tarball ($2) downloaded once into $1.
_DOWNLOAD = '[ -e "$1" ] || { curl -fsSL --retry 2 -o "$1.part" -- "$2" && mv -T -- "$1.part" "$1"; }'


def _makepkg_sources(remote: Remote, folder: BuildFolder, bh: BuildHost, where: str, env: dict[str, str],
                     log: Log) -> None:
    """Where builds at once share SRCDEST (``max_builds`` above 1), makepkg's sources (the kernel's git mirror
    or tarball) fetched and checked under the sources lock; the build itself then runs with --holdver,
    reading the mirror without fetching into it.  With one slot, the slot is the lock: makepkg fetches in
    its own run (a second makepkg start costs a second)."""
    if bh.max_builds == 1:
        return
    remote.run(["flock", _sources_lock(bh), "makepkg", "--verifysource", "--nodeps", "--noconfirm", "--noprogressbar"],
               cwd=where, env=env, timeout=4 * 3600, on_line=log)


def _deb_source(remote: Remote, folder: BuildFolder, bh: BuildHost, where: str, env: dict[str, str],
                log: Log) -> None:
    """The kernel source in ``<where>/linux`` at the baseline, with ``debian/`` in it: a clone of the git
    mirror kept in ``<workdir>/sources`` (makepkg's too), or the tarball kept there, its b2sum checked."""
    spec, src = folder.spec, posixpath.join(where, "linux")
    sources = posixpath.join(bh.workdir, "sources")
    if spec.git:
        mirror = posixpath.join(sources, "linux")
        if remote.stat(posixpath.join(mirror, "HEAD")) is None:
            log(f"source: cloning {spec.git} into {bh.ssh}:{mirror} (once; kept between builds)")
        remote.run(["flock", _sources_lock(bh), "sh", "-c", _SYNC_MIRROR, "sh", mirror, spec.git], timeout=4 * 3600,
                   on_line=log)
        remote.run(["git", "clone", "--quiet", "--shared", "--no-checkout", "--", mirror, src], timeout=600)
        assert folder.source_commit is not None  # build() refuses a git source without it
        remote.run(["git", "-C", src, "checkout", "--quiet", "--detach", f"{folder.source_commit}^{{commit}}"],
                   timeout=1800)
        got = remote.run(["git", "-C", src, "rev-parse", "HEAD"], timeout=60).output.strip()
        if got != folder.source_commit:
            raise BuildError(f"{bh.ssh}:{src}: checked out {got[:12]}, not the baseline's commit "
                             f"{folder.source_commit[:12]}")
    else:
        assert spec.tarball is not None
        name = spec.tarball.rsplit("/", 1)[-1]
        kept = posixpath.join(sources, name)
        if remote.stat(kept) is None:
            log(f"source: downloading {spec.tarball} into {bh.ssh}:{sources} (once; kept between builds)")
        remote.run(["flock", _sources_lock(bh), "sh", "-c", _DOWNLOAD, "sh", kept, spec.tarball], timeout=3600)
        got = remote.run(["b2sum", "--", kept], timeout=600).output.split()[0]
        if got != spec.tarball_b2sum:
            raise BuildError(f"{bh.ssh}:{kept}: b2sum {got[:16]}… is not package.source.b2sum "
                             f"{(spec.tarball_b2sum or '')[:16]}…: remove it to download it again, or fix the b2sum")
        remote.run(["mkdir", "--", src], timeout=60)
        remote.run(["tar", "-xf", kept, "-C", src, "--strip-components=1"], timeout=3600)
    remote.run(["cp", "-a", "--", posixpath.join(where, "debian"), posixpath.join(src, "debian")], timeout=60)


_FULL = re.compile(r"No space left on device|Disk quota exceeded")
FULL_KIB = 64 << 10  # under this much free in the work folder, "No space left on device" was about it


def _fresh(folder: Path) -> None:
    with suppress(FileNotFoundError):
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _artifact(path: Path) -> Artifact:
    data = path.read_bytes()
    return Artifact(path.name, str(path), len(data), b2sum(data), hashlib.sha256(data).hexdigest())


def _finish(folder: BuildFolder, infra: Infra, opts: BuildOptions, result: BuildResult, phases: _Phases,
            log: Log) -> None:
    phases("check")
    packages = [Path(a.path) for a in result.artifacts]
    check_links(packages[0], packages[1])
    if opts.check_against is not None:
        result.diff = compare(opts.check_against, packages[0])
    if not opts.trusted:
        result.unpublished = ("a pull request's commit: the fleet's key signs, and its repository serves, only "
                              "builds of the default branch")
        log(f"neither signed nor published: {result.unpublished}")
        return
    repo = infra.repository_for(folder.spec.kind)
    if repo is None:
        if opts.publish:
            raise BuildError(f"{infra.path}: no {folder.spec.kind.repository_key}: nothing to sign with or "
                             "publish to (--no-publish builds unsigned)", result, 2)
        log("not signed: infra.yaml names no repository key")
        return
    phases("sign")
    for artifact, pkg in zip(result.artifacts, packages, strict=True):
        artifact.signer = sign(pkg, repo.key, opts.gnupghome).signer
    log(f"signed with {result.artifacts[0].signer}")
    if opts.publish:
        _publish(folder, repo, opts, result, phases, log)
    if result.diff is not None and not result.diff.same:
        raise BuildError(f"built, but not the same as {opts.check_against}: " + "; ".join(result.diff.differences[:10]),
                         result)


def _publish(folder: BuildFolder, repo: Repository, opts: BuildOptions, result: BuildResult, phases: _Phases,
             log: Log) -> None:
    """Publish the signed packages; when the repository cannot take them, say where they are and how to
    publish them later (they were built and signed: a second build is not needed)."""
    phases("publish")
    packages = [Path(a.path) for a in result.artifacts]
    try:
        result.published = PUBLISH[folder.spec.kind.name](opts, repo, packages, folder, result.version, log)
    except KaError as exc:
        where = ", ".join(str(p) for p in packages)
        raise BuildError(f"built and signed, but not published: {exc}.  The signed packages are {where}; once "
                         f"the repository takes them: ka-build {folder.host} --publish-only", result,
                         exc.exit_code) from None


def _publish_only(folder: BuildFolder, want: Wanted, infra: Infra, opts: BuildOptions, result: BuildResult,
                  phases: _Phases, log: Log) -> None:
    """``--publish-only``: the packages an earlier ka-build of these same inputs left in out/<host>/, their
    signatures checked with the repository's key and their inputs with the manifest's, then published."""
    repo = infra.repository_for(folder.spec.kind)
    if repo is None:
        raise BuildError(f"{infra.path}: no {folder.spec.kind.repository_key} to publish to", result, 2)
    phases("check")
    out = opts.out_dir / folder.host
    for name in folder.packages():
        path = out / name
        if not path.is_file() or not path.with_name(name + ".sig").is_file():
            raise BuildError(f"{path}: not there, or not signed ({name}.sig): --publish-only publishes what a "
                             f"ka-build of these inputs made and signed; build first: ka-build {folder.host}",
                             result, 2)
        artifact = _artifact(path)
        artifact.signer = verify(path, path.with_name(name + ".sig"), repo.key, opts.gnupghome).signer
        result.artifacts.append(artifact)
    record = next((m.data for m in members(Path(result.artifacts[0].path), keep=lambda n: n.endswith(
        "/kernel-agent")) if m.name.endswith("/kernel-agent") and m.data is not None), b"")
    got = dict(ln.split("=", 1) for ln in record.decode("utf-8", "replace").splitlines() if "=" in ln)
    inputs = (("the cumulative patch", "patch_b2sum", want.patch_b2sum), ("the config", "config_b2sum",
                                                                          want.config_b2sum))
    differs = [what for what, key, value in inputs if got.get(key) != value]
    if differs:
        raise BuildError(f"{result.artifacts[0].path}: {' and '.join(differs)} of that build differ from what "
                         f"fleet/{folder.host}.yaml gives now: build it: ka-build {folder.host}", result, 1)
    log(f"{len(result.artifacts)} packages from an earlier build, signed by {result.artifacts[0].signer}")
    _publish(folder, repo, opts, result, phases, log)


def check_links(kernel: Path, headers: Path) -> None:
    """The headers' ``build`` link is relative and resolves in the package; no link dangles absolutely."""
    for pkg in (kernel, headers):
        found = {m.name.rstrip("/"): m for m in members(pkg)}
        for m in found.values():
            if m.kind != "link":
                continue
            target = posixpath.normpath(posixpath.join(posixpath.dirname(m.name), m.link))
            if m.link.startswith("/") and m.link.lstrip("/") not in found:
                raise BuildError(f"{pkg.name}: {m.name} is an absolute link to {m.link}, which is not in the package "
                                 "(it would dangle on the device)")
            if m.name.endswith("/build") and (m.link.startswith("/") or target not in found):
                raise BuildError(f"{pkg.name}: {m.name} -> {m.link} must be a relative link that resolves inside "
                                 "the package (ln -sr)")
    if not any(m.name.endswith("/build") and m.kind == "link" for m in members(headers)):
        raise BuildError(f"{headers.name}: no usr/lib/modules/<release>/build link")


# --- what ka-build does its own way per package format (what a format is: ka/fleet/formats.py) ---------

def _publish_pacman(opts: BuildOptions, repo: Repository, packages: list[Path], folder: BuildFolder, version: str,
                    log: Log) -> Published:
    return publish(opts.ssh, repo, packages, [f"{name}-{version}" for name in folder.names()], log,
                   replace=opts.replace)


def _publish_deb(opts: BuildOptions, repo: Repository, packages: list[Path], folder: BuildFolder, version: str,
                 log: Log) -> Published:
    if opts.replace:
        raise PublishError("--replace: reprepro keeps a published version's bytes for good; raise package.pkgrel "
                           "and build again; nothing was published")
    return publish_deb(opts.ssh, repo, packages, folder.spec.arch, log)


@dataclass(frozen=True)
class FormatBuild:
    """How the build tool of a format runs."""

    command: Callable[[str], list[str]]  # the command line, for an architecture
    folder: str  # the subfolder of the build folder it runs in ("": the folder itself)
    env: Callable[[str, str], dict[str, str]]  # what it reads from its environment, for (arch, packager)
    #: the source made ready before the build: fetched into the build host's shared sources under their lock
    #: (and, for a deb, unpacked)
    source_first: Callable[[Remote, BuildFolder, BuildHost, str, dict[str, str], Log], None]
    sources_fetched: tuple[str, ...] = ()  # flags for a build whose sources source_first fetched under the lock


BUILD = {
    "pacman": FormatBuild(
        command=lambda arch: ["makepkg", "--nodeps", "--noconfirm", "--cleanbuild", "--force", "--noprogressbar"],
        folder="", env=lambda arch, packager: {"PKGEXT": PACMAN.extension, "CARCH": arch, "PACKAGER": packager},
        source_first=_makepkg_sources, sources_fetched=("--holdver",)),
    "deb": FormatBuild(  # dpkg-buildpackage reads debian/ in the unpacked source, not its environment
        command=lambda arch: ["dpkg-buildpackage", "--build=binary", "--no-sign", "--no-check-builddeps",
                              f"--host-arch={arch}"],
        folder="linux", env=lambda arch, packager: {}, source_first=_deb_source),
}
PUBLISH = {"pacman": _publish_pacman, "deb": _publish_deb}  # into its repository, signed
