"""The two verbs of ka-install, ``install`` and ``rollback``: each picks the flow the host's manifest
asks for (pacman or apt; a restore from the backup) and runs it under the local lock."""

from __future__ import annotations

from typing import Any

from ka.errors import EXIT_BAD_INPUT
from ka.fleet.infra import Infra
from ka.fleet.manifest import load_manifest
from ka.fleet.repo import RepoView
from ka.install.apt import DebInstall, DebRollback
from ka.install.installer import Installer, InstallError, InstallOptions, InstallResult, Log, run_installer
from ka.install.pacman import Install
from ka.install.rollback import Restore, Rollback


def install(view: RepoView, host: str, infra: Infra, opts: InstallOptions, log: Log = lambda line: None,
            phase: Any = lambda name: None) -> InstallResult:
    """``ka-install HOST``: see the module's docstring (ka/install/apt.py for an apt host); :class:`InstallError`
    when refused or failed."""
    spec = load_manifest(view, host).install
    kind = DebInstall if spec is not None and spec.format == "apt" else Install
    return run_installer(kind(view, host, infra, opts, log, phase, "install"))


def rollback(view: RepoView, host: str, infra: Infra, opts: InstallOptions, release: str | None = None,
             log: Log = lambda line: None, phase: Any = lambda name: None) -> InstallResult:
    """``ka-install HOST --rollback [RELEASE]``; :class:`InstallError` when refused or failed."""
    spec = load_manifest(view, host).install
    apt = spec is not None and spec.format == "apt"
    if apt and release is not None:
        raise InstallError(f"{host} installs with apt: its kernels keep their packages and entries, so a rollback "
                           f"removes the newer package (ka-install {host} --rollback); restoring a release from a "
                           "backup is for pacman hosts; refused, nothing was changed", exit_code=EXIT_BAD_INPUT)
    kind = DebRollback if apt else Rollback
    installer: Installer = (kind(view, host, infra, opts, log, phase, "rollback") if release is None
                            else Restore(view, host, infra, opts, log, phase, "rollback", release=release))
    return run_installer(installer)
