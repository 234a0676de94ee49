"""ka-build of many hosts at once on the sshd build hosts: each build takes a free slot of the first build host
that has one (max_builds in fleet/infra.yaml), one host's failure stops no other, and the exit code is the
worst of theirs."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.buildlab import BuildLab
from tests.support.kernel import write_fleet
from tests.support.sshhosts import USER

HOSTS = ("ampere", "volta", "tesla")


def _fleet(lab: BuildLab, root: Path, tag: str, infra: str | None = None,
           broken: tuple[str, ...] = ()) -> Path:
    """A fleet of HOSTS, each ampere's manifest; ``broken`` hosts name a patch folder that does not exist."""
    hosts, files = lab.parts(tag, infra=infra)
    text = hosts["ampere"]
    manifests = {h: text.replace("  - board/pinetab2\n", "  - board/missing\n") if h in broken else text
                 for h in HOSTS}
    return write_fleet(root, manifests, files)


def _build(lab: BuildLab, repo: Path, *hosts: str) -> tuple[int, dict[str, Any], str]:
    res = lab.ka("build", *hosts, "--repo", str(repo), "--kernel-tree", str(lab.kernel.bare), "--no-publish",
                 "--json", timeout=900)
    try:
        return res.returncode, json.loads(res.stdout), res.stderr
    except ValueError:
        return res.returncode, {}, res.stderr + res.stdout


@pytest.fixture
def held(build_lab: BuildLab) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Slots held by another ka-build (a flock on the build host, as ka-build holds them)."""
    holders: list[subprocess.Popen[bytes]] = []
    yield holders
    for proc in holders:
        _release(proc)


def _release(proc: subprocess.Popen[bytes]) -> None:
    """The holder's end: cat's input closes, cat ends, flock lets go (killing runuser would leave them)."""
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    proc.wait(timeout=30)


def _hold(held: list[subprocess.Popen[bytes]], workdir: Path, slot: int = 0) -> subprocess.Popen[bytes]:
    folder = workdir / ".ka-slots"
    subprocess.run(["runuser", "-u", USER, "--", "mkdir", "-p", str(folder)], check=True)
    proc = subprocess.Popen(["runuser", "-u", USER, "--", "flock", str(folder / str(slot)), "cat"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"held\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"held\n"  # cat runs: flock has the lock
    held.append(proc)
    return proc


def test_three_hosts_build_at_once_on_both_build_hosts(build_lab: BuildLab, tmp_path: Path) -> None:
    """With one slot each, the first two builds run at once, one on each build host; the third takes the first
    slot that frees. Run one after another, all three would have gone to boltzmann."""
    repo = _fleet(build_lab, tmp_path / "fleet", "many")
    code, data, err = _build(build_lab, repo, *HOSTS)
    assert code == 0, err + json.dumps([h.get("error") for h in data.get("hosts", [])])
    assert data["ok"] and [h["host"] for h in data["hosts"]] == list(HOSTS)
    assert all(h["ok"] and h["artifacts"] for h in data["hosts"]), data
    assert {h["build_host"] for h in data["hosts"]} == {"boltzmann", "fermi"}
    for host in HOSTS:  # each its own log, its own outputs
        assert "slot 1 of 1" in (repo / "out" / host / "build.log").read_text()
    assert "ka-build: volta: makepkg on " in err  # no terminal: a line each time a host changes phase


def test_one_hosts_failure_stops_no_other_and_the_exit_code_is_the_worst(build_lab: BuildLab,
                                                                       tmp_path: Path) -> None:
    repo = _fleet(build_lab, tmp_path / "fleet", "worst", broken=("volta",))
    res = build_lab.ka("build", *HOSTS, "--repo", str(repo), "--kernel-tree", str(build_lab.kernel.bare),
                       "--no-publish", timeout=900)
    assert res.returncode == 2, res.stderr  # a manifest naming a missing folder is bad input
    rows = {ln.split()[0]: ln.split()[1] for ln in res.stdout.splitlines()[1:4]}
    assert rows == {"ampere": "built", "volta": "failed", "tesla": "built"}, res.stdout
    assert any(ln.startswith("volta: ") and "board/missing" in ln for ln in res.stdout.splitlines()), res.stdout
    assert "2 of 3 built" in res.stdout


def test_a_busy_build_host_is_passed_over_and_a_build_waits_for_a_free_slot(build_lab: BuildLab, tmp_path: Path,
                                                                           held: list[subprocess.Popen[bytes]]) -> None:
    repo = _fleet(build_lab, tmp_path / "fleet", "busy")
    boltzmann = build_lab.ssh.user_folder("busy", "boltzmann")
    fermi = build_lab.ssh.user_folder("busy", "fermi")
    _hold(held, boltzmann)
    code, data, err = _build(build_lab, repo, "ampere")
    assert code == 0, err
    assert data["build_host"] == "fermi" and data["fallback"] == []  # busy is not down
    fermi_holder = _hold(held, fermi)
    proc = subprocess.Popen(build_lab.ka_argv("build", "ampere", "--repo", str(repo), "--kernel-tree",
                                              str(build_lab.kernel.bare), "--no-publish", "--json"),
                            env=build_lab.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = repo / "out/ampere/build.log", time.monotonic() + 120
    while "waiting for a free build slot: boltzmann, fermi busy" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "ka-build never said it waits"
        time.sleep(0.2)
    _release(fermi_holder)  # that build ends: its slot is free
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert json.loads(out)["build_host"] == "fermi"


def test_max_builds_runs_two_builds_on_one_build_host(build_lab: BuildLab, tmp_path: Path) -> None:
    """Two builds at once in one workdir: their kernel source mirror is fetched under a lock, one at a time."""
    workdir = build_lab.ssh.user_folder("two", "boltzmann")
    infra = build_lab.infra("two", hosts=("boltzmann",)).replace(
        f"    workdir: {workdir}\n", f"    workdir: {workdir}\n    max_builds: 2\n", 1)
    repo = _fleet(build_lab, tmp_path / "fleet", "two", infra=infra)
    code, data, err = _build(build_lab, repo, "ampere", "volta")
    assert code == 0, err
    assert {h["build_host"] for h in data["hosts"]} == {"boltzmann"}
    slots = {(repo / "out" / h / "build.log").read_text().split("slot ")[1][:6] for h in ("ampere", "volta")}
    assert slots == {"1 of 2", "2 of 2"}
