"""Who holds something (a lease, a running job): a process on a machine, and whether it still lives.

An owner is ``host:pid:start:thread``, where ``start`` is the process's start time from
``/proc``, so a recycled pid is not mistaken for the old owner, and a zombie (a killed
worker nobody has reaped yet) counts as dead.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def me(thread: bool = True) -> str:
    """The caller as an owner string (thread 0 stands for the whole process)."""
    pid = os.getpid()
    start = (_stat(pid) or ("", "0"))[1]
    return f"{socket.gethostname()}:{pid}:{start}:{threading.get_ident() if thread else 0}"


def alive(owner: str | None) -> bool:
    """False when ``owner`` was a process on this machine that is gone (exited, zombie, or pid reused)."""
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    host, pid, start, _ = parts
    if host != socket.gethostname():
        return True  # another machine's process: its lease runs out on its own
    stat = _stat(int(pid))
    return stat is not None and stat[0] != "Z" and stat[1] == start
