"""ka-status, offline part: the fleet from its manifests and last promotes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ka.errors import KaError
from ka.fleet.manifest import list_hosts
from ka.fleet.repo import RepoView
from ka.promote.flow import default_patch_path, plan_host


@dataclass
class HostStatus:
    """One row of the fleet table."""

    host: str
    description: str = ""
    baseline: str | None = None
    series: int | None = None
    patches: int | None = None
    b2sum: str | None = None
    promoted_b2sum: str | None = None
    applies: bool | None = None
    parity: str | None = None
    promoted_at: str | None = None
    error: str | None = None

    @property
    def stale(self) -> bool:
        """The manifest or patches changed since the last promote."""
        return bool(self.promoted_b2sum and self.b2sum and self.promoted_b2sum != self.b2sum)

    def as_dict(self) -> dict[str, object]:
        """JSON shape of ``ka-status --json``."""
        return {**self.__dict__, "stale": self.stale}


def host_status(view: RepoView, out_dir: Path, host: str) -> HostStatus:
    """The status of one host; a broken manifest shows as an error in its row."""
    row = HostStatus(host)
    try:
        plan = plan_host(view, host)
    except KaError as exc:
        row.error = str(exc).splitlines()[0]
    else:
        row.description = plan.manifest.description
        row.baseline = plan.manifest.baseline_ref
        row.series = len(plan.series)
        row.patches = sum(len(s.patches) for s in plan.series)
        row.b2sum = plan.cumulative.b2sum
    _last_promote(row, out_dir)
    return row


def _last_promote(row: HostStatus, out_dir: Path) -> None:
    record_path = default_patch_path(out_dir, row.host).with_suffix(".patch.json")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return
    row.promoted_b2sum = record.get("b2sum")
    row.applies = record.get("applies")
    row.parity = record.get("parity")
    row.promoted_at = record.get("promoted_at")


def fleet_status(view: RepoView, out_dir: Path, hosts: list[str] | None = None) -> list[HostStatus]:
    """Rows for ``hosts`` (default: every host with a manifest)."""
    return [host_status(view, out_dir, h) for h in (hosts or list_hosts(view))]
