"""The boot-once trial's pieces: the commands ka-install runs on the host, and the U-Boot script a board needs."""

from __future__ import annotations

import pytest

from ka import trial
from ka.installspec import InstallSpec


def spec(prefix: tuple[str, ...] = ("sudo", "-n"), state: str = "/boot") -> InstallSpec:
    from ka.installspec import Commands

    return InstallSpec(ssh="h", pkgbase="linux-h", trial_boot="uboot-script", trial_state=state,
                       commands=Commands(prefix=prefix))


@pytest.mark.parametrize(("state", "files"), [
    ("/boot", ("/boot/ka-trial.txt", "/boot/ka-tried")),
    ("/boot/state", ("/boot/state/ka-trial.txt", "/boot/state/ka-tried")),
])
def test_the_trial_files_live_in_trial_state(state: str, files: tuple[str, str]) -> None:
    assert trial.paths(spec(state=state)) == files


@pytest.mark.parametrize("prefix", [("sudo", "-n"), ()])
def test_arming_copies_then_renames_and_clears_the_mark_all_as_root(prefix: tuple[str, ...]) -> None:
    cmds = trial.arm_commands(spec(prefix), "/tmp/x/ka-trial.txt")
    assert all(argv[:len(prefix)] == list(prefix) for argv in cmds)
    bare = [argv[len(prefix):] for argv in cmds]
    # cp, not install -m: a FAT partition has no modes to set; synced before the rename and after
    assert bare == [["cp", "--", "/tmp/x/ka-trial.txt", "/boot/ka-trial.txt.ka-new"], ["sync"],
                    ["mv", "-T", "--", "/boot/ka-trial.txt.ka-new", "/boot/ka-trial.txt"],
                    ["rm", "-f", "--", "/boot/ka-tried"], ["sync"]]


def test_confirming_removes_both_files() -> None:
    assert trial.clear_commands(spec(())) == [["rm", "-f", "--", "/boot/ka-trial.txt", "/boot/ka-tried"], ["sync"]]


@pytest.mark.parametrize("device", ["mmc 0:1", "virtio 0:2", "usb 0:1"])
def test_the_uboot_script_names_the_state_partition_everywhere(device: str) -> None:
    script = trial.uboot_script(device)
    assert script.startswith("ka_trial=") and "DEV" not in script
    assert script.count(device) == 3  # load the trial file, test for the mark, write the mark
    # only the two names are imported from a file root can write on the host: never bootcmd
    assert "env import -t ${scriptaddr} ${filesize} ka_default ka_fallback;" in script
    assert "setenv pxe_label_override ${ka_fallback}" in script
