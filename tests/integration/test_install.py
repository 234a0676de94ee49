"""ka-install against real sshd hosts whose root is a per-test folder, a real backup host, real
pacman, packages built by ka-build; reboots by the hosts' power controller (tests/support/targets.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.installlab import CONFIG, NEW, OLD, InstallLab, manifest
from tests.support.sshhosts import USER, run


def test_install_backs_up_installs_reboots_and_confirms(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("happy")
    repo = install_lab.fleet(tmp_path / "fleet", "happy", target)
    old_image = (target.root / "boot/Image").read_bytes()
    code, data, err = install_lab.install(repo)
    assert code == 0, err
    assert data["state"] == "succeeded" and data["old_release"] == OLD and data["new_release"] == NEW
    assert target.boots[-1] == NEW and data["heartbeat"]["release"] == NEW
    # the backup, verified where it lies
    backup = Path(data["backup"].split(":", 1)[1])
    assert backup.name == OLD and backup.parent.name == "ampere"
    run("sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS", user=USER, cwd=backup)
    assert (backup / "boot/Image").read_bytes() == old_image
    assert (backup / "package.txt").read_text() == "linux-ampere 6.12.0-1\n"
    # the package, the way back, the owner's lines
    assert "linux-ampere 6.12.0-2" in install_lab.targets.pacman(target.root, "-Q", "linux-ampere")
    assert (target.root / "boot/Image.ka-prev").read_bytes() == old_image
    assert (target.root / f"usr/lib/modules/{OLD}").is_dir() and (target.root / f"usr/lib/modules/{NEW}").is_dir()
    conf = (target.root / "boot/extlinux/extlinux.conf").read_text()
    assert "DEFAULT kernel-agent\n" in conf and "FALLBACK kernel-agent-previous\n" in conf
    assert "LABEL rescue" in conf and "TIMEOUT 30" in conf and "MENU TITLE PineTab2 boot" in conf
    assert "APPEND root=LABEL=ROOT rw console=ttyS2,1500000 quiet panic=10" in conf
    assert "LINUX /Image.ka-prev" in conf and "FDT /dtbs.ka-prev/rockchip/rk3566-pinetab2.dtb" in conf
    initramfs = target.root / "boot/initramfs-linux-ampere.img"
    assert initramfs.read_text().startswith(f"initramfs for {NEW}\n")
    assert initramfs.stat().st_mtime >= (target.root / "boot/Image").stat().st_mtime
    assert not (target.root / "var/lib/kernel-agent/install.lock").exists()


def test_a_host_that_never_comes_back_fails_with_the_backup_and_the_console_steps(install_lab: InstallLab,
                                                                                 tmp_path: Path) -> None:
    target = install_lab.targets.target("dead", mode="dead")
    repo = install_lab.fleet(tmp_path / "fleet", "dead", target)
    (repo / "fleet/ampere.yaml").write_text(install_lab.manifest(target).replace("    up: 20\n", "    up: 3\n"))
    code, data, err = install_lab.install(repo)
    assert code == 1 and data["state"] == "failed"
    assert "did not come back within 3s" in err and data["heartbeat"]["problem"] == "never-back"
    assert data["backup"].endswith(f"/ampere/{OLD}")
    steps = "\n".join(data["recovery"])
    assert "kernel-agent-previous" in steps and data["backup"] in steps and "--rollback" in steps
    assert "install lock" in steps  # it stays on the host, which cannot be reached to remove it


def test_a_host_that_comes_back_on_the_old_kernel_fails_and_says_so(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("panic", bad=(NEW,))
    repo = install_lab.fleet(tmp_path / "fleet", "panic", target)
    code, data, err = install_lab.install(repo)
    assert code == 1 and data["state"] == "failed", err
    assert f"the host fell back to {OLD}" in err and data["heartbeat"]["release"] == OLD
    assert target.boots[-1] == OLD
    assert any("ka-install ampere --rollback" in line for line in data["recovery"])
    # the next install is refused until the running kernel is the default again
    target.bad = set()
    code, data, err = install_lab.install(repo)
    assert code == 1 and "--rollback" in err and data["state"] == "refused"


def test_with_the_backup_host_down_nothing_is_touched(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("nobackup")
    down = install_lab.build.ssh.add("backup-down", 29)
    down.stop()
    repo = install_lab.fleet(tmp_path / "fleet", "nobackup", target, backup_ssh="backup-down")
    before = target.snapshot()
    code, data, err = install_lab.install(repo)
    assert code == 3 and data["state"] == "refused", err
    assert "backup host cannot be reached" in err and "nothing on ampere was changed" in err
    assert target.snapshot() == before and target.boots == [OLD]


def test_a_package_with_a_bad_signature_is_refused(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("badsig")
    repo = install_lab.fleet(tmp_path / "fleet", "badsig", target)
    package = tmp_path / install_lab.new.name
    package.write_bytes(install_lab.new.read_bytes())
    Path(f"{package}.sig").write_bytes(Path(f"{install_lab.old}.sig").read_bytes())  # another file's signature
    before = target.snapshot()
    code, data, err = install_lab.install(repo, "--package", str(package))
    assert code == 1 and data["state"] == "refused"
    assert "the signature does not verify" in err and "nothing on ampere was changed" in data["recovery"]
    assert target.snapshot() == before


def test_a_host_without_the_reboot_command_is_refused_before_anything_changes(install_lab: InstallLab,
                                                                             tmp_path: Path) -> None:
    """Found on a busybox host that has no systemctl: the kernel was installed, then the reboot failed."""
    target = install_lab.targets.target("nosystemctl")
    repo = install_lab.fleet(tmp_path / "fleet", "nosystemctl", target)
    (target.root / "usr/bin/reboot").unlink()
    before = target.snapshot()
    for args in ((), ("--dry-run",)):
        code, data, err = install_lab.install(repo, *args)
        assert code == 2 and data["state"] == "refused", err
        assert f"install.commands.reboot runs {target.root}/usr/bin/reboot, which the host does not have" in err
    assert target.snapshot() == before and target.boots == [OLD]


def test_a_failing_hook_is_reported_although_pacman_exits_0(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("hook")
    (target.root / "etc/pacman.d/hooks/90-dkms.hook").write_text(
        "[Trigger]\nType = Path\nOperation = Install\nOperation = Upgrade\nTarget = usr/lib/modules/*\n\n"
        "[Action]\nDescription = Building out-of-tree modules...\nWhen = PostTransaction\n"
        "Exec = /bin/sh -c 'echo dkms: build failed; exit 1'\n")
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(target.root / "etc")], check=True)
    repo = install_lab.fleet(tmp_path / "fleet", "hook", target)
    code, data, err = install_lab.install(repo)
    assert code == 1 and data["state"] == "failed"
    assert "pacman -U exited 0" in err and "scriptlet or hook failed" in err
    assert target.boots == [OLD]  # not rebooted into a kernel whose install failed
    assert "kernel-agent-previous" in "\n".join(data["recovery"])
    # the kept kernel is the default while the new one is not complete: a reboot now boots it
    conf = (target.root / "boot/extlinux/extlinux.conf").read_text()
    assert "DEFAULT kernel-agent-previous" in conf and (target.root / f"usr/lib/modules/{OLD}").is_dir()
    # a second try does not keep the half-installed kernel as the way back: refused until --rollback
    code, data, err = install_lab.install(repo)
    assert code == 1 and "an install of 6.12.0-ampere-2 did not finish" in err and data["state"] == "refused"
    (target.root / "etc/pacman.d/hooks/90-dkms.hook").unlink()
    code, data, err = install_lab.install(repo, "--rollback")
    assert code == 0 and target.boots[-1] == OLD, err
    code, data, err = install_lab.install(repo)
    assert code == 0 and target.boots[-1] == NEW, err


def test_rollback_restores_the_previous_files_byte_for_byte(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("rollback")
    repo = install_lab.fleet(tmp_path / "fleet", "rollback", target)
    before = {p: (target.root / "boot" / p).read_bytes() for p in ("Image", "initramfs-linux-ampere.img",
                                                                   "dtbs/rockchip/rk3566-pinetab2.dtb")}
    code, data, err = install_lab.install(repo)
    assert code == 0, err
    new_image = (target.root / "boot/Image").read_bytes()
    code, data, err = install_lab.install(repo, "--rollback")
    assert code == 0, err
    assert data["action"] == "rollback" and data["state"] == "succeeded" and target.boots[-1] == OLD
    for rel, content in before.items():
        assert (target.root / "boot" / rel).read_bytes() == content, rel
    assert (target.root / "boot/Image.ka-prev").read_bytes() == before["Image"]  # both entries boot it now
    assert new_image != before["Image"]


def test_rollback_from_the_backup_host(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("restore")
    repo = install_lab.fleet(tmp_path / "fleet", "restore", target)
    old_image = (target.root / "boot/Image").read_bytes()
    code, data, err = install_lab.install(repo)
    assert code == 0, err
    for kept in ("boot/Image.ka-prev", "boot/initramfs-linux-ampere.img.ka-prev"):
        (target.root / kept).unlink()  # the files on the host are gone: only the backup is left
    code, data, err = install_lab.install(repo, "--rollback", OLD)
    assert code == 0, err
    assert target.boots[-1] == OLD and (target.root / "boot/Image").read_bytes() == old_image
    assert data["backup"].endswith(f"/ampere/{OLD}") and data["new_release"] == OLD
    code, _, err = install_lab.install(repo, "--rollback", "6.1.0-nope")
    assert code == 3 and "no backup of 6.1.0-nope" in err and OLD in err


def test_dry_run_prints_every_step_and_changes_nothing(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("dry")
    repo = install_lab.fleet(tmp_path / "fleet", "dry", target)
    before = target.snapshot()
    res = install_lab.ka("install", "ampere", "--repo", str(repo), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert target.snapshot() == before and target.boots == [OLD]
    out = res.stdout
    assert f"pacman --config {target.root}/etc/pacman.conf -U --noconfirm" in out
    assert f"cp -a -- {target.root}/boot/Image {target.root}/boot/Image.ka-prev" in out
    assert f"{target.root}/usr/bin/mkinitcpio -p linux-ampere" in out and "sha256sum --quiet --strict -c" in out
    # both versions of extlinux.conf, as the hand recipe writes them: the kept kernel first, then the new one
    shown = [line.removeprefix("      | ") for line in out.splitlines() if line.startswith("      | ")]
    defaults = [line.lower() for line in shown if line.lower().startswith("default ")]  # the owner's case kept
    # as read first, then as each extlinux step writes it
    assert defaults == ["default arch", "default kernel-agent-previous", "default kernel-agent"], shown
    assert "FALLBACK kernel-agent-previous" in shown and "# written by the owner" in shown
    assert not list(install_lab.build.ssh.user_folder("dry", "backups").iterdir())
    assert "not checked" not in out  # everything was reachable


def test_a_dry_run_with_nothing_reachable_prints_the_whole_plan(install_lab: InstallLab, tmp_path: Path) -> None:
    """No host answers and nothing is published: the plan from the manifest and infra, with what was not checked."""
    target = install_lab.targets.target("dry-nothing")
    repo = install_lab.fleet(tmp_path / "fleet", "dry-nothing", target)
    nowhere = tmp_path / "ssh_config"
    nowhere.write_text("Host *\n  HostName 127.0.0.1\n  Port 1\n")  # every name leads to a closed port
    env = {**install_lab.build.env(), "KA_SSH_CONFIG": str(nowhere)}
    runs = [subprocess.run([sys.executable, "-m", "ka", "install", "ampere", "--repo", str(repo), "--dry-run", *a],
                           env=env, capture_output=True, text=True, timeout=120) for a in ((), ("--json",))]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    out, data = runs[0].stdout, json.loads(runs[1].stdout)
    assert data["state"] == "dry-run" and [n.split(": ")[0] for n in data["not_checked"]] == [
        "the package", "the host", f"ampere:{target.root}/boot/extlinux/extlinux.conf", "the backup host"]
    assert f"what fleet/ampere.yaml builds: linux-ampere 6.12.0-2, kernel {NEW}" in data["not_checked"][0]
    assert "not checked: 4 (below)" in out and "not checked (4; a real run needs them):" in out
    assert f"pacman --config {target.root}/etc/pacman.conf -U --noconfirm" in out
    assert f"{target.root}/usr/bin/mkinitcpio -p linux-ampere" in out and "sha256sum --quiet --strict -c" in out
    assert f"kernel: <running release> -> {NEW}  (package 6.12.0-2)" in out
    shown = [line.removeprefix("      | ") for line in out.splitlines() if line.startswith("      | ")]
    defaults = [line for line in shown if line.startswith("DEFAULT ")]
    assert defaults == ["DEFAULT running", "DEFAULT kernel-agent-previous", "DEFAULT kernel-agent"], shown
    assert target.boots == [OLD] and "extlinux.conf before the steps (assumed):" in out


def test_two_installs_of_one_host_never_interleave(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("twice")
    repo = install_lab.fleet(tmp_path / "fleet", "twice", target)
    # the second from another output folder, as from another maintainer's machine: the host's lock decides
    first, second = install_lab.popen(repo), install_lab.popen(repo, "--out-dir", str(tmp_path / "elsewhere"))
    results = [p.communicate(timeout=300) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 1], results
    refused = next(err for (out, err), p in zip(results, (first, second), strict=True) if p.returncode == 1)
    assert "another install holds" in refused and "nothing was changed" in refused
    assert "var/lib/kernel-agent/install.lock" in refused  # the host's lock, not this machine's
    log = (target.root / "var/log/pacman.log").read_text()
    assert log.count("upgraded linux-ampere") == 1
    assert target.boots == [OLD, NEW]


def test_live_status_answers_within_its_timeout_with_a_host_that_hangs(install_lab: InstallLab,
                                                                       tmp_path: Path) -> None:
    target = install_lab.targets.target("live")
    hung = socket.socket()  # accepts connections and never says a word: a host stuck in its boot
    address = install_lab.build.ssh.address(28)
    hung.bind((address, 2222))
    hung.listen(8)
    with install_lab.build.ssh.config.open("a") as fh:
        fh.write(f"Host hung\n  HostName {address}\n  Port 2222\n")
    try:
        ohm = manifest(["soc/base"]) + "install:\n  ssh: hung\n"
        repo = install_lab.fleet(tmp_path / "fleet", "live", target, hosts={"ohm": ohm})
        code, _, err = install_lab.install(repo)
        assert code == 0, err
        start = time.monotonic()
        res = install_lab.ka("status", "--live", "--timeout", "2", "--json", "--repo", str(repo))
        took = time.monotonic() - start
    finally:
        hung.close()
    rows = {r["host"]: r for r in json.loads(res.stdout)}
    assert res.returncode == 1 and took < 10, (took, res.stderr)
    assert rows["ohm"]["reachable"] is False and rows["ohm"]["error"]
    amp = rows["ampere"]
    assert (amp["reachable"], amp["running"], amp["installed"], amp["newest"]) == (True, NEW, "6.12.0-2", "6.12.0-2")
    assert amp["is_newest"] is True and amp["manifest"] == "6.12.0-2" and amp["matches"] == "yes"
    assert amp["last_install"] == "succeeded" and amp["last_install_at"]
    table = install_lab.ka("status", "--live", "--timeout", "2", "--repo", str(repo)).stdout.splitlines()
    assert table[0].split()[:3] == ["HOST", "UP", "RUNNING"]
    assert next(ln for ln in table if ln.startswith("ampere")).split()[:4] == ["ampere", "yes", NEW, "6.12.0-2"]


def test_a_reboot_quicker_than_a_poll_is_told_by_the_boot_id(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("quick")
    target.down_for = 0.0  # sshd is back before the heartbeat's next look
    repo = install_lab.fleet(tmp_path / "fleet", "quick", target)
    code, data, err = install_lab.install(repo)
    assert code == 0, err
    assert data["heartbeat"]["release"] == NEW and data["heartbeat"]["down_after"] is not None


def test_a_reboot_command_that_fails_is_reported_at_once(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("noreboot")
    (target.root / "usr/bin/reboot").write_text("#!/bin/sh\necho 'Failed to reboot: Access denied' >&2\nexit 1\n")
    repo = install_lab.fleet(tmp_path / "fleet", "noreboot", target)
    code, data, err = install_lab.install(repo)
    assert code == 1 and "the reboot command failed on ampere" in err and "Access denied" in err
    assert data["heartbeat"]["problem"] == "reboot-failed"  # said at once, not after the wait for it to go down
    assert f"{NEW} is installed and waits for a reboot" in err and target.boots == [OLD]


def test_a_package_built_from_other_inputs_is_not_installed(install_lab: InstallLab, tmp_path: Path) -> None:
    """The newest published package may come from a pull request's /ka build: only the manifest's goes in."""
    target = install_lab.targets.target("inputs")
    repo = install_lab.fleet(tmp_path / "fleet", "inputs", target)
    (repo / "fleet/configs/ampere.config").write_text(CONFIG + "CONFIG_SOMETHING_ELSE=y\n")
    before = target.snapshot()
    code, data, err = install_lab.install(repo)
    assert code == 1 and data["state"] == "refused" and "the config differs" in err
    assert "build that first (ka-build ampere)" in err and target.snapshot() == before


def test_a_distribution_kernel_that_owns_the_image_is_named(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("alarm")
    distro = install_lab.targets.make_package(
        install_lab.build.ssh.user_folder("alarm", "pkg"),
        "pkgname=linux-aarch64\npkgver=6.6.0\npkgrel=1\narch=(any)\nlicense=(GPL)\npackage() {\n"
        "  printf 'Linux version 6.6.0-alarm\\n' | install -Dm644 /dev/stdin \"$pkgdir/boot/Image\"\n"
        "  printf 'dtb\\n' | install -Dm644 /dev/stdin \"$pkgdir/boot/dtbs/rockchip/rk3566-pinetab2.dtb\"\n}\n",
        "linux-aarch64-6.6.0-1-any.pkg.tar.zst")
    install_lab.targets.pacman(target.root, "-Rdd", "--noconfirm", "linux-ampere")
    install_lab.targets.pacman(target.root, "-U", "--noconfirm", str(distro))
    repo = install_lab.fleet(tmp_path / "fleet", "alarm", target)
    code, data, err = install_lab.install(repo)
    assert code == 2 and data["state"] == "refused", err
    assert "belongs to the package linux-aarch64" in err and "Remove linux-aarch64 first" in err
