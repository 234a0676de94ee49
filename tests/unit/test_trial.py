"""The boot-once trial's pieces: the commands ka-install runs on the host, and the U-Boot script a board needs."""

from __future__ import annotations

import pytest

from ka.fleet.installspec import InstallSpec
from ka.install import trial
from tests.support import docs


def spec(prefix: tuple[str, ...] = ("sudo", "-n"), state: str = "/boot") -> InstallSpec:
    from ka.fleet.installspec import Commands

    return InstallSpec(ssh="h", pkgbase="linux-h", trial_boot="uboot-script", trial_state=state,
                       commands=Commands(prefix=prefix))


@pytest.mark.parametrize(("state", "files"), [
    ("/boot", ("/boot/ka-trial.txt", "/boot/ka-tried", "/boot/ka-fell")),
    ("/boot/state", ("/boot/state/ka-trial.txt", "/boot/state/ka-tried", "/boot/state/ka-fell")),
])
def test_the_trial_files_live_in_trial_state(state: str, files: tuple[str, str, str]) -> None:
    assert trial.paths(spec(state=state)) == files


@pytest.mark.parametrize("prefix", [("sudo", "-n"), ()])
def test_arming_copies_then_renames_and_clears_the_mark_all_as_root(prefix: tuple[str, ...]) -> None:
    cmds = trial.arm_commands(spec(prefix), "/tmp/x/ka-trial.txt")
    assert all(argv[:len(prefix)] == list(prefix) for argv in cmds)
    bare = [argv[len(prefix):] for argv in cmds]
    # cp, not install -m: a FAT partition has no modes to set; synced before the rename and after
    assert bare == [["cp", "--", "/tmp/x/ka-trial.txt", "/boot/ka-trial.txt.ka-new"], ["sync"],
                    ["mv", "-T", "--", "/boot/ka-trial.txt.ka-new", "/boot/ka-trial.txt"],
                    ["rm", "-f", "--", "/boot/ka-tried", "/boot/ka-fell"], ["sync"]]


def test_ending_the_trial_removes_every_file() -> None:
    assert trial.clear_commands(spec(())) == [["rm", "-f", "--", "/boot/ka-trial.txt", "/boot/ka-tried",
                                               "/boot/ka-fell"], ["sync"]]


@pytest.mark.parametrize("device", ["mmc 0:1", "virtio 0:2", "usb 0:1"])
def test_the_uboot_script_names_the_state_partition_everywhere(device: str) -> None:
    script = trial.uboot_script(device)
    assert script.startswith("ka_trial=") and "DEV" not in script
    # load the trial file, test for the mark, write the fell-back mark, write the tried mark
    assert script.count(device) == 4
    # only the two names are imported from a file root can write on the host: never bootcmd
    assert "env import -t ${scriptaddr} ${filesize} ka_default ka_fallback;" in script
    # a mark that cannot be written must not start a trial that cannot end: the fallback boots
    assert script.count("setenv pxe_label_override ${ka_fallback}") == 2
    assert "else echo ka-trial: cannot write the mark, booting ${ka_fallback}" in script
    assert script.count(" if ") + script.startswith("ka_trial=if ") == script.count("fi;") + script.endswith(" fi")


def test_the_readme_shows_the_script_the_code_has() -> None:
    readme = docs.text()
    shown = [line for line in readme.splitlines() if line.startswith("setenv ka_trial '")]
    name, _, body = trial.uboot_script("mmc 0:1").partition("=")
    assert shown == [f"setenv {name} '{body}'"]
