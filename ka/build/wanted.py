"""What the manifest would build for a host now, read from the repository alone (no ssh).

ka-install checks a package against it before anything changes on the host, and ka-status
--live compares it with what the host runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ka.build.kconfig import read_config
from ka.build.render import RELEASE
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


@dataclass(frozen=True)
class Expected:
    """The package the manifest builds, as a dry run plans with it before any is built or can be fetched."""

    file: str
    name: str
    version: str
    release: str  # the kernel release: baseline version, CONFIG_LOCALVERSION, -pkgrel (as render makes it)


def expected(view: RepoView, host: str, kernel_package: Callable[[str], str]) -> Expected:
    """What ka-build would make of the manifest now (``kernel_package``: the host's package name of a release);
    raises :class:`KaError` when the manifest cannot say."""
    plan = plan_host(view, host)
    spec = plan.manifest.package
    if spec is None:
        raise KaError(f"fleet/{host}.yaml has no package section: nothing to build or install")
    config = read_config(view, plan.manifest.path, spec)
    version = f"{pkgver(plan.manifest.baseline_ref)}-{spec.pkgrel}"
    release = RELEASE[spec.kind.name](plan, config)  # a deb build refuses a release that would vary
    name = kernel_package(release)
    return Expected(spec.kind.file_name(name, version, spec.arch), name, version, release)


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
