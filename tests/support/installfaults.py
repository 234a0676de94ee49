"""Faults for ka-install tests: pacman hooks on a test host that hold pacman at a gate, or do what an
odd host does (rewrite a preset, write into /boot)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.support.sshhosts import USER
from tests.support.targets import Target

#: a pre-transaction hook that says pacman runs, then holds it until the test opens the gate (two minutes at
#: most: a test that fails before opening it leaves nothing waiting)
GATE_HOOK = """[Trigger]
Type = Path
Operation = Install
Operation = Upgrade
Target = usr/lib/modules/*

[Action]
Description = Waiting for the test's gate...
When = PreTransaction
Exec = /bin/sh -c '/bin/busybox touch /run/in-pacman; i=0; while [ ! -e /run/gate ] && [ $i -lt 1200 ]; do \
/bin/busybox sleep 0.1; i=$((i+1)); done'
"""


def gate(target: Target) -> None:
    (target.root / "etc/pacman.d/hooks/10-gate.hook").write_text(GATE_HOOK)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(target.root / "etc")], check=True)


def wait_file(path: Path, timeout: float = 120) -> None:
    """Until ``path`` exists (a hook on a test host says where pacman is)."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def hook(target: Target, name: str, when: str, command: str) -> None:
    """A pacman hook on the host (run by pacman, chrooted into the host's root)."""
    (target.root / f"etc/pacman.d/hooks/{name}.hook").write_text(
        "[Trigger]\nType = Path\nOperation = Install\nOperation = Upgrade\nTarget = usr/lib/modules/*\n\n"
        f"[Action]\nDescription = {name}\nWhen = {when}\nExec = /bin/sh -c '{command}'\n")
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(target.root / "etc")], check=True)
