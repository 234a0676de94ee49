"""Moving hosts to a new baseline: ``ka baseline bump --to v6.12.118 [HOST…|--all]``.

A stable point release comes out every week or so.  For each selected host the cumulative patch
is checked on the new baseline (``git apply --cached``, as ka-promote checks it); the hosts whose
patch still applies have ``baseline.ref`` rewritten in their manifest, in place: only the value's
characters change, so the file's comments and layout stay, and the edited text is validated again
before it is written.  ``package.pkgrel`` counts builds of one baseline (the package version is the
baseline's), so a manifest that sets it above 1 gets 1 back.  A host whose patch no longer applies
is left as it is and reported with the first patch that fails and its hunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ka.errors import BadInput
from ka.fleet.manifest import REF_RE, host_path, parse_manifest
from ka.fleet.repo import RepoView
from ka.fleet.yamldoc import child
from ka.io.outputs import Outputs
from ka.promote.baseline import ApplyFailure, KernelTree, check_applies
from ka.promote.flow import plan_host
from ka.text import shown

MOVED, CURRENT, FAILS = "moved", "current", "does not apply"


@dataclass
class BumpRow:
    """One host's outcome."""

    host: str
    old: str
    state: str  # MOVED (or would be, with --dry-run), CURRENT (already there) or FAILS
    failure: ApplyFailure | None = None
    pkgrel: str | None = None  # the pkgrel reset to 1, when the manifest set another

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "from": self.old, "state": self.state, "pkgrel_was": self.pkgrel,
                "failure": self.failure.as_dict() if self.failure else None}


@dataclass(frozen=True)
class Edit:
    """A manifest's new text."""

    path: str
    text: str


def check_ref(ref: str) -> str:
    """``--to``: a tag or commit name a manifest may hold."""
    if not REF_RE.fullmatch(ref):
        raise BadInput(f"--to {shown(ref)}: not a tag or commit name (letters, digits, '.', '_', '/', '+', '-')")
    return ref


def plan_bump(view: RepoView, hosts: list[str], to: str, kernel: KernelTree) -> tuple[list[BumpRow], list[Edit]]:
    """Check every host's cumulative patch on ``to``; the per-host rows and the manifest edits of the hosts
    that move (nothing is written)."""
    commit = kernel.commit(to, "--to")
    rows: list[BumpRow] = []
    edits: list[Edit] = []
    for host in hosts:
        plan = plan_host(view, host)
        old = plan.manifest.baseline_ref
        if old == to:
            rows.append(BumpRow(host, old, CURRENT))
            continue
        applied = check_applies(kernel, commit, plan.series, plan.cumulative.data)
        if not applied.applies:
            rows.append(BumpRow(host, old, FAILS, applied.failure))
            continue
        edit, pkgrel = edited(host, view.read(host_path(host)).decode("utf-8"), to)
        rows.append(BumpRow(host, old, MOVED, pkgrel=pkgrel))
        edits.append(edit)
    return rows, edits


def edited(host: str, text: str, to: str) -> tuple[Edit, str | None]:
    """The manifest with ``baseline.ref`` set to ``to`` and a ``package.pkgrel`` above 1 set to 1, changing
    only those values' characters; the pkgrel it had when reset.  The result is validated again."""
    path = host_path(host)
    root = yaml.compose(text)
    spans: list[tuple[yaml.Node, str]] = []
    ref = child(child(root, "baseline"), "ref")
    assert isinstance(ref, yaml.ScalarNode)  # plan_host validated the manifest
    spans.append((ref, to))
    pkgrel = child(child(root, "package"), "pkgrel")
    was = None
    if isinstance(pkgrel, yaml.ScalarNode) and str(pkgrel.value) != "1":
        was = str(pkgrel.value)
        spans.append((pkgrel, "1"))
    for node, value in sorted(spans, key=lambda s: -s[0].start_mark.index):
        text = text[:node.start_mark.index] + value + text[node.end_mark.index:]
    manifest = parse_manifest(host, path, text)  # a ManifestError here is a bug in this edit, not the user's
    assert manifest.baseline_ref == to and (was is None or manifest.package is None or manifest.package.pkgrel == "1")
    return Edit(path, text), was


def write(root: Path, edits: list[Edit]) -> None:
    """Write the edited manifests: every one lands, or none does (:class:`ka.io.outputs.Outputs`)."""
    outputs = Outputs()
    for edit in edits:
        outputs.add(root / edit.path, edit.text.encode())
    outputs.commit()
