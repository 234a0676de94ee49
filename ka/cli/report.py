"""Human-readable output of the verbs (``--json`` prints the data as is)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ka.promote.flow import PromoteResult
from ka.status.cells import LIVE_HEAD, live_cells
from ka.status.offline import HostStatus

if TYPE_CHECKING:
    from rich.table import Table


def _applies_word(applies: bool | None) -> str:
    return {True: "applies", False: "DOES NOT APPLY", None: "not checked"}[applies]


def promote_line(r: PromoteResult) -> str:
    """One line per host, as ``--all`` prints it."""
    parity = "PARITY MISMATCH" if r.parity.state == "mismatch" else f"parity {r.parity.state}"
    line = (f"{r.host:<12} {r.baseline:<12} {r.b2sum[:12]}  {_applies_word(r.applies):<14} "
            f"{parity:<15} {r.seconds:5.2f}s")
    if r.failure:
        line += f"\n  {r.failure.patch}: {r.failure.detail}"
    if r.parity.state == "mismatch":
        line += f"\n  {r.parity.reason}"
    return line


def _rel(path: str | None) -> str:
    """``path`` relative to the current directory when it lies below it."""
    if path is None:
        return "-"
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _detail(r: PromoteResult) -> str:
    patches = sum(len(cast(list[str], s["patches"])) for s in r.series)
    lines = [f"{r.host}: {patches} patches in {len(r.series)} series, {r.bytes} bytes",
             f"{r.b2sum}  {_rel(r.patch)}"]
    base = f"baseline {r.baseline}"
    if r.baseline_commit:
        base += f" ({r.baseline_commit[:12]})"
    lines.append(f"{base}: {_applies_word(r.applies)}"
                 + ("" if r.applies is not None else " (no kernel tree: --kernel-tree or KA_KERNEL_TREE)"))
    if r.failure:
        lines.append(f"  first failing patch: {r.failure.patch} (series {r.failure.series})")
        lines.append(f"  {r.failure.detail}")
        lines.extend(f"  git: {g}" for g in r.failure.git.splitlines()[:4])
    lines.append(f"parity: {r.parity.state}" + (f": {r.parity.reason}" if r.parity.reason else ""))
    if r.parity.state == "mismatch":
        lines.append(f"  b2sum of the reference: {r.parity.expected_b2sum}")
        if r.parity.offset is not None:
            lines.append(f"  ours at byte {r.parity.offset}: {r.parity.ours!r}")
    return "\n".join(lines)


def print_promote(results: list[PromoteResult], brief: bool, printed: bool) -> None:
    """Print promote results: a block for one host, one line each for many."""
    if not brief:
        print(_detail(results[0]))
        return
    if not printed:
        for r in results:
            print(promote_line(r))
    failed = [r.host for r in results if not r.ok]
    print(f"{len(results)} hosts, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))


def status_cells(r: HostStatus) -> list[str]:
    """A host's row of the fleet table, as text cells."""
    if r.error:
        return [r.host, "-", "-", "-", "-", "-", "-", f"manifest error: {r.error}"]
    promoted = (r.promoted_at or "never").replace("+00:00", "Z")
    if r.stale:
        promoted += " (stale)"
    return [r.host, r.baseline or "-", str(r.series), str(r.patches), (r.b2sum or "")[:12],
            r.parity or "-", _applies_word(r.applies) if r.promoted_at else "-", promoted]


STATUS_HEAD = ["HOST", "BASELINE", "SERIES", "PATCHES", "B2SUM", "PARITY", "APPLIES", "PROMOTED"]


def print_status(rows: list[HostStatus]) -> None:
    """The fleet table: rich on a terminal, plain aligned text otherwise."""
    print_table(STATUS_HEAD, [status_cells(r) for r in rows])


def rich_table(head: list[str], cells: list[list[str]]) -> Table:
    """A table for a terminal; every cell is plain text (a host name is not rich markup)."""
    from rich.table import Table  # rich only for a terminal: its import is a third of ka-promote's start-up
    from rich.text import Text
    table = Table(*head)
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    return table


