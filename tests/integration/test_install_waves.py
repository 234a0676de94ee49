"""``ka-install HOST…|--all``: a rollout in waves over real sshd hosts (tests/support/targets.py), the first host
the canary, stopped at the first host that fails; the hosts after it left untouched."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

from tests.support.installlab import NEW, OLD, InstallLab
from tests.support.targets import Target


def _fleet(lab: InstallLab, root: Path, tag: str, targets: dict[str, tuple[Target, int]]) -> Path:
    """A fleet whose hosts are ``targets`` (name → (host, wave)), all running linux-ampere's older kernel."""
    manifests = {name: lab.manifest(target).replace("package:\n", "package:\n  pkgbase: linux-ampere\n", 1)
                 + f"  wave: {wave}\n" for name, (target, wave) in targets.items()}
    first, *_ = targets.values()
    return lab.fleet(root, tag, first[0], hosts=manifests)


def _roll_out(lab: InstallLab, repo: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    res = lab.ka("install", "--repo", str(repo), "--json", *args, timeout=600)
    return res.returncode, json.loads(res.stdout or "{}"), res.stderr


def _untouched(lab: InstallLab, target: Target, image: bytes) -> None:
    assert target.boots == [OLD] and (target.root / "boot/Image").read_bytes() == image  # its first boot only
    assert "linux-ampere 6.12.0-1" in lab.targets.pacman(target.root, "-Q", "linux-ampere")
    assert not (target.root / "boot/Image.ka-prev").exists()


def test_a_canary_that_falls_back_stops_the_rollout_and_the_next_wave_is_untouched(install_lab: InstallLab,
                                                                                   tmp_path: Path) -> None:
    canary = install_lab.targets.target("wave-canary", bad=(NEW,))
    second = install_lab.targets.target("wave-second")
    image = (second.root / "boot/Image").read_bytes()
    repo = _fleet(install_lab, tmp_path / "fleet", "waves-stop", {"ampere": (canary, 1), "volta": (second, 2)})
    code, data, err = _roll_out(install_lab, repo, "--all")
    assert code == 1, err
    first, then = data["hosts"]
    assert (first["host"], first["canary"], first["outcome"]) == ("ampere", True, "fell back"), first
    assert first["fell_back"] == OLD and first["backup"].endswith(f"/ampere/{OLD}") and canary.boots[-1] == OLD
    assert (then["host"], then["wave"], then["outcome"]) == ("volta", 2, "not started"), then
    _untouched(install_lab, second, image)


def test_a_rollout_installs_every_wave_in_order(install_lab: InstallLab, tmp_path: Path) -> None:
    hosts = {name: install_lab.targets.target(f"wave-{name}") for name in ("ampere", "volta", "tesla")}
    waves = {"ampere": 2, "volta": 1, "tesla": 1}  # named ampere first: the waves decide, then the order named
    repo = _fleet(install_lab, tmp_path / "fleet", "waves-all",
                  {name: (hosts[name], waves[name]) for name in hosts})
    code, data, err = _roll_out(install_lab, repo, "ampere", "volta", "tesla")
    assert code == 0, err
    rows = data["hosts"]
    assert [(r["host"], r["wave"], r["canary"], r["outcome"]) for r in rows] == [
        ("volta", 1, True, "installed"), ("tesla", 1, False, "installed"), ("ampere", 2, False, "installed")]
    assert all(t.boots[-1] == NEW for t in hosts.values())
    assert all(a["ended_s"] <= b["began_s"] for a, b in pairwise(rows))  # one after another
    assert all(r["old_release"] == OLD and r["new_release"] == NEW for r in rows)


def test_a_wave_in_parallel_installs_its_hosts_at_once_after_the_canary(install_lab: InstallLab,
                                                                        tmp_path: Path) -> None:
    hosts = {name: install_lab.targets.target(f"wave-p-{name}") for name in ("ampere", "volta", "tesla")}
    repo = _fleet(install_lab, tmp_path / "fleet", "waves-parallel", {name: (t, 1) for name, t in hosts.items()})
    code, data, err = _roll_out(install_lab, repo, "--all", "--parallel")
    assert code == 0, err
    canary, *wave = sorted(data["hosts"], key=lambda r: r["began_s"])
    assert canary["canary"] and all(r["outcome"] == "installed" for r in data["hosts"])
    # the canary ended before the others began; those two overlapped
    assert all(r["began_s"] >= canary["ended_s"] for r in wave)
    assert wave[1]["began_s"] < wave[0]["ended_s"], wave
