"""What the manifest would build for a host now, read from the repository alone (no ssh).

ka-install checks a package against it before anything changes on the host, and ka-status
--live compares it with what the host runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ka.build.kconfig import read_config
from ka.errors import KaError
from ka.fleet.packagespec import pkgver
from ka.fleet.repo import RepoView
from ka.promote.cumulative import b2sum
from ka.promote.flow import plan_host


@dataclass(frozen=True)
class Wanted:
    """What the manifest would build for a host now."""

    version: str | None
    patch_b2sum: str | None
    config_b2sum: str | None
    error: str | None = None


def wanted(view: RepoView, host: str) -> Wanted:
    """The version and inputs the manifest would build (read from the repository, no ssh)."""
    try:
        plan = plan_host(view, host)
        spec = plan.manifest.package
        if spec is None:
            return Wanted(None, plan.cumulative.b2sum, None, "no package section")
        config = b2sum(read_config(view, plan.manifest.path, spec).data) if spec.config_files else None
        return Wanted(f"{pkgver(plan.manifest.baseline_ref)}-{spec.pkgrel}", plan.cumulative.b2sum, config)
    except KaError as exc:
        return Wanted(None, None, None, str(exc).splitlines()[0])
