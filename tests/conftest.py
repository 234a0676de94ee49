"""Shared fixtures: a small real kernel git tree and kernel-agent repositories built in tmp."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import sshhosts
from tests.support.botkit import STARTED, Rig, kill_group
from tests.support.buildlab import BuildLab, make_build_lab
from tests.support.fleet import MakeRepo, fleet_files
from tests.support.installlab import InstallLab, make_install_lab
from tests.support.kernel import TARBALL, SmallKernel, build_small_kernel, write_fleet
from tests.support.needs import require
from tests.support.sshhosts import SshLab


@pytest.fixture(scope="session")
def small_kernel(tmp_path_factory: pytest.TempPathFactory) -> SmallKernel:
    """A bare kernel tree tagged v6.12.0 and named patches against it (built once)."""
    return build_small_kernel(tmp_path_factory.mktemp("kernel"))


@pytest.fixture(scope="session")
def real_kernel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Debian's 6.12 source imported once per test session (about a minute)."""
    require(TARBALL.is_file(), f"{TARBALL} (apt-get install linux-source-6.12)")
    tree = tmp_path_factory.mktemp("linux") / "linux-6.12.git"
    out = subprocess.run([sys.executable, "-m", "ka", "baseline", "import", str(TARBALL), "--tree", str(tree)],
                         capture_output=True, text=True, check=True).stdout
    ref = out.split(" tag ", 1)[1].split()[0]
    return tree, ref


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """Create a kernel-agent repository (a git work tree, committed) from dicts of files."""
    counter = iter(range(1000))

    def make(hosts: dict[str, str], files: dict[str, bytes | str], commit: bool = True,
             name: str | None = None) -> Path:
        return write_fleet(tmp_path / (name or f"repo{next(counter)}"), hosts, files, commit)

    return make


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs folders (a full disk, a read-only folder) for the test; unmounted after."""
    mounted: list[Path] = []

    def mount(size: str = "64k", readonly: bool = False) -> Path:
        require(os.geteuid() == 0 and shutil.which("mount") is not None, "root and mount(8), for a tmpfs mount")
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        opts = f"size={size},mode=0755" + (",ro" if readonly else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "ka-test", str(target)], check=True)
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries the marker of its tier, the folder it lives in (``pytest -m unit``)."""
    for item in items:
        tier = next((part for part in item.path.relative_to(Path(__file__).parent).parts if part in TIERS), None)
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in tests/unit, tests/integration or tests/e2e")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_suite() -> Iterator[None]:
    """Whatever a failing test left running (a bot, its gunicorn and worker) ends with the session."""
    yield
    for pgid in list(STARTED):
        kill_group(pgid)


@pytest.fixture
def rig(tmp_path: Path, small_kernel: SmallKernel) -> Iterator[Callable[..., Rig]]:
    """Make a fake Forgejo, a fleet repository with a bare 'forge' copy, and a running bot; all stopped after."""
    made: list[Rig] = []

    def make(hosts: dict[str, str], files: dict[str, bytes | str] | None = None, start: bool = True,
             **env: str) -> Rig:
        r = Rig(tmp_path, small_kernel, hosts, {**fleet_files(small_kernel), **(files or {})}, **env)
        made.append(r)
        if start:
            r.bot.start()
        return r

    yield make
    for r in made:
        r.close()
        assert r.fake.violations == []


@pytest.fixture(scope="session")
def ssh_lab() -> Iterator[SshLab]:
    """Real sshd hosts on loopback: build hosts boltzmann and fermi, repository host hertz, and planck, the
    pull requests' build host (another account)."""
    require(sshhosts.available() is None, str(sshhosts.available()))
    lab = sshhosts.make_lab()
    try:
        for number, name in enumerate(("boltzmann", "fermi", "hertz"), start=11):
            lab.add(name, number)
        lab.add("planck", 14, user=sshhosts.PR_USER)
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def build_lab(ssh_lab: SshLab, small_kernel: SmallKernel,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildLab]:
    """Build hosts, a repository host, a signing key and a kernel source for ka-build (once a session)."""
    for tool in ("makepkg", "repo-add", "pacman-key", "gpg", "zstd", "bsdtar", "fakeroot", "make", "patch"):
        require(shutil.which(tool) is not None, f"{tool} (scripts/setup test installs it)")
    lab = make_build_lab(ssh_lab, small_kernel, tmp_path_factory.mktemp("buildlab"))
    yield lab
    lab.stop_agents()


@pytest.fixture(scope="session")
def built(build_lab: BuildLab, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """ampere built, signed and published once a session: (the fleet repository, ka build's JSON)."""
    repo = build_lab.fleet(tmp_path_factory.mktemp("built") / "fleet", "built")
    code, data, err = build_lab.build(repo)
    assert code == 0, err
    return repo, data


@pytest.fixture(scope="session")
def install_lab(build_lab: BuildLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstallLab]:
    """linux-ampere 6.12.0-1 (on the hosts) and 6.12.0-2 (published), and a maker of hosts that run the first."""
    require(shutil.which("unshare") is not None, "unshare (util-linux)")
    require(Path("/bin/busybox").is_file(), "/bin/busybox (busybox-static: pacman's scriptlets run in the host root)")
    lab = make_install_lab(build_lab, tmp_path_factory.mktemp("installlab"))
    yield lab
    lab.targets.stop()
