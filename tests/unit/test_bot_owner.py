"""Owners of leases and running jobs: alive, dead, zombie, recycled pid."""

from __future__ import annotations

import os
import socket

from bot import owner


def test_recycled_pid_and_other_machines() -> None:
    pid = os.getpid()
    assert not owner.alive(f"{socket.gethostname()}:{pid}:1:0")  # same pid, another start time
    assert owner.alive("another-host:1:1:0")
    assert not owner.alive(None) and not owner.alive("garbage")
