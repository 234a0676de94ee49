"""``ka host add NAME --ssh TARGET``: a new fleet host from what the board itself says.

Connect (a host key not in known_hosts is shown and refused unless ``--accept-key`` names its
fingerprint, then pinned), probe read-only (:mod:`ka.host.probe`), decide the manifest
(:mod:`ka.host.draft`), validate it with the manifests' own validator, carry the running kernel's
config to the baseline (:mod:`ka.host.config`), then write ``fleet/NAME.yaml``,
``fleet/configs/NAME.config`` (and, with ``--operator``, infra.yaml's operators) together, or nothing
(``--dry-run`` prints them).  What the host lacks is refused before anything is written, each refusal naming its probe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ka.errors import EXIT_BAD_INPUT, KaError, ToolMissing
from ka.fleet.infra import INFRA, load_infra, parse_infra
from ka.fleet.manifest import SCOPES, Manifest, host_path, list_hosts, load_manifest, parse_manifest, valid_host_name
from ka.fleet.packagespec import STABLE_GIT
from ka.fleet.repo import DIR, FILE, RepoView
from ka.fleet.series import resolve_series
from ka.host.config import carry, header
from ka.host.draft import Draft, make_draft, operator_added, valid_login
from ka.host.probe import Probe, run_probes
from ka.io.outputs import Outputs
from ka.io.runner import run
from ka.io.ssh import HostKeyRefused, SshSettings, connect
from ka.promote.baseline import KernelTree
from ka.promote.cumulative import concatenate


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
             like: str | None = None, dry_run: bool = False, operator: str | None = None,
             log: Callable[[str], None] = lambda line: None) -> Added:
    """Probe ``ssh_name`` and write host ``name`` into the repository at ``root`` (and ``operator`` into
    infra.yaml's operators when given); :class:`HostRefused` when it cannot be managed (every reason at
    once), nothing written then."""
    _check_name(view, name)
    operated = _operated(view, name, operator) if operator is not None else None
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
                       fleet_ref=model.baseline_ref if model else None, source=_source(model))
    manifest = None if draft.refusals else parse_manifest(name, host_path(name), draft.manifest)  # as every one
    if manifest is not None:
        draft.refusals += _fleet_lacks(view, manifest)
    if draft.refusals or manifest is None:
        raise HostRefused(f"{ssh_name} cannot be added as it is; nothing was written:"
                          + "".join(f"\n  - {r}" for r in draft.refusals))
    draft.config = _config(view, KernelTree(kernel_tree), manifest, probe, log)
    added = _added(name, draft)
    if operated is not None:
        parse_infra(view.display(INFRA), operated)  # still valid: raises ManifestError naming the line
        added.files[INFRA] = operated
    return _write(root, added, dry_run)


def _operated(view: RepoView, name: str, operator: str) -> str:
    """infra.yaml's text with ``operator`` made an operator of ``name``; refused before connecting when it
    cannot be (not a login, or operators is not a block mapping to add a line to)."""
    text = view.read(INFRA).decode("utf-8", "replace") if view.kind(INFRA) == FILE else ""
    operated = operator_added(text, name, operator)
    if operated is None:
        raise HostRefused(f"--operator {operator}: " + ("not a login" if not valid_login(operator) else
                          f"{view.display(INFRA)}'s operators is not a block mapping (host: [logins] a line "
                          "each) to add a line to: add it by hand") + "; nothing was written")
    return operated


def _fleet_lacks(view: RepoView, manifest: Manifest) -> list[str]:
    """What the fleet lacks for the new host: the repository its package format publishes to."""
    infra, spec = load_infra(view), manifest.install
    if spec is None or infra.repository_for(spec.kind) is not None:
        return []
    key = spec.kind.repository_key
    return [f"{infra.path} has no {key}: ka-build publishes {manifest.host}'s {spec.kind.installer} packages there "
            f"and ka-install takes them from it; add one (docs/fleet.md)"]


def _config(view: RepoView, kernel: KernelTree, manifest: Manifest, probe: Probe, log: Callable[[str], None]) -> str:
    """The running kernel's config carried to the manifest's patched baseline; as it is (with a note)
    where Kconfig cannot run here, for ka-build's audit to list what the baseline lacks."""
    running, ref = probe.config or "", manifest.baseline_ref
    source = probe.config_source
    spec = manifest.package
    try:
        patch = concatenate(resolve_series(view, manifest)).data
        carried = carry(kernel, kernel.commit(ref, f"{manifest.path}: baseline.ref"), patch, running,
                        spec.kernel_arch if spec else "arm64")
    except ToolMissing as exc:
        log(f"config: not carried to {ref}: {exc}")
        return (f"# fleet/configs/{manifest.host}.config, written by ka host add: the config of the kernel "
                f"{manifest.host} ran ({probe.release}, {source}), as it was: Kconfig could not run here "
                f"({exc}); ka-build's audit lists what {ref} lacks\n" + running)
    log(f"config: {source} carried to {ref}: {len(carried.lost)} options off or gone, {len(carried.changed)} "
        f"changed, {carried.new} new at their defaults")
    return header(manifest.host, source, probe.release, ref, carried) + carried.text


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


def _source(model: Manifest | None) -> tuple[str, dict[str, str]] | None:
    """Where the fleet's builds take the kernel source, when the model host names one (its mirror): the new
    host builds from the same place."""
    spec = model.package if model else None
    if model is None or spec is None or (spec.git == STABLE_GIT and spec.tarball is None):
        return None
    keys = {"git": spec.git} if spec.git else {"tarball": spec.tarball, "b2sum": spec.tarball_b2sum}
    return model.host, {k: v for k, v in keys.items() if v}


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


def _added(name: str, draft: Draft) -> Added:
    added = Added(name, {host_path(name): draft.manifest}, draft.proposed)
    if draft.config is not None:
        added.files[f"fleet/configs/{name}.config"] = draft.config
    return added


def _write(root: Path, added: Added, dry_run: bool) -> Added:
    if not dry_run:
        outputs = Outputs()
        for path, text in added.files.items():
            outputs.add(root / path, text.encode())
        outputs.commit()
        added.written = True
    return added
