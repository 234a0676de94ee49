"""Owners of leases and running jobs: alive, dead, zombie, recycled pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from bot import owner


def test_me_is_alive_and_a_dead_process_is_not() -> None:
    assert owner.alive(owner.me())
    child = subprocess.Popen(["sleep", "30"])
    theirs = f"{socket.gethostname()}:{child.pid}:{owner._stat(child.pid)[1]}:0"  # type: ignore[index]
    assert owner.alive(theirs)
    os.kill(child.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert not owner.alive(theirs)  # a zombie: killed, not reaped yet
    child.wait()
    assert not owner.alive(theirs)