def print_table(head: list[str], cells: list[list[str]]) -> None:
    """A table on standard output: rich on a terminal, plain aligned text otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console
        Console().print(rich_table(head, cells))
        return
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    for row in [head, *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def print_live(rows: list[Any]) -> None:
    """The live fleet table."""
    print_table(LIVE_HEAD, [live_cells(r) for r in rows])


def print_bump(rows: list[Any], to: str, dry_run: bool) -> None:
    """Per host: moved to ``to`` (or would be), already there, or the first patch that no longer applies."""
    for r in rows:
        if r.state == "moved":
            reset = f"; package.pkgrel {r.pkgrel} -> 1" if r.pkgrel else ""
            print(f"{r.host}: {'would move' if dry_run else 'moved'} {r.old} -> {to}{reset}")
        elif r.state == "current":
            print(f"{r.host}: already on {to}")
        else:
            print(f"{r.host}: stays on {r.old}: {r.failure.patch} does not apply on {to}: {r.failure.detail}")
    moved = sum(r.state == "moved" for r in rows)
    print(f"{moved} of {len(rows)} hosts {'would move' if dry_run else 'moved'} to {to}"
          + ("; nothing was changed (--dry-run)" if dry_run else "; review and commit fleet/*.yaml" if moved else ""))


def print_build(result: Any, rendered: str | None, log_path: Path) -> None:
    """What ka-build made, where, and how long each phase took."""
    if rendered:
        print(f"{result.host}: rendered {result.pkgbase} {result.version} into {rendered} (see ka-build.env)")
        for line in result.audit:
            print(f"  {line}")
        return
    how = f"on {result.build_host}" + (f" (fallback: {'; '.join(result.fallback)})" if result.fallback else "")
    print(f"{result.host}: {result.pkgbase} {result.version} built {how}")
    for a in result.artifacts:
        signed = f"  signed by {a.signer}" if a.signer else "  unsigned"
        print(f"  {_rel(a.path)}  {a.size} bytes  b2sum {a.b2sum[:16]}…{signed}")
    if result.published:
        p = result.published
        print(f"published to {p.host}:{p.path} ({p.database}; {p.url})")
    for line in result.audit[-1:]:
        print(f"  {line}")
    if result.diff is not None:
        print(f"same as {result.diff.a.name}, modulo when and where it was built")
    print("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items()) + f"; log: {_rel(str(log_path))}")


MANY_HEAD = ["HOST", "RESULT", "BUILD HOST", "VERSION", "TIME"]


def print_many_builds(builds: list[Any], out_dir: Path) -> None:
    """Several hosts' builds: a row a host, then why each failed one failed and where the logs are."""
    cells = [[b.host, b.state, b.build_host or "-", (b.result.version if b.result else "") or "-",
              f"{b.seconds(time.monotonic()):.0f}s"] for b in builds]
    print_table(MANY_HEAD, cells)
    for b in builds:
        if b.error:
            print(f"{b.host}: {b.error}")
            for line in (b.result.log.splitlines() if b.result else []):
                print(f"  {line}")
    built = sum(1 for b in builds if not b.error)
    print(f"{built} of {len(builds)} built; logs: {_rel(str(out_dir / '<host>' / 'build.log'))}")


def print_host_added(added: Any) -> None:
    """``ka host add``: the files (printed in full for --dry-run), what to confirm, the next steps."""
    for path, text in added.files.items():
        if added.written:
            print(f"wrote {path}")
        else:
            print(f"--- {path} (not written: --dry-run)")
            print(text.rstrip("\n") if path.endswith(".yaml") else f"({len(text.splitlines())} lines)")
    if added.proposed:
        print("proposed from the board's compatible strings, to confirm: " + ", ".join(added.proposed))
    print("review the manifest, then:\n" + "".join(f"  {step}\n" for step in added.next_steps()), end="")


def print_rollout(rows: list[Any], out_dir: Path) -> None:
    """A rollout over many hosts: a row a host (its wave, how it ended, the kernel), then for each one that did
    not end installed why, and its backup and way back."""
    cells = [[r.host, r.build_host, r.state, _kernel(r.result), f"{r.seconds(time.monotonic()):.0f}s"]
             for r in rows]
    print_table(["HOST", "WAVE", "OUTCOME", "KERNEL", "TIME"], cells)
    for r in rows:
        if r.error:
            print(f"{r.host}: {r.error}")
            if r.backup:
                print(f"  backup: {r.backup}")
            for line in (r.result.recovery if r.result else []):
                print(f"  way back: {line}")
    done = sum(1 for r in rows if r.state in ("installed", "pending reboot", "dry run"))
    untouched = sum(1 for r in rows if r.state == "not started")
    print(f"{done} of {len(rows)} installed" + (f"; {untouched} not started (left untouched)" if untouched else "")
          + f"; logs: {_rel(str(out_dir / '<host>' / 'install.log'))}")


def _kernel(result: Any) -> str:
    if result is None or not (result.old_release or result.new_release):
        return "-"
    return f"{result.old_release or '?'} -> {result.new_release or '?'}"


def print_install(result: Any, log_path: Path) -> None:
    """What ka-install did (or, with --dry-run, would do), and the way back when it failed."""
    print(f"{result.host}: {result.action} {result.state}: {result.message}")
    if result.old_release or result.new_release:
        print(f"  kernel: {result.old_release or '?'} -> {result.new_release or '?'}"
              + (f"  (package {result.version})" if result.version else ""))
    if result.backup:
        print(f"  backup: {result.backup}")
    beat = result.heartbeat or {}
    if beat.get("down_after") is not None:
        up = f", back after {beat['up_after']}s running {beat['release']}" if beat.get("up_after") is not None else ""
        print(f"  heartbeat: down after {beat['down_after']}s{up}")
    if result.extlinux_before is not None:
        print("  extlinux.conf before the steps" + (" (assumed)" if result.old_release == "<running release>" else "")
              + ":")
        for line in result.extlinux_before.splitlines():
            print(f"      | {line}")
    for step in result.steps:
        took = f"  ({step['seconds']}s)" if "seconds" in step else ""
        print(f"  - {step['text']}{took}")
        if result.state == "dry-run":
            for command in step["commands"]:
                print(f"      {command}")
            for line in step.get("writes", "").splitlines():
                print(f"      | {line}")
    for line in result.recovery:
        print(f"  way back: {line}")
    if result.not_checked:
        print(f"  not checked ({len(result.not_checked)}; a real run needs them):")
        for line in result.not_checked:
            print(f"    - {line}")
    print(f"  log: {_rel(str(log_path))}")
