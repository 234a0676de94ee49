"""``ka host add`` against a real sshd host on loopback: the host key pinned only when named, and a machine
kernel-agent cannot manage (this x86_64 one, no extlinux.conf, no sudo -n) refused with every probe named
and nothing written.  The QEMU hosts are the happy path (tests/e2e/test_qemu_host.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ka.cli.main import main
from tests.support.fleet import AMPERE, MakeRepo, fleet_files
from tests.support.kernel import SmallKernel
from tests.support.sshhosts import SshLab


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git/" not in str(p)}


def _add(root: Path, lab: SshLab, kernel: SmallKernel, known: Path, *args: str) -> int:
    return main(["host", "add", "newbie", "--ssh", "fermi", "--repo", str(root), "--kernel-tree", str(kernel.bare),
                 "--ssh-config", str(lab.config), "--known-hosts", str(known), *args])


def test_an_unknown_host_key_is_shown_and_pinned_only_when_named(make_repo: MakeRepo, small_kernel: SmallKernel,
                                                                 ssh_lab: SshLab, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = make_repo({"ampere": AMPERE}, fleet_files(small_kernel))
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = ssh_lab.hosts["fermi"].folder / "host_key.pub"
    shown = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(key)], capture_output=True, text=True,
                           check=True).stdout.split()[1]
    assert _add(root, ssh_lab, small_kernel, known) == 2
    err = capsys.readouterr().err
    assert shown in err and "--accept-key" in err and "nothing was written" in err, err
    assert known.read_text() == ""
    wrong = "SHA256:" + "A" * 43
    assert _add(root, ssh_lab, small_kernel, known, "--accept-key", wrong) == 2
    assert known.read_text() == "" and shown in capsys.readouterr().err
    before = _snapshot(root)
    assert _add(root, ssh_lab, small_kernel, known, "--accept-key", shown) == 2  # pinned; then refused (below)
    assert ssh_lab.hosts["fermi"].address in known.read_text()
    assert _snapshot(root) == before


def test_a_machine_kernel_agent_cannot_manage_is_refused_with_every_probe_named(
        make_repo: MakeRepo, small_kernel: SmallKernel, ssh_lab: SshLab, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_repo({"ampere": AMPERE}, fleet_files(small_kernel))
    before = _snapshot(root)
    assert _add(root, ssh_lab, small_kernel, ssh_lab.known_hosts) == 2
    err = capsys.readouterr().err
    for said in ("fermi cannot be added as it is; nothing was written", "uname -m says x86_64",
                 "sudo -n true:", "cat /proc/device-tree/compatible"):
        assert said in err, err
    if not Path("/boot/extlinux/extlinux.conf").exists():
        assert "cat /boot/extlinux/extlinux.conf:" in err
    assert _snapshot(root) == before


@pytest.mark.parametrize(("argv", "said"), [
    (["ampere"], "fleet/ampere.yaml exists: ampere is in the fleet already"),
    (["Bad/Name"], "'Bad/Name' is not a host name"),
    (["newbie", "--operator", "bad/login"], "--operator bad/login: not a login; nothing was written"),
])
def test_a_name_that_cannot_be_a_new_host_is_refused_before_connecting(
        argv: list[str], said: str, make_repo: MakeRepo, small_kernel: SmallKernel, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    root = make_repo({"ampere": AMPERE}, fleet_files(small_kernel))
    code = main(["host", "add", *argv, "--ssh", "nowhere", "--repo", str(root), "--kernel-tree", str(small_kernel.bare),
                 "--ssh-config", str(tmp_path / "none")])
    assert code == 2 and said in capsys.readouterr().err
