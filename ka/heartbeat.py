"""Reboot a host and wait for it: ssh goes away, ssh comes back, and the running kernel says which.

"The host answered over ssh, running the new kernel" is the only proof an install worked.
Polling backs off (half a second, growing to five) so a host that takes minutes is not
hammered, and a quick one is seen quickly.  Each poll is a full ssh handshake with the pinned
key: a port that accepts connections while the host is still booting does not count as up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ka.errors import KaError
from ka.installspec import InstallSpec
from ka.ssh import Remote, SshSettings, Unreachable, connect

Log = Callable[[str], None]
POLL_START, POLL_MAX = 0.5, 5.0


@dataclass
class Beat:
    """What the heartbeat saw; times are seconds since the reboot command."""

    rebooted_at: float
    down_after: float | None = None
    up_after: float | None = None
    release: str | None = None
    problem: str | None = None  # "did-not-go-down", "never-back", or None

    def as_dict(self) -> dict[str, object]:
        return {"rebooted_at": round(self.rebooted_at, 3),
                "down_after": None if self.down_after is None else round(self.down_after, 1),
                "up_after": None if self.up_after is None else round(self.up_after, 1),
                "release": self.release, "problem": self.problem}


def _clock(start: float, wall: float, now: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall + (now - start)))


def _answers(ssh: SshSettings, name: str) -> Remote | None:
    try:
        return connect(ssh, name)
    except Unreachable:
        return None


def reboot(remote: Remote, spec: InstallSpec, ssh: SshSettings, log: Log,
           release: Callable[[Remote], str], show: Log = lambda line: None) -> Beat:
    """Run the reboot command on ``remote`` (which it closes), then wait down and up; read the release."""
    argv = spec.root(*spec.commands.reboot)
    wall, start = time.time(), time.monotonic()
    beat = Beat(rebooted_at=wall)
    try:
        remote.run(argv, timeout=60, check=False)
    except KaError:
        pass  # the connection went with the host: that is what a reboot does
    finally:
        remote.close()
    log(f"reboot command sent at {_clock(start, wall, start)}; waiting for ssh to go away "
        f"(up to {spec.down_timeout}s)")
    if not _wait(lambda: not _probe(ssh, remote.name), start + spec.down_timeout):
        beat.problem = "did-not-go-down"
        return beat
    beat.down_after = time.monotonic() - start
    said = f"down at {_clock(start, wall, start + beat.down_after)} (+{beat.down_after:.1f}s)"
    log(f"{said}; waiting for ssh to come back (up to {spec.up_timeout}s)")
    show(f"{said}; waiting for ssh")
    back: list[Remote] = []
    if not _wait(lambda: _keep(back, _answers(ssh, remote.name)), time.monotonic() + spec.up_timeout):
        beat.problem = "never-back"
        return beat
    beat.up_after = time.monotonic() - start
    with back[0] as again:
        beat.release = release(again)
    said = f"up at {_clock(start, wall, start + beat.up_after)} (+{beat.up_after:.1f}s), running {beat.release}"
    log(said)
    show(said)
    return beat


def _probe(ssh: SshSettings, name: str) -> bool:
    found = _answers(ssh, name)
    if found is None:
        return False
    found.close()
    return True


def _keep(into: list[Remote], remote: Remote | None) -> bool:
    if remote is not None:
        into.append(remote)
    return remote is not None


def _wait(done: Callable[[], bool], deadline: float) -> bool:
    delay = POLL_START
    while True:
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, POLL_MAX)
