"""ka-install under faults: interrupts (SIGINT, SIGTERM) and dropped connections at every stage, odd
hosts (presets kept by NoUpgrade, a stale pacman lock, a deleted way back).  After each, the device
boots a kernel with its modules, and the way back ka-install printed gets it to the previous release.
The rows of docs/faults.md, one test (or one parameter) each."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.installfaults import gate, hook, wait_file
from tests.support.installlab import NEW, OLD, InstallLab
from tests.support.sshhosts import USER
from tests.support.targets import Firmware, Target, kill_tree


def finished(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=300)
    try:
        data = json.loads(out)
    except ValueError:
        data = {}
    return proc.returncode, data, err


def boots_with_modules(target: Target) -> str:
    """The release the host's firmware would boot now; its modules must be in place (its package's)."""
    release = Firmware(target.root / "boot").choose(target.bad)
    assert release is not None, "nothing on the host boots"
    assert (target.root / f"usr/lib/modules/{release}/pkgbase").is_file(), f"{release} would boot without modules"
    return release


def pacman_idle(target: Target, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while (target.root / "var/lib/pacman/db.lck").exists():
        assert time.monotonic() < end, "pacman never ended"
        time.sleep(0.1)


def back_to_old_and_again(lab: InstallLab, repo: Path, target: Target, recovery: list[str]) -> None:
    """The way back (when anything changed) brings the previous release with its modules; then an install goes
    through: nothing an interruption left stands in the way."""
    said = "\n".join(recovery)
    assert "--rollback" in said or "install again" in said or said == "nothing on ampere was changed", said
    if "--rollback" in said:
        code, _, err = lab.install(repo, "--rollback")
        assert code == 0, err
        assert target.boots[-1] == OLD and boots_with_modules(target) == OLD
        assert not (target.root / f"usr/lib/modules/.ka-prev-{OLD}").exists()
    code, _, err = lab.install(repo)
    assert code == 0, err
    assert target.boots[-1] == NEW and boots_with_modules(target) == NEW
    assert (target.root / f"usr/lib/modules/{OLD}/pkgbase").is_file()  # the kept kernel's, for its entry


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_an_interrupt_during_pacman_waits_for_it_and_leaves_the_way_back(install_lab: InstallLab, tmp_path: Path,
                                                                         signum: int) -> None:
    target = install_lab.targets.target(f"int-pacman-{signum}")
    gate(target)
    repo = install_lab.fleet(tmp_path / "fleet", f"int-pacman-{signum}", target)
    proc = install_lab.popen(repo)
    wait_file(target.root / "run/in-pacman")
    proc.send_signal(signum)
    time.sleep(1.5)
    assert proc.poll() is None, "ka-install left while pacman was changing the host"
    (target.root / "run/gate").touch()
    code, data, err = finished(proc)
    assert code == 130, err
    assert f"interrupted ({signal.Signals(signum).name}) during: install the package" in err
    assert "waiting for it to end" in err
    assert target.boots == [OLD]  # never rebooted
    assert boots_with_modules(target) == OLD  # the kept entry, and the modules pacman removed are back
    assert not (target.root / "var/lib/kernel-agent/install.lock").exists()
    assert any("kernel-agent-previous" in line for line in data["recovery"]), data["recovery"]
    gate_hook = target.root / "etc/pacman.d/hooks/10-gate.hook"
    gate_hook.unlink()
    back_to_old_and_again(install_lab, repo, target, data["recovery"])


def test_a_second_interrupt_leaves_pacman_running_on_its_own(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("int-twice")
    gate(target)
    repo = install_lab.fleet(tmp_path / "fleet", "int-twice", target)
    proc = install_lab.popen(repo)
    wait_file(target.root / "run/in-pacman")
    proc.send_signal(signal.SIGINT)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    code, data, err = finished(proc)
    assert code == 130, err
    assert any("pacman goes on by itself" in line for line in data["recovery"]), data["recovery"]
    # pacman still holds its lock: a rollback now is refused before it changes anything
    before = target.snapshot()
    code, _, err = install_lab.install(repo, "--rollback")
    assert code == 3 and "db.lck is there: pacman is running" in err and "nothing was changed" in err
    assert {k: v for k, v in target.snapshot().items() if "kernel-agent" not in k} == \
        {k: v for k, v in before.items() if "kernel-agent" not in k}
    (target.root / "run/gate").touch()
    pacman_idle(target)
    time.sleep(0.5)  # the detached script puts the modules back after pacman
    assert boots_with_modules(target) == OLD
    (target.root / "etc/pacman.d/hooks/10-gate.hook").unlink()
    back_to_old_and_again(install_lab, repo, target, data["recovery"])


def test_a_dropped_connection_during_pacman_is_waited_out_and_the_modules_come_back(install_lab: InstallLab,
                                                                                   tmp_path: Path) -> None:
    target = install_lab.targets.target("drop-pacman")
    gate(target)
    repo = install_lab.fleet(tmp_path / "fleet", "drop-pacman", target)
    proc = install_lab.popen(repo)
    wait_file(target.root / "run/in-pacman")
    assert target.host.proc is not None
    kill_tree(target.host.proc.pid)  # sshd and every session under it: the connection drops
    target.host.proc.wait()
    target.host.start()
    (target.root / "run/gate").touch()
    code, data, err = finished(proc)
    assert code == 3 and data["state"] == "failed", err
    assert "the connection dropped while the package manager ran" in err and "ended with exit 0" in err
    assert target.boots == [OLD] and boots_with_modules(target) == OLD
    (target.root / "etc/pacman.d/hooks/10-gate.hook").unlink()
    back_to_old_and_again(install_lab, repo, target, data["recovery"])


#: the stages of an install, as ka-install names them on standard error, in order
STAGES = ["back up", "keep ", "default kernel-agent-previous", "upload ", "make the initramfs",
          "kernel-agent (linux-ampere", "reboot"]


def interrupted_at(lab: InstallLab, repo: Path, stage: str, fault: Any) -> tuple[int, dict[str, Any], str]:
    """Run an install; when ``stage`` begins, do ``fault``; the result."""
    proc = lab.popen(repo)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if stage in line:
            fault(proc)
            break
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints where every thread is
        out, err = proc.communicate()
        raise AssertionError("ka-install hung after the fault:\n" + "".join(seen) + err) from None
    try:
        data = json.loads(out)
    except ValueError:
        data = {}
    return proc.returncode, data, "".join(seen) + err


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_an_interrupt_at_any_stage_leaves_a_booting_kernel_and_the_way_back(install_lab: InstallLab, tmp_path: Path,
                                                                           stage: str, signum: int) -> None:
    tag = f"int-{STAGES.index(stage)}-{int(signum)}"
    target = install_lab.targets.target(tag)
    repo = install_lab.fleet(tmp_path / "fleet", tag, target)
    code, data, err = interrupted_at(install_lab, repo, stage, lambda proc: proc.send_signal(signum))
    assert code in (130, 0), err  # 0: the heartbeat had seen the new kernel already
    target.settle()
    assert boots_with_modules(target) in (OLD, NEW)
    if code == 0:
        return
    assert f"interrupted ({signal.Signals(signum).name}) during:" in err and data["recovery"], err
    assert not (target.root / "var/lib/kernel-agent/install.lock").exists() or \
        any("install lock" in line for line in data["recovery"])
    lock = target.root / "var/lib/kernel-agent/install.lock"
    if lock.exists():  # the way back says to remove it once the host is back (it was rebooting)
        shutil.rmtree(lock)
    back_to_old_and_again(install_lab, repo, target, data["recovery"])


def test_a_preset_kept_by_noupgrade_stops_the_install_before_the_reboot(install_lab: InstallLab,
                                                                        tmp_path: Path) -> None:
    target = install_lab.targets.target("noupgrade")
    conf = target.root / "etc/pacman.conf"
    conf.write_text(conf.read_text() + "NoUpgrade = etc/mkinitcpio.d/*\n")  # owners keeping their presets
    repo = install_lab.fleet(tmp_path / "fleet", "noupgrade", target)
    code, data, err = install_lab.install(repo)
    assert code == 1 and data["state"] == "failed", err
    assert "did not put every file of the package in place" in err and "linux-ampere.preset.pacnew" in err
    assert target.boots == [OLD] and boots_with_modules(target) == OLD
    conf.write_text(conf.read_text().replace("NoUpgrade = etc/mkinitcpio.d/*\n", ""))
    back_to_old_and_again(install_lab, repo, target, data["recovery"])


def test_an_initramfs_built_for_the_old_release_stops_the_install_before_the_reboot(install_lab: InstallLab,
                                                                                    tmp_path: Path) -> None:
    target = install_lab.targets.target("oldpreset")
    # a preset that cannot be replaced, without a word from pacman: a hook puts the old release back in it
    hook(target, "50-keep-preset", "PostTransaction",
         f"/bin/busybox sed -i s/{NEW}/{OLD}/ /etc/mkinitcpio.d/linux-ampere.preset")
    repo = install_lab.fleet(tmp_path / "fleet", "oldpreset", target)
    code, data, err = install_lab.install(repo)
    assert code == 1 and data["state"] == "failed", err
    assert f"built the initramfs for {OLD}, not {NEW}" in err
    assert target.boots == [OLD] and boots_with_modules(target) == OLD
    (target.root / "etc/pacman.d/hooks/50-keep-preset.hook").unlink()
    back_to_old_and_again(install_lab, repo, target, data["recovery"])


def test_a_file_another_program_writes_in_boot_is_not_blamed_on_the_manifest(install_lab: InstallLab,
                                                                            tmp_path: Path) -> None:
    target = install_lab.targets.target("foreign")
    hook(target, "50-writes-boot", "PostTransaction", "echo hello > /boot/splash.bmp")
    repo = install_lab.fleet(tmp_path / "fleet", "foreign", target)
    code, data, err = install_lab.install(repo)
    assert code == 1 and data["state"] == "failed", err
    assert "splash.bmp changed in" in err and "something else on the host wrote there" in err
    assert "check install.image" not in err
    assert target.boots == [OLD] and boots_with_modules(target) == OLD


def test_a_stale_pacman_lock_is_found_before_anything_changes(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("dblck")
    (target.root / "var/lib/pacman/db.lck").touch()
    repo = install_lab.fleet(tmp_path / "fleet", "dblck", target)
    before = target.snapshot()
    code, data, err = install_lab.install(repo)
    assert code == 3 and data["state"] == "refused", err
    assert "db.lck is there" in err and "remove the stale lock: unshare -r rm --" in err
    assert target.snapshot() == before


def test_a_deleted_kept_image_points_at_the_backup(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("noprev")
    repo = install_lab.fleet(tmp_path / "fleet", "noprev", target)
    code, _, err = install_lab.install(repo)
    assert code == 0, err
    (target.root / "boot/Image.ka-prev").unlink()
    before = target.snapshot()
    code, data, err = install_lab.install(repo, "--rollback")
    assert code == 2 and data["state"] == "refused", err
    assert "Image.ka-prev are gone" in err and f"ka-install ampere --rollback {OLD}" in err
    assert "find:" not in err and target.snapshot() == before
    code, _, err = install_lab.install(repo, "--rollback", OLD)
    assert code == 0 and target.boots[-1] == OLD and boots_with_modules(target) == OLD, err


def test_a_second_backup_of_a_release_never_takes_the_first_ones_name(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("twobackups")
    repo = install_lab.fleet(tmp_path / "fleet", "twobackups", target)
    code, data, err = install_lab.install(repo)
    assert code == 0, err
    first = Path(data["backup"].split(":", 1)[1])
    sums = (first / "SHA256SUMS").read_text()
    assert install_lab.install(repo, "--rollback")[0] == 0
    # the same release again, but not the same bytes (extlinux.conf now has kernel-agent's entries)
    code, data, err = install_lab.install(repo)
    assert code == 0, err
    beside = Path(data["backup"].split(":", 1)[1])
    assert beside.parent == first.parent and beside.name.startswith(f"{OLD}.") and beside != first
    assert (first / "SHA256SUMS").read_text() == sums  # the first one keeps its name and its bytes
    assert install_lab.install(repo, "--rollback")[0] == 0
    code, data, err = install_lab.install(repo)  # the same bytes as the one beside: it is kept as it is
    assert code == 0 and data["backup"].endswith(f"/ampere/{beside.name}"), err
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, beside.name])


def test_a_full_backup_host_is_named_and_its_partial_upload_removed(install_lab: InstallLab, tmp_path: Path) -> None:
    target = install_lab.targets.target("bfull")
    backups = install_lab.build.ssh.user_folder("bfull", "backups")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0755", "tmpfs", str(backups)], check=True)
    try:
        subprocess.run(["chown", f"{USER}:{USER}", str(backups)], check=True)
        repo = install_lab.fleet(tmp_path / "fleet", "bfull", target)
        before = target.snapshot()
        code, data, err = install_lab.install(repo)
        left = [p.name for p in (backups / "ampere").iterdir()] if (backups / "ampere").exists() else []
    finally:
        subprocess.run(["umount", str(backups)], check=True)
    assert code == 3 and data["state"] == "refused", err
    assert "the backup host hertz is full" in err and "KiB free" in err and "nothing on ampere was changed" in err
    assert "OSError" not in err and left == []
    assert target.snapshot() == before


@pytest.mark.parametrize("signed_again", [False, True], ids=["its-signature", "signed-again"])
def test_a_corrupt_package_file_is_refused_before_anything_changes(install_lab: InstallLab, tmp_path: Path,
                                                                   signed_again: bool) -> None:
    target = install_lab.targets.target(f"corrupt-{int(signed_again)}")
    repo = install_lab.fleet(tmp_path / "fleet", f"corrupt-{int(signed_again)}", target)
    package = tmp_path / install_lab.new.name
    data = install_lab.new.read_bytes()
    package.write_bytes(data[: len(data) // 2])  # a download cut short
    if signed_again:  # what a signing key cannot vouch for: the bytes were already broken when signed
        install_lab.targets.sign(package)
    else:
        Path(f"{package}.sig").write_bytes(Path(f"{install_lab.new}.sig").read_bytes())
    before = target.snapshot()
    code, result, err = install_lab.install(repo, "--package", str(package))
    assert code in (1, 2) and result["state"] == "refused", err
    assert ("the signature does not verify" in err) != signed_again, err
    if signed_again:
        assert f"{package.name}: cannot be read as a .pkg.tar.zst package" in err and "corrupt or cut-short" in err
    assert target.snapshot() == before


def drop(target: Target) -> Any:
    """The fault that drops every ssh connection to the host at once (sshd and its sessions killed, sshd back)."""
    def fault(proc: subprocess.Popen[str]) -> None:
        assert target.host.proc is not None
        kill_tree(target.host.proc.pid)
        target.host.proc.wait()
        target.host.start()
    return fault


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_a_dropped_connection_at_any_stage_leaves_a_booting_kernel_and_the_way_back(install_lab: InstallLab,
                                                                                   tmp_path: Path, stage: str) -> None:
    tag = f"drop-{STAGES.index(stage)}"
    target = install_lab.targets.target(tag)
    repo = install_lab.fleet(tmp_path / "fleet", tag, target)
    code, data, err = interrupted_at(install_lab, repo, stage, drop(target))
    assert code in (0, 1, 3), err  # 0: the drop fell between two commands of a step that had none left
    target.settle()
    assert boots_with_modules(target) in (OLD, NEW)
    if code == 0:
        return
    assert "Traceback" not in err and data["recovery"], err
    assert not (target.root / "var/lib/kernel-agent/install.lock").exists(), data["recovery"][-1]  # let go anew
    back_to_old_and_again(install_lab, repo, target, data["recovery"])
