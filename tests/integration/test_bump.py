"""ka baseline bump: hosts whose patch applies on the new point release move; the rest stay, named."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from ka.cli.main import main
from tests.support.fleet import fleet_files, manifest
from tests.support.kernel import BASE_TAG, GOODIX, NEXT_TAG, SmallKernel, git, point_release, write_fleet

NEW = NEXT_TAG
#: a manifest as people write them: comments, a quoted ref, flow style, a pkgrel of its third build
FRESNEL = f"""# fresnel: the board on the desk
description: test host   # keep me
baseline:
  ref: "{BASE_TAG}"     # the stable point release it runs
apply_order: [arch, soc, subsystem, driver, module, board]
includes:
  - board/pinetab2
package: {{config: fleet/configs/h.config, pkgrel: 3}}
"""


def _fleet(k: SmallKernel, root: Path) -> Path:
    hosts = {"ampere": manifest(["soc/base", "board/pinetab2"]), "fresnel": FRESNEL}
    return write_fleet(root, hosts, {**fleet_files(k), "fleet/configs/h.config": "CONFIG_A=y\n"})


def test_hosts_that_apply_move_and_the_others_are_named(small_kernel: SmallKernel, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    tree = point_release(small_kernel, tmp_path)
    repo = _fleet(small_kernel, tmp_path / "repo")
    before = {h: (repo / f"fleet/{h}.yaml").read_text() for h in ("ampere", "fresnel")}
    code = main(["baseline", "bump", "--to", NEW, "--all", "--repo", str(repo), "--kernel-tree", str(tree)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "fresnel: moved v6.12.0 -> v6.12.1; package.pkgrel 3 -> 1" in out
    assert (f"ampere: stays on v6.12.0: patches/soc/base/10-goodix.patch does not apply on v6.12.1: context does "
            f"not match the baseline in {GOODIX} hunk #1") in out
    assert "1 of 2 hosts moved to v6.12.1" in out
    assert (repo / "fleet/ampere.yaml").read_text() == before["ampere"]
    # only the two values changed: comments, quoting elsewhere, flow style and order stay
    assert (repo / "fleet/fresnel.yaml").read_text() == before["fresnel"].replace(
        f'"{BASE_TAG}"', NEW).replace("pkgrel: 3", "pkgrel: 1")
    assert main(["promote", "fresnel", "--repo", str(repo), "--kernel-tree", str(tree), "--json"]) == 0
    promoted = json.loads(capsys.readouterr().out)  # one host: its record
    assert (promoted["baseline"], promoted["applies"]) == (NEW, True)


def test_dry_run_prints_the_plan_and_changes_nothing(small_kernel: SmallKernel, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    tree = point_release(small_kernel, tmp_path)
    repo = _fleet(small_kernel, tmp_path / "repo")
    code = main(["baseline", "bump", "--to", NEW, "fresnel", "--dry-run", "--json", "--repo", str(repo),
                 "--kernel-tree", str(tree)])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == [
        {"host": "fresnel", "from": BASE_TAG, "state": "moved", "pkgrel_was": "3", "failure": None}]
    assert git(repo, "status", "--porcelain") == b""


def test_the_new_baseline_comes_from_a_tarball_when_the_tree_lacks_it(small_kernel: SmallKernel, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    point_release(small_kernel, tmp_path)
    tarball = tmp_path / "linux-6.12.1.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        for path in sorted((tmp_path / "work").rglob("*")):
            if ".git" not in path.relative_to(tmp_path / "work").parts and path.is_file():
                tar.add(path, f"linux-6.12.1/{path.relative_to(tmp_path / 'work')}")
    tree = tmp_path / "old.git"
    git(tmp_path, "clone", "-q", "--bare", str(small_kernel.bare), str(tree))  # v6.12.0 only
    repo = _fleet(small_kernel, tmp_path / "repo")
    code = main(["baseline", "bump", "--to", NEW, "fresnel", "--tarball", str(tarball), "--repo", str(repo),
                 "--kernel-tree", str(tree)])
    assert code == 0, capsys.readouterr()
    assert git(tree, "tag", "--list", NEW).strip() == NEW.encode()
    assert "fresnel: moved" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--to", "v6..12", "--all"], "--to 'v6..12': not a tag or commit name"),
    (["--to", NEW], "name one or more hosts, or give --all"),
    (["--to", "v9.9.9", "--all"], "--to: 'v9.9.9' is not a tag or commit in the kernel tree"),
    (["--to", NEW, "nosuchhost"], "nosuchhost"),
])
def test_bad_requests_change_nothing(small_kernel: SmallKernel, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     argv: list[str], fragment: str) -> None:
    tree = point_release(small_kernel, tmp_path)
    repo = _fleet(small_kernel, tmp_path / "repo")
    assert main(["baseline", "bump", *argv, "--repo", str(repo), "--kernel-tree", str(tree)]) == 2
    assert fragment in capsys.readouterr().err
    assert git(repo, "status", "--porcelain") == b""
