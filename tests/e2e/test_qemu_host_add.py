"""``ka host add`` on the real arm64 hosts: both QEMU flavours (Arch Linux ARM's pacman, Debian's apt) running
Debian's 6.1 kernel through U-Boot and extlinux.  From the board alone it writes a manifest and a config
(the running one, carried to the fleet's 6.12 baseline by the real tree's Kconfig), and the three next steps
accept them: ``ka-promote``, ``ka-build --render-only`` (whose config audit runs here on the real tree) and
``ka-install --dry-run`` against the same host.  A board it cannot manage is refused, nothing written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_qemu_host import console_kept
from tests.support import qemuhost
from tests.support.fleet import sample_repo
from tests.support.needs import require

pytestmark = pytest.mark.qemu


APT = ("apt_repository:\n  ssh: hertz\n  path: /srv/apt/fleet\n  name: fleet\n  url: https://pkg.example.org/apt\n"
       "  key: 0123456789ABCDEF0123456789ABCDEF01234567\n")


def _ka(repo: Path, tree: Path, folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(folder),
           "KA_SSH_CONFIG": str(folder / "ssh_config"), "KA_KNOWN_HOSTS": str(folder / "known_hosts"),
           "KA_KERNEL_TREE": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "ka", *argv, "--repo", str(repo)], capture_output=True,
                          text=True, env=env, cwd=repo, timeout=900)


def _booted(image: qemuhost.Image, folder: Path) -> qemuhost.Vm:
    vm = qemuhost.Vm(image, folder / "vm").start()
    vm.wait_ssh()
    (folder / "ssh_config").write_text(vm.ssh_config("newbie"))
    (folder / "known_hosts").write_text(vm.known_hosts())
    return vm


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git/" not in str(p)}


@pytest.mark.parametrize("flavour", ["pacman", "deb"])
def test_a_board_becomes_a_host_the_three_next_verbs_accept(
        flavour: str, real_kernel: tuple[Path, str], tmp_path: Path, request: pytest.FixtureRequest) -> None:
    require(all(subprocess.run(["sh", "-c", f"command -v {t}"], capture_output=True).returncode == 0
                for t in ("gcc", "flex", "bison")), "gcc, flex and bison, for Kconfig (scripts/setup test)")
    tree, ref = real_kernel
    image = qemuhost.image(log=print, flavour=flavour)
    repo = sample_repo(tmp_path / "fleet", ref)
    with console_kept(_booted(image, tmp_path), request.node.name):
        add = ["host", "add", "newbie", "--ssh", "newbie", "--like", "ampere", "--operator", "kim", "--json"]
        if flavour == "deb":  # the sample fleet publishes pacman packages only
            before = _snapshot(repo)
            refused = _ka(repo, tree, tmp_path, *add)
            assert refused.returncode == 2 and "fleet/infra.yaml has no apt_repository" in refused.stderr
            assert _snapshot(repo) == before
            with open(repo / "fleet/infra.yaml", "a") as fh:
                fh.write(APT)
        added = _ka(repo, tree, tmp_path, *add)
        assert added.returncode == 0, added.stderr
        assert "  newbie: [kim]" in (repo / "fleet/infra.yaml").read_text()
        data = json.loads(added.stdout)
        manifest, config = (repo / "fleet/newbie.yaml").read_text(), (repo / "fleet/configs/newbie.config").read_text()
        print(manifest, "\n".join(config.splitlines()[:12]), sep="\n")
        assert data["written"] and sorted(data["files"]) == [
            "fleet/configs/newbie.config", "fleet/infra.yaml", "fleet/newbie.yaml"]
        # from the board: Debian's 6.1 kernel, a series the tree lacks, takes the fleet's baseline
        assert f"ref: {ref}" in manifest and "uname -r: 6.1.0-57-arm64" in manifest
        assert ("format: apt" if flavour == "deb" else "format: pacman") in manifest
        assert ("initramfs: initramfs-tools" if flavour == "deb" else "initramfs: none") in manifest
        assert "config of the kernel newbie ran (6.1.0-57-arm64, /boot/config-6.1.0-57-arm64)" in config
        assert f"carried to {ref}" in config and "options the running kernel had are off or gone here" in config
        assert f"Linux/arm64 {ref[1:]} Kernel Configuration" in config  # written by the baseline's Kconfig
        for step in data["next"]:
            argv = step.split()
            if argv[0] == "git":
                for sub in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "add"]):
                    subprocess.run(["git", "-C", str(repo), *sub], check=True, capture_output=True)
                continue
            res = _ka(repo, tree, tmp_path, argv[0].removeprefix("ka-"), *argv[1:])
            assert res.returncode == 0, f"{step}:\n{res.stdout}\n{res.stderr}"
            if argv[0] == "ka-build":
                assert "config audit: all " in res.stdout + res.stderr, res.stdout + res.stderr
            if argv[0] == "ka-install":
                assert "6.1.0-57-arm64" in res.stdout + res.stderr and "dry run" in res.stdout + res.stderr


#: a user of the board's own, with no sudo (the image has none): kim logs in with a key of the test's
ADD_USER = ("echo 'kim:x:1000:1000::/home/kim:/bin/sh' >> /etc/passwd; echo 'kim:*:19000:0:99999:7:::' >> /etc/shadow;"
            " mkdir -p /home/kim/.ssh; cat > /home/kim/.ssh/authorized_keys; chown -R 1000:1000 /home/kim;"
            " chmod 700 /home/kim/.ssh")


@pytest.mark.parametrize(("change", "probe"), [
    ("rm /boot/extlinux/extlinux.conf", "cat /boot/extlinux/extlinux.conf: "),
    (ADD_USER, "sudo -n true: "),
], ids=["no-extlinux", "no-sudo"])
def test_a_board_it_cannot_manage_is_refused_naming_the_probe(
        change: str, probe: str, qemu_image: qemuhost.Image, real_kernel: tuple[Path, str], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    tree, ref = real_kernel
    repo = sample_repo(tmp_path / "fleet", ref)
    with console_kept(_booted(qemu_image, tmp_path), request.node.name) as vm:
        key = tmp_path / "kim"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        ssh = ["ssh", "-F", str(tmp_path / "ssh_config"), "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}"]
        subprocess.run([*ssh, "newbie", change], input=key.with_suffix(".pub").read_bytes(), check=True, timeout=60)
        if change == ADD_USER:
            (tmp_path / "ssh_config").write_text(vm.ssh_config("newbie").replace("User root", "User kim")
                                                 .replace(str(vm.image.client_key), str(key)))
        before = _snapshot(repo)
        res = _ka(repo, tree, tmp_path, "host", "add", "newbie", "--ssh", "newbie", "--like", "ampere")
        assert res.returncode == 2, res.stdout + res.stderr
        assert "newbie cannot be added as it is; nothing was written" in res.stderr and probe in res.stderr, res.stderr
        assert _snapshot(repo) == before
