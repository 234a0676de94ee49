"""Command-line entry points: ``ka`` and the ``ka-<verb>`` shortcuts.

:func:`main` is the one error boundary: kernel-agent errors become a message
on stderr and their exit code (0 passed, 1 a check failed, 2 bad input,
3 environment).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ka import __version__
from ka.cli.progress import Progress
from ka.cli.report import (
    print_build,
    print_bump,
    print_host_added,
    print_install,
    print_live,
    print_many_builds,
    print_promote,
    print_rollout,
    print_status,
    promote_line,
)
from ka.cli.settings import resolve
from ka.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_OK, BadInput, KaError
from ka.fleet.formats import PackageFormat, named
from ka.fleet.manifest import check_host_name, list_hosts
from ka.fleet.repo import GitTree, RepoView, WorkTree
from ka.io import runner
from ka.io.outputs import Outputs
from ka.limits import Limits
from ka.promote import flow as promote
from ka.promote.baseline import KernelTree
from ka.promote.flow import PromoteResult
from ka.status.offline import fleet_status

log = logging.getLogger("ka")


def _promote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("hosts", nargs="*", metavar="HOST", help="a host of fleet/ (one or more, or --all)")
    p.add_argument("--all", action="store_true", help="every host in fleet/")
    p.add_argument("--repo", metavar="DIR", help="the kernel-agent repository (default: found upward)")
    p.add_argument("--rev", metavar="REV", help="read fleet/ and patches/ from this commit, no checkout")
    p.add_argument("--kernel-tree", metavar="PATH", help="kernel git tree (default: $KA_KERNEL_TREE)")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write the patch (one host only)")
    p.add_argument("--out-dir", metavar="DIR", help="folder for <host>/<host>-cumulative.patch (default: out/)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--ssh-config", metavar="FILE", help="for parity.canonical: HOST:PATH (default: $KA_SSH_CONFIG)")
    p.add_argument("--known-hosts", metavar="FILE", help="default: $KA_KNOWN_HOSTS or ~/.ssh/known_hosts")
    p.set_defaults(func=cmd_promote)


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("hosts", nargs="*", metavar="HOST", help="only these hosts (default: every host in fleet/)")
    p.add_argument("--repo", metavar="DIR", help="the kernel-agent repository (default: found upward)")
    p.add_argument("--out-dir", metavar="DIR", help="where the verbs' records are, out/<host>/ (default: out/)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--live", action="store_true", help="ask every host over ssh: running kernel, installed package, "
                   "newest built, last install")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per host, with --live")
    p.add_argument("--ssh-config", metavar="FILE", help="with --live (default: $KA_SSH_CONFIG or ~/.ssh/config)")
    p.add_argument("--known-hosts", metavar="FILE", help="with --live (default: $KA_KNOWN_HOSTS)")
    p.set_defaults(func=cmd_status)


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("hosts", nargs="*", metavar="HOST",
                   help="a host of fleet/ whose kernel to build (one or more, or --all: several build at once, each "
                        "on the first build host with a free slot, max_builds in fleet/infra.yaml)")
    p.add_argument("--all", action="store_true", help="every host in fleet/")
    p.add_argument("--repo", metavar="DIR", help="the kernel-agent repository (default: found upward)")
    p.add_argument("--rev", metavar="REV", help="build this commit's fleet/ and patches/ (no checkout)")
    p.add_argument("--kernel-tree", metavar="PATH", help="kernel git tree for the baseline check (KA_KERNEL_TREE)")
    p.add_argument("--out-dir", metavar="DIR", help="where out/<host>/ goes (default: out/)")
    p.add_argument("--render-only", metavar="DIR",
                   help="write the build folder (PKGBUILD and sources, or debian/) here, build nothing")
    p.add_argument("--no-publish", action="store_true", help="stop after signing")
    p.add_argument("--publish-only", action="store_true",
                   help="publish the packages an earlier build of these inputs made and signed (out/HOST/); build "
                        "nothing")
    p.add_argument("--replace", action="store_true",
                   help="publish over a version already published with other bytes (a pacman repository; say it only "
                        "when nothing installed that version)")
    p.add_argument("--check-against", metavar="FILE", help="compare the kernel package with this one (ka pkgdiff)")
    p.add_argument("--ssh-config", metavar="FILE", help="default: $KA_SSH_CONFIG or ~/.ssh/config")
    p.add_argument("--known-hosts", metavar="FILE", help="default: $KA_KNOWN_HOSTS or ~/.ssh/known_hosts")
    p.add_argument("--gnupghome", metavar="DIR", help="the signing keyring (default: $KA_GNUPGHOME, $GNUPGHOME)")
    p.add_argument("--timeout", type=float, default=4 * 3600, metavar="SECONDS",
                   help="the build's time limit (makepkg or dpkg-buildpackage)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_build)


def _install_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("hosts", nargs="*", metavar="HOST",
                   help="a host of fleet/ to install on (one or more, or --all: a rollout in waves, install.wave in "
                        "the manifests; the first host is the canary; it stops at the first host that fails)")
    p.add_argument("--all", action="store_true", help="every host in fleet/")
    p.add_argument("--parallel", action="store_true",
                   help="in a rollout, a wave's hosts all at once (the canary still goes alone, first)")
    p.add_argument("--repo", metavar="DIR", help="the kernel-agent repository (default: found upward)")
    p.add_argument("--rev", metavar="REV", help="read the manifest from this commit (no checkout)")
    p.add_argument("--package", metavar="FILE", help="install this package (FILE.sig beside it) instead of the "
                   "newest published one (in a rollout: on every host, which must all install its pkgbase)")
    p.add_argument("--rollback", nargs="?", const="", metavar="RELEASE",
                   help="boot the kept previous kernel again, or RELEASE from the backup host")
    p.add_argument("--dry-run", action="store_true",
                   help="check what can be reached, then print every step and command and what could not be "
                        "checked; change nothing (exit 0 even with no host reachable)")
    p.add_argument("--no-reboot", action="store_true", help="stop after the install (a reboot is then pending)")
    p.add_argument("--out-dir", metavar="DIR", help="where out/<host>/ goes (default: out/)")
    p.add_argument("--ssh-config", metavar="FILE", help="default: $KA_SSH_CONFIG or ~/.ssh/config")
    p.add_argument("--known-hosts", metavar="FILE", help="default: $KA_KNOWN_HOSTS or ~/.ssh/known_hosts")
    p.add_argument("--gnupghome", metavar="DIR", help="the keyring that verifies packages ($KA_GNUPGHOME, $GNUPGHOME)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_install)


def _pkgdiff_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A", help="a package: pacman's (.pkg.tar.zst) or Debian's (.deb)")
    p.add_argument("b", metavar="B", help="another package of the same format")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_pkgdiff)


def _baseline_args(p: argparse.ArgumentParser) -> None:
    bsub = p.add_subparsers(dest="baseline_cmd", required=True)
    imp = bsub.add_parser("import", help="turn a kernel source tarball into a git tree with a tag")
    imp.add_argument("tarball", metavar="TARBALL", help="a kernel source tarball (linux-6.12.117.tar.xz, Debian's "
                     "linux-source-6.12.tar.xz)")
    imp.add_argument("--tree", required=True, metavar="PATH", help="git tree to create or add to")
    imp.add_argument("--ref", metavar="TAG", help="tag name (default: from the Makefile, e.g. v6.12.117)")
    imp.set_defaults(func=cmd_baseline_import)
    bump = bsub.add_parser("bump", help="move hosts to a new baseline where their cumulative patch still applies")
    bump.add_argument("hosts", nargs="*", metavar="HOST", help="a host of fleet/ (one or more, or --all)")
    bump.add_argument("--all", action="store_true", help="every host in fleet/")
    bump.add_argument("--to", required=True, metavar="TAG", help="the new baseline, e.g. v6.12.118")
    bump.add_argument("--tarball", metavar="FILE", help="import the new baseline from this source tarball first "
                      "(when the kernel tree lacks it)")
    bump.add_argument("--fetch", metavar="REMOTE", help="fetch the tag from this git remote first (when the kernel "
                      "tree lacks it), e.g. https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git")
    bump.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    bump.add_argument("--repo", metavar="DIR", help="the kernel-agent repository (default: the current one)")
    bump.add_argument("--kernel-tree", metavar="PATH", help="the kernel git tree (KA_KERNEL_TREE)")
    bump.add_argument("--json", action="store_true", help="print JSON")
    bump.set_defaults(func=cmd_baseline_bump)


def _host_args(p: argparse.ArgumentParser) -> None:
    hsub = p.add_subparsers(dest="host_cmd", required=True)
    add = hsub.add_parser("add", help="probe a new host over ssh and write its manifest and config")
    add.add_argument("name", metavar="NAME", help="the new host's name (fleet/NAME.yaml)")
    add.add_argument("--ssh", required=True, metavar="TARGET", help="its name in the ssh config (install.ssh)")
    add.add_argument("--like", metavar="HOST", help="take the includes of this host of the fleet (else: proposed "
                     "from the board's compatible strings)")
    add.add_argument("--accept-key", metavar="SHA256:…", help="pin the host's key when it has this fingerprint "
                     "(checked on the board itself); any other unknown key is refused")
    add.add_argument("--operator", metavar="LOGIN", help="make this forge login an operator of the host in "
                     "infra.yaml (who may install and roll back from the forge)")
    add.add_argument("--dry-run", action="store_true", help="print the files instead of writing them")
    add.add_argument("--repo", metavar="DIR", help="the kernel-agent repository (default: found upward)")
    add.add_argument("--kernel-tree", metavar="PATH", help="the kernel git tree, for the baseline's tag "
                     "(KA_KERNEL_TREE)")
    add.add_argument("--ssh-config", metavar="FILE", help="default: $KA_SSH_CONFIG or ~/.ssh/config")
    add.add_argument("--known-hosts", metavar="FILE", help="default: $KA_KNOWN_HOSTS or ~/.ssh/known_hosts")
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(func=cmd_host_add)


def cmd_host_add(args: argparse.Namespace) -> int:
    """``ka host add``: 0 written (or printed), 2 refused (nothing written)."""
    from dataclasses import replace

    from ka.host.add import add_host
    from ka.io.ssh import SshSettings

    settings = resolve(args.repo, args.kernel_tree, None, None, Path.cwd(), args.environ)
    if settings.kernel_tree is None:
        raise BadInput("ka host add finds the baseline's tag in the kernel tree: give --kernel-tree or KA_KERNEL_TREE")
    ssh = replace(SshSettings.from_env(args.environ, config=args.ssh_config, known_hosts=args.known_hosts),
                  accept_key=args.accept_key)
    with Progress("ka host add", live=None if not args.json else False) as progress:
        added = add_host(WorkTree(settings.repo, settings.limits), settings.repo, args.name, args.ssh, ssh,
                         settings.kernel_tree, like=args.like, dry_run=args.dry_run, operator=args.operator,
                         log=progress.line)
    if args.json:
        print(json.dumps({"host": added.name, "written": added.written, "files": added.files,
                          "proposed": added.proposed, "next": added.next_steps()}, indent=2))
    else:
        print_host_added(added)
    return EXIT_OK


def build_parser(prog: str = "ka") -> argparse.ArgumentParser:
    """The ``ka`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog=prog, description="kernel-agent: fleet kernels from one repository")
    parser.add_argument("--version", action="version", version=f"kernel-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    sub = parser.add_subparsers(dest="command", required=True)
    for verb, (fill, text) in VERBS.items():
        fill(sub.add_parser(verb, help=text, description=text))
    return parser


VERBS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {
    "promote": (_promote_args, "build and check the cumulative patch of hosts"),
    "status": (_status_args, "the fleet at a glance"),
    "baseline": (_baseline_args, "manage kernel baselines"),
    "build": (_build_args, "build, sign and publish a host's kernel package on a build host"),
    "install": (_install_args, "back up, install, reboot and confirm a host's new kernel (or roll back)"),
    "pkgdiff": (_pkgdiff_args, "compare two packages, modulo when and where they were built"),
    "host": (_host_args, "add a new host to the fleet from what it says over ssh"),
}


def verb_parser(verb: str) -> argparse.ArgumentParser:
    """A stand-alone parser for ``ka-<verb>``."""
    fill, text = VERBS[verb]
    parser = argparse.ArgumentParser(prog=f"ka-{verb}", description=text)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    fill(parser)
    return parser


def _selected_hosts(view: RepoView, args: argparse.Namespace) -> list[str]:
    """The hosts a command names (``HOST…``, or every one with ``--all``), each checked to be the fleet's."""
    hosts = list_hosts(view) if args.all else list(args.hosts)
    if not hosts:
        raise BadInput(f"{view.display('fleet/')}: no host manifests")
    for host in hosts:
        check_host_name(view, host)
    return hosts


def cmd_promote(args: argparse.Namespace) -> int:
    """``ka promote``."""
    if bool(args.hosts) == bool(args.all):
        raise BadInput("name one or more hosts, or give --all")
    if args.output and (args.all or len(args.hosts) != 1):
        raise BadInput("-o FILE needs exactly one host")
    settings = resolve(args.repo, args.kernel_tree, args.out_dir, args.rev, Path.cwd(), args.environ)
    output = _output_path(args.output, settings.repo) if args.output else None
    view: RepoView = (GitTree(settings.repo, args.rev, settings.limits) if args.rev
                      else WorkTree(settings.repo, settings.limits))
    hosts = _selected_hosts(view, args)
    remote = _RemoteFiles(args.ssh_config, args.known_hosts, settings.limits, WorkTree(settings.repo, settings.limits),
                          args.environ)
    try:
        plans = promote.plan_hosts(view, hosts, remote)
    finally:
        remote.close()
    kernel = KernelTree(settings.kernel_tree) if settings.kernel_tree else None
    rev = view.rev or _worktree_rev(settings.repo)
    live = None if args.json or len(hosts) == 1 else _live_line
    results = promote.promote_many(plans, kernel, rev, on_done=live)
    outputs = Outputs()
    for plan, result in zip(plans, results, strict=False):
        path = output or promote.default_patch_path(settings.out_dir, result.host)
        promote.stage_outputs(outputs, plan, result, path)
    outputs.commit()
    if args.json:
        data = [r.as_dict() for r in results]
        print(json.dumps(data if args.all or len(results) > 1 else data[0], indent=2))
    else:
        print_promote(results, brief=len(results) > 1, printed=live is not None)
    return EXIT_OK if all(r.ok for r in results) else EXIT_CHECK_FAILED


class _RemoteFiles:
    """``parity.canonical: HOST:PATH`` over SFTP, inside the folders ``parity_references`` of the checkout's
    infra.yaml allows (never a ``--rev``'s); connecting (and importing paramiko) only when one is named."""

    def __init__(self, config: str | None, known_hosts: str | None, limits: Limits, view: RepoView,
                 environ: Mapping[str, str]) -> None:
        self.args, self.limits, self.view, self.environ = (config, known_hosts), limits, view, environ
        self.real: Any = None

    def read(self, host: str, path: str) -> bytes | None:
        if self.real is None:
            from ka.fleet.infra import load_infra
            from ka.io.ssh import SshSettings
            from ka.promote.canonical import references

            ssh = SshSettings.from_env(self.environ, config=self.args[0], known_hosts=self.args[1])
            self.real = references(ssh, load_infra(self.view), self.limits)
        return bytes(self.real.read(host, path))

    def close(self) -> None:
        if self.real is not None:
            self.real.close()


def _on_head(repo: Path, rev: str) -> bool:
    """True when ``rev`` is the checkout's HEAD or one of its ancestors."""
    return runner.run(["git", "-C", repo, "merge-base", "--is-ancestor", rev, "HEAD"], check=False).ok


def _output_path(given: str, repo: Path) -> Path:
    """``-o FILE`` (relative to the repository); its folder must exist, as for any ``-o``."""
    path = Path(given) if Path(given).is_absolute() else repo / given
    if not path.parent.is_dir():
        raise BadInput(f"-o {given}: the folder {path.parent} does not exist")
    return path


_PRINT_LOCK = threading.Lock()


def _live_line(result: PromoteResult) -> None:
    """Print a host's line as soon as it finishes (hosts run in parallel)."""
    with _PRINT_LOCK:
        print(promote_line(result), flush=True)


def _worktree_rev(repo: Path) -> str | None:
    head = runner.run(["git", "-C", repo, "rev-parse", "--verify", "--quiet", "HEAD"], check=False)
    if not head.ok:
        return None
    dirty = runner.run(["git", "-C", repo, "status", "--porcelain", "--", "fleet", "patches"], check=False)
    return head.text().strip() + ("+dirty" if dirty.stdout.strip() else "")


def cmd_status(args: argparse.Namespace) -> int:
    """``ka status``."""
    settings = resolve(args.repo, None, args.out_dir, None, Path.cwd(), args.environ)
    view = WorkTree(settings.repo, settings.limits)
    for host in args.hosts:
        check_host_name(view, host)
    if args.live:
        return _live_status(args, view)
    rows = fleet_status(view, settings.out_dir, args.hosts or None)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print_status(rows)
    return EXIT_BAD_INPUT if any(r.error for r in rows) else EXIT_OK


def _live_status(args: argparse.Namespace, view: RepoView) -> int:
    """``ka status --live``: 0 every host answered, 1 some did not."""
    from ka.fleet.infra import load_infra
    from ka.io.ssh import SshSettings
    from ka.status.live import live_status

    if not 0 < args.timeout <= 600:
        raise BadInput(f"--timeout {args.timeout:g}: give 1 to 600 seconds")
    ssh = SshSettings.from_env(args.environ, config=args.ssh_config, known_hosts=args.known_hosts)
    rows = live_status(view, load_infra(view), ssh, args.hosts or None, timeout=args.timeout)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print_live(rows)
    return EXIT_OK if all(r.reachable for r in rows) else EXIT_CHECK_FAILED


def cmd_baseline_import(args: argparse.Namespace) -> int:
    """``ka baseline import``."""
    from ka.promote.kernel_import import import_tarball  # tarfile: not on ka-promote's start-up

    def progress(files: int) -> None:
        print(f"  {files} files…", file=sys.stderr, flush=True)

    print(f"importing {args.tarball} into {args.tree}", file=sys.stderr)
    result = import_tarball(Path(args.tarball), Path(args.tree), args.ref, progress)
    print(f"{result.tree}: tag {result.ref} -> {result.commit} ({result.files} files)")
    return EXIT_OK


def cmd_baseline_bump(args: argparse.Namespace) -> int:
    """``ka baseline bump``: 0 every selected host moved (or already there), 1 one or more no longer apply."""
    from ka.promote import bump
    from ka.promote.kernel_import import fetch_tag, import_tarball

    if bool(args.hosts) == bool(args.all):
        raise BadInput("name one or more hosts, or give --all")
    to = bump.check_ref(args.to)
    settings = resolve(args.repo, args.kernel_tree, None, None, Path.cwd(), args.environ)
    if settings.kernel_tree is None:
        raise BadInput("ka baseline bump checks each host's patch on the new baseline: give --kernel-tree or "
                       "KA_KERNEL_TREE")
    if args.tarball:
        print(f"importing {args.tarball} into {settings.kernel_tree} as {to}", file=sys.stderr)
        import_tarball(Path(args.tarball), settings.kernel_tree, to)
    elif args.fetch:
        fetch_tag(settings.kernel_tree, args.fetch, to)
    view = WorkTree(settings.repo, settings.limits)
    rows, edits = bump.plan_bump(view, _selected_hosts(view, args), to, KernelTree(settings.kernel_tree))
    if not args.dry_run:
        bump.write(settings.repo, edits)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print_bump(rows, to, args.dry_run)
    return EXIT_CHECK_FAILED if any(r.state == bump.FAILS for r in rows) else EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    """``ka build``: 0 every host built, else the worst of their exit codes."""
    from ka.build.flow import BuildOptions
    from ka.fleet.infra import load_infra
    from ka.io.ssh import SshSettings
    from ka.promote.canonical import named_references

    if bool(args.hosts) == bool(args.all):
        raise BadInput("name one or more hosts, or give --all")
    settings = resolve(args.repo, args.kernel_tree, args.out_dir, args.rev, Path.cwd(), args.environ)
    view: RepoView = (GitTree(settings.repo, args.rev, settings.limits) if args.rev
                      else WorkTree(settings.repo, settings.limits))
    hosts = _selected_hosts(view, args)
    one_only = [name for name, given in (("--render-only", args.render_only), ("--check-against", args.check_against))
                if given]
    if len(hosts) > 1 and one_only:
        raise BadInput(f"{one_only[0]} is for one host: name exactly one")
    checkout = WorkTree(settings.repo, settings.limits)
    infra = load_infra(checkout)  # where to connect comes from your checkout, never from --rev
    trusted = view.rev is None or _on_head(settings.repo, view.rev)
    opts = BuildOptions(out_dir=settings.out_dir, ssh=SshSettings.from_env(args.environ, config=args.ssh_config,
                                                                        known_hosts=args.known_hosts),
                        packager=args.environ.get("KA_PACKAGER") or BuildOptions.packager,
                        gnupghome=_gnupghome(args.gnupghome, args.environ), publish=not args.no_publish,
                        replace=args.replace, publish_only=args.publish_only, timeout=args.timeout,
                        check_against=Path(args.check_against) if args.check_against else None, trusted=trusted,
                        named_references=None if trusted else frozenset(named_references(checkout)))
    if not trusted:
        print(f"ka-build: --rev {args.rev} is not HEAD or one of its ancestors: built as a pull request's commit, "
              "on pull_request_build_hosts, neither signed nor published", file=sys.stderr)
    kernel = KernelTree(settings.kernel_tree) if settings.kernel_tree else None
    if len(hosts) == 1:
        return _build_one(view, hosts[0], infra, kernel, opts, args)
    return _build_many(view, hosts, infra, kernel, opts, args)


def _build_one(view: RepoView, host: str, infra: Any, kernel: KernelTree | None, opts: Any,
               args: argparse.Namespace) -> int:
    """One host's build, its phases shown as they go."""
    from ka.build.flow import BuildError, build

    log_path = opts.out_dir / host / "build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with Progress("ka-build", live=None if not args.json else False) as progress, \
            open(log_path, "w", encoding="utf-8") as log_file:
        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()  # a build runs for minutes: its log is followed (tail -f) as it goes
            progress.line(line)
        try:
            result = build(view, host, infra, kernel, opts, log=log, phase=progress.phase,
                           render_only=Path(args.render_only) if args.render_only else None)
        except BuildError as exc:
            progress.close()
            if exc.result is not None and args.json:
                print(json.dumps({**exc.result.as_dict(), "ok": False, "error": str(exc)}, indent=2))
            elif exc.result is not None and exc.result.log:
                print("\n".join("  " + ln for ln in exc.result.log.splitlines()), file=sys.stderr)
            raise
    if args.json:
        print(json.dumps({**result.as_dict(), "ok": True}, indent=2))
    else:
        print_build(result, args.render_only, log_path)
    return EXIT_OK


def _build_many(view: RepoView, hosts: list[str], infra: Any, kernel: KernelTree | None, opts: Any,
                args: argparse.Namespace) -> int:
    """Several hosts' builds at once (ka/build/many.py): a live table, then a row a host; the worst exit code."""
    from ka.build.many import HostBuild, build_many
    from ka.cli.many import LiveHosts
    from ka.io.hostruns import worst

    rows = [HostBuild(h) for h in hosts]
    with _host_logs(opts.out_dir, "build.log", "w") as log_for, \
            LiveHosts("ka-build", rows, live=None if not args.json else False) as live:
        build_many(view, rows, infra, kernel, opts, log_for=log_for, changed=live.changed)
    code = worst(rows)
    if args.json:
        print(json.dumps({"ok": code == EXIT_OK, "exit_code": code, "hosts": [b.as_dict() for b in rows]}, indent=2))
    else:
        print_many_builds(rows, opts.out_dir)
    return code


def cmd_install(args: argparse.Namespace) -> int:
    """``ka install``: 0 installed and booted (or pending a reboot, or a dry run), 1 refused or failed."""
    from ka.fleet.infra import load_infra
    from ka.install.installer import InstallError, InstallOptions
    from ka.io.ssh import SshSettings

    if args.rollback is not None and args.package:
        raise BadInput("--rollback and --package do not go together")
    if bool(args.hosts) == bool(args.all):
        raise BadInput("name one or more hosts, or give --all")
    settings = resolve(args.repo, None, args.out_dir, args.rev, Path.cwd(), args.environ)
    view: RepoView = (GitTree(settings.repo, args.rev, settings.limits) if args.rev
                      else WorkTree(settings.repo, settings.limits))
    hosts = _selected_hosts(view, args)
    many = args.all or len(hosts) > 1
    if many and args.rollback is not None:
        raise BadInput("--rollback is for one host: name exactly one")
    infra = load_infra(WorkTree(settings.repo, settings.limits))  # from your checkout, never from --rev
    opts = InstallOptions(out_dir=settings.out_dir, ssh=SshSettings.from_env(args.environ, config=args.ssh_config,
                                                                          known_hosts=args.known_hosts),
                          gnupghome=_gnupghome(args.gnupghome, args.environ),
                          package=Path(args.package) if args.package else None,
                          dry_run=args.dry_run, reboot=not args.no_reboot)
    if many:
        return _roll_out(view, hosts, infra, opts, args)
    args.host = hosts[0]
    log_path = settings.out_dir / args.host / "install.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with Progress("ka-install", live=None if not args.json else False) as progress, \
            open(log_path, "a", encoding="utf-8") as log_file:
        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            progress.line(line)
        try:
            result = _install_or_rollback(args, view, infra, opts, log, progress.phase)
        except InstallError as exc:
            progress.close()
            if exc.result is not None:
                if args.json:
                    print(json.dumps({**exc.result.as_dict(), "error": str(exc)}, indent=2))
                else:
                    print_install(exc.result, log_path)
            raise
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print_install(result, log_path)
    return EXIT_OK


def _roll_out(view: RepoView, hosts: list[str], infra: Any, opts: Any, args: argparse.Namespace) -> int:
    """Many hosts' installs in waves (ka/install/waves.py): a live table, then a row a host; the worst exit code."""
    from ka.cli.many import LiveHosts
    from ka.install.waves import plan, roll_out
    from ka.io import stopping
    from ka.io.hostruns import worst

    rows = plan(view, hosts)
    with _host_logs(opts.out_dir, "install.log", "a") as log_for, \
            LiveHosts("ka-install", rows, live=None if not args.json else False) as live, stopping.deferred():
        roll_out(view, rows, infra, opts, parallel=args.parallel, log_for=log_for, changed=live.changed)
    code = worst(rows)
    if args.json:
        print(json.dumps({"ok": code == EXIT_OK, "exit_code": code, "hosts": [r.as_dict() for r in rows]}, indent=2))
    else:
        print_rollout(rows, opts.out_dir)
    return code


@contextmanager
def _host_logs(out_dir: Path, name: str, mode: str) -> Iterator[Callable[[str], Callable[[str], None]]]:
    """``log_for(host)``: a writer of out/<host>/<name>, a line at a time, flushed (followed with tail -f); every
    file closed at the end."""
    files: list[IO[str]] = []

    def log_for(host: str) -> Callable[[str], None]:
        path = out_dir / host / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, mode, encoding="utf-8")  # noqa: SIM115 (closed below, after every host)
        files.append(fh)

        def write(line: str) -> None:
            fh.write(line + "\n")
            fh.flush()
        return write
    try:
        yield log_for
    finally:
        for fh in files:
            fh.close()


def _install_or_rollback(args: argparse.Namespace, view: RepoView, infra: Any, opts: Any,
                         log: Callable[[str], None], phase: Callable[[str], None]) -> Any:
    from ka.install.flow import install, rollback
    from ka.io import stopping

    with stopping.deferred():  # a signal stops the install where that is safe, with the way back
        if args.rollback is not None:
            return rollback(view, args.host, infra, opts, args.rollback or None, log=log, phase=phase)
        return install(view, args.host, infra, opts, log=log, phase=phase)


def _gnupghome(given: str | None, environ: Mapping[str, str]) -> Path | None:
    found = given or environ.get("KA_GNUPGHOME") or environ.get("GNUPGHOME")
    return Path(found) if found else None


def _package_format(given: str) -> PackageFormat:
    if not Path(given).is_file():
        raise BadInput(f"{given}: no such package file")
    kind = named(Path(given).name)
    if kind is None:
        raise BadInput(f"{given}: not a package file: ka pkgdiff compares two pacman packages (.pkg.tar.zst) "
                       "or two Debian packages (.deb)")
    return kind


def cmd_pkgdiff(args: argparse.Namespace) -> int:
    """``ka pkgdiff``: 0 the same (modulo build time and place), 1 different."""
    from ka.packages.diff import compare

    kinds = [_package_format(given) for given in (args.a, args.b)]
    if kinds[0] != kinds[1]:
        raise BadInput(f"{args.a} is a {kinds[0].name} package and {args.b} a {kinds[1].name} one: ka pkgdiff "
                       "compares two packages of one format (two .pkg.tar.zst, or two .deb)")
    diff = compare(Path(args.a), Path(args.b))
    if args.json:
        print(json.dumps(diff.as_dict(), indent=2))
    elif diff.same:
        print(f"{args.a} and {args.b}: the same, modulo when and where they were built")
    else:
        print("\n".join(diff.differences))
    return EXIT_OK if diff.same else EXIT_CHECK_FAILED


def main(argv: Sequence[str] | None = None, verb: str | None = None) -> int:
    """Run ``ka`` (or ``ka-<verb>``); the one place errors become exit codes."""
    parser = verb_parser(verb) if verb else build_parser()
    prog = parser.prog
    args = parser.parse_args(argv)
    args.environ = dict(os.environ)  # the environment is read here, once; the verbs get it from args
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KaError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _verb(verb: str) -> Callable[[], int]:
    def entry() -> int:
        signal.signal(signal.SIGTERM, _terminated)  # a stop by systemd or kill: cleaned up as Ctrl-C is
        return main(sys.argv[1:], verb=verb)
    return entry


def run() -> None:
    """Console script ``ka``."""
    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(main())


def promote_main() -> None:
    """Console script ``ka-promote``."""
    sys.exit(_verb("promote")())


def status_main() -> None:
    """Console script ``ka-status``."""
    sys.exit(_verb("status")())


def build_main() -> None:
    """Console script ``ka-build``."""
    sys.exit(_verb("build")())


def install_main() -> None:
    """Console script ``ka-install``."""
    sys.exit(_verb("install")())

