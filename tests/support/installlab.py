"""A lab for ka-install tests: two kernel packages built by ka-build (the one the hosts run, and
the newer one the repository publishes), target hosts that run the older one, a backup host."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ka.packages.sign import sign
from tests.support.buildlab import CONFIG, BuildLab
from tests.support.fleet import fleet_files as files
from tests.support.fleet import manifest as text
from tests.support.kernel import git, write_fleet
from tests.support.targets import Target, TargetLab


def manifest(includes: list[str]) -> str:
    return text(includes)


def fleet_files(kernel: Any) -> dict[str, bytes | str]:
    return files(kernel)


OLD, NEW = "6.12.0-ampere-1", "6.12.0-ampere-2"
INCLUDES = ["board/pinetab2", "driver/bes2600", "soc/base", "arch/defconfig"]


@dataclass
class InstallLab:
    """The packages, the repository they are published in, and the target-host maker."""

    build: BuildLab
    targets: TargetLab
    old: Path  # linux-ampere 6.12.0-1 (release 6.12.0-ampere-1), what the hosts run
    new: Path  # linux-ampere 6.12.0-2 (release 6.12.0-ampere-2), the newest published
    infra_base: str  # build hosts and repository of the session

    def manifest(self, target: Target, pkgrel: int = 2, extra: str = "") -> str:
        package = (f"package:\n  pkgrel: {pkgrel}\n  config: fleet/configs/ampere.config\n  source:\n"
                   f"    git: {self.build.source}\n")
        return manifest(INCLUDES) + package + target.install_yaml() + extra

    def infra(self, tag: str, backup_ssh: str = "hertz", operators: str = "") -> str:
        backups = self.build.ssh.user_folder(tag, "backups")
        return self.infra_base + f"backup:\n  ssh: {backup_ssh}\n  path: {backups}\n" + operators

    def fleet(self, root: Path, tag: str, target: Target, backup_ssh: str = "hertz", hosts: dict[str, str] | None
              = None, operators: str = "") -> Path:
        """A fleet repository whose host ampere is ``target``."""
        files = {**fleet_files(self.build.kernel), "fleet/configs/ampere.config": CONFIG,
                 "fleet/infra.yaml": self.infra(tag, backup_ssh, operators)}
        return write_fleet(root, {"ampere": self.manifest(target), **(hosts or {})}, files)

    def ka(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.build.ka(*args, timeout=timeout)

    def install(self, repo: Path, *args: str, host: str = "ampere") -> tuple[int, dict[str, Any], str]:
        """``ka install HOST --json``: exit code, the JSON record, standard error."""
        res = self.ka("install", host, "--repo", str(repo), "--json", *args)
        try:
            data = json.loads(res.stdout)
        except ValueError:
            data = {}
        return res.returncode, data, res.stderr

    def popen(self, repo: Path, *args: str) -> subprocess.Popen[str]:
        """``ka install ampere --json`` started (faulthandler on: SIGABRT shows where a hung one is)."""
        env = {**self.build.env(), "PYTHONFAULTHANDLER": "1"}
        return subprocess.Popen([sys.executable, "-m", "ka", "install", "ampere", "--repo", str(repo), "--json",
                                 *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def make_install_lab(build: BuildLab, work: Path) -> InstallLab:
    """Build both packages (once a session), and a host root with the older one installed."""
    infra_base = build.infra("install", hosts=("boltzmann",))
    repo = write_fleet(work / "fleet", {"ampere": ""}, {**fleet_files(build.kernel),
                                                        "fleet/configs/ampere.config": CONFIG,
                                                        "fleet/infra.yaml": infra_base})
    built = {}
    for pkgrel in (1, 2):
        package = (f"package:\n  pkgrel: {pkgrel}\n  config: fleet/configs/ampere.config\n  source:\n"
                   f"    git: {build.source}\n")
        (repo / "fleet/ampere.yaml").write_text(manifest(INCLUDES) + package)
        git(repo, "commit", "-qam", f"pkgrel {pkgrel}")
        code, data, err = build.build(repo, *(["--no-publish"] if pkgrel == 1 else []))
        assert code == 0, err
        built[pkgrel] = Path(data["artifacts"][0]["path"])
    targets = TargetLab(build.ssh, build.pacman_keyring, lambda path: sign(path, build.fingerprint, build.gnupghome))
    targets.prepare(built[1], "linux-ampere")
    return InstallLab(build, targets, built[1], built[2], infra_base)
