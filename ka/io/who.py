"""Who runs this process, as a lock's owner file says it: ``user@host pid N``."""

from __future__ import annotations

import getpass
import os
import socket


def who() -> str:
    """``user@host pid N`` of this process (the uid when the user has no name)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"
