"""``ka host add NAME --ssh TARGET``: a new fleet host from what the board itself says.

Connect (a host key not in known_hosts is shown and refused unless ``--accept-key`` names its
fingerprint, then pinned), probe read-only (:mod:`ka.host.probe`), decide the manifest
(:mod:`ka.host.draft`), validate it with the manifests' own validator, then write
``fleet/NAME.yaml`` and ``fleet/configs/NAME.config`` together, or nothing (``--dry-run`` prints
them).  What the host lacks is refused before anything is written, each refusal naming its probe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ka.errors import EXIT_BAD_INPUT, KaError
from ka.fleet.manifest import SCOPES, Manifest, host_path, list_hosts, load_manifest, parse_manifest, valid_host_name
from ka.fleet.repo import DIR, RepoView
from ka.host.draft import Draft, make_draft
from ka.host.probe import run_probes
from ka.io.outputs import Outputs
from ka.io.runner import run
from ka.io.ssh import HostKeyRefused, SshSettings, connect


class HostRefused(KaError):
    """The host cannot be managed as it is, or the command was asked wrongly; nothing was written."""

    exit_code = EXIT_BAD_INPUT


@dataclass
class Added:
    """What ``ka host add`` wrote (or, with --dry-run, would write)."""

    name: str
    files: dict[str, str] = field(default_factory=dict)  # path in the repository → text
    proposed: list[str] = field(default_factory=list)
    written: bool = False

    def next_steps(self) -> list[str]:
        """What to run next: the build reads the manifest and config from what git tracks, so commit first."""
        return [f"git add {' '.join(self.files)} && git commit -m 'fleet: add {self.name}'",
                f"ka-promote {self.name}", f"ka-build {self.name} --render-only out/{self.name}/build",
                f"ka-install {self.name} --dry-run"]


def add_host(view: RepoView, root: Path, name: str, ssh_name: str, ssh: SshSettings, kernel_tree: Path,
             like: str | None = None, dry_run: bool = False, log: Callable[[str], None] = lambda line: None) -> Added:
    """Probe ``ssh_name`` and write host ``name`` into the repository at ``root``; :class:`HostRefused` when it
    cannot be managed (every reason at once), nothing written then."""
    _check_name(view, name)
    model = load_manifest(view, like) if like else _any_host(view)
    copied = (like, [i.text for i in model.includes]) if like and model else None
    try:
        with connect(ssh, ssh_name, "ka host add --ssh") as remote:
            probe = run_probes(remote, name, log)
    except HostKeyRefused as exc:
        raise HostRefused(f"{exc}; or, once checked against the board itself (ssh-keygen -lf "
                          "/etc/ssh/ssh_host_ed25519_key.pub on its console), give --accept-key with that "
                          "fingerprint: it is then pinned; nothing was written") from None
    draft = make_draft(name, ssh_name, probe, _series(view), _tags(kernel_tree), copied,
                       fleet_ref=model.baseline_ref if model else None)
    if draft.refusals:
        raise HostRefused(f"{ssh_name} cannot be added as it is; nothing was written:"
                          + "".join(f"\n  - {r}" for r in draft.refusals))
    return _write(root, name, draft, dry_run)


def _check_name(view: RepoView, name: str) -> None:
    if not valid_host_name(name):
        raise HostRefused(f"{name!r} is not a host name (lowercase letters, digits, - and _, as fleet/NAME.yaml)")
    if name in list_hosts(view):
        raise HostRefused(f"{view.display(host_path(name))} exists: {name} is in the fleet already; nothing was "
                          "written")


def _any_host(view: RepoView) -> Manifest | None:
    """The fleet's first host, whose baseline a host of a series the kernel tree lacks takes."""
    hosts = list_hosts(view)
    return load_manifest(view, hosts[0]) if hosts else None


def _series(view: RepoView) -> list[str]:
    """Every series of the patch tree, as an include names it (``soc/rk356x-base``)."""
    found = []
    for scope in SCOPES:
        folder = f"patches/{scope}"
        if view.kind(folder) == DIR:
            found += [f"{scope}/{n.removesuffix('.patch')}" for n in sorted(view.listdir(folder))
                      if n.endswith(".patch") or view.kind(f"{folder}/{n}") == DIR]
    return found


def _tags(tree: Path) -> set[str]:
    res = run(["git", "-C", tree, "tag", "--list", "v*"], check=False)
    return set(res.text().split()) if res.ok else set()


def _write(root: Path, name: str, draft: Draft, dry_run: bool) -> Added:
    manifest = host_path(name)
    parse_manifest(name, manifest, draft.manifest)  # the validator every manifest meets: raises ManifestError
    added = Added(name, {manifest: draft.manifest}, draft.proposed)
    if draft.config is not None:
        added.files[f"fleet/configs/{name}.config"] = draft.config
    if not dry_run:
        outputs = Outputs()
        for path, text in added.files.items():
            outputs.add(root / path, text.encode())
        outputs.commit()
        added.written = True
    return added
