"""ka/install/waves.py: the order of a rollout (waves, then as named; the canary alone first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.fleet.repo import WorkTree
from ka.install.waves import HostInstall, groups, plan
from tests.support.fleet import manifest

ROWS = [HostInstall(host, wave=wave) for host, wave in (("a", 1), ("b", 1), ("c", 2), ("d", 1), ("e", 3))]


@pytest.mark.parametrize(("parallel", "expected"), [
    (False, [["a"], ["b"], ["d"], ["c"], ["e"]]),
    (True, [["a"], ["b", "d"], ["c"], ["e"]]),  # the canary alone even in parallel, then a wave at a time
])
def test_the_canary_goes_alone_then_each_wave(parallel: bool, expected: list[list[str]]) -> None:
    rows = sorted(ROWS, key=lambda r: r.wave)
    assert [[r.host for r in group] for group in groups(rows, parallel)] == expected


def test_one_host_is_its_own_canary() -> None:
    assert [[r.host for r in g] for g in groups([HostInstall("a", wave=4)], True)] == [["a"]]
    assert list(groups([], False)) == []


def test_the_plan_orders_by_wave_then_as_named_and_marks_the_canary(tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    for host, wave in (("ampere", 2), ("volta", None), ("tesla", 1)):
        extra = f"install:\n  wave: {wave}\n" if wave else ""
        (tmp_path / f"fleet/{host}.yaml").write_text(manifest(["board/x"]) + extra)
    rows = plan(WorkTree(tmp_path), ["ampere", "volta", "tesla"])
    assert [(r.host, r.wave, r.canary) for r in rows] == [("volta", 1, True), ("tesla", 1, False), ("ampere", 2, False)]
