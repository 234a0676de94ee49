"""Reboot a host and wait for it: ssh goes away, ssh comes back, and the running kernel says which.

"The host answered over ssh, running the new kernel" is the only proof an install worked.  A
reboot is told by the kernel's boot id (``/proc/sys/kernel/random/boot_id``, new at every boot)
as well as by ssh going away: a host that reboots between two polls (a VM, kexec) is still
seen to have rebooted, and a host whose reboot command did nothing is not mistaken for one that
came back.  Polling backs off (half a second, growing to five) so a host that takes minutes is
not hammered and a quick one is seen quickly.  Each poll is a full ssh handshake with the pinned
key: a port that accepts connections while the host is still booting does not count as up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ka.errors import KaError
from ka.fleet.installspec import InstallSpec
from ka.io.ssh import Remote, SshSettings, Unreachable, connect

Log = Callable[[str], None]
POLL_START, POLL_MAX = 0.5, 5.0


@dataclass
class Beat:
    """What the heartbeat saw; times are seconds since the reboot command."""

    rebooted_at: float
    down_after: float | None = None
    up_after: float | None = None
    release: str | None = None
    problem: str | None = None  # "reboot-failed", "did-not-go-down", "never-back", "no-release", or None
    detail: str = ""
    back: Remote | None = field(default=None, repr=False)  # the connection to the host as it came back

    def as_dict(self) -> dict[str, object]:
        return {"rebooted_at": round(self.rebooted_at, 3),
                "down_after": None if self.down_after is None else round(self.down_after, 1),
                "up_after": None if self.up_after is None else round(self.up_after, 1),
                "release": self.release, "problem": self.problem, "detail": self.detail}


def boot_id(remote: Remote, spec: InstallSpec) -> str | None:
    """The running kernel's boot id, or None when the host cannot say."""
    try:
        res = remote.run(list(spec.commands.boot_id), timeout=30, check=False)
    except KaError:
        return None
    text = res.output.strip()
    return text if res.ok and 0 < len(text) <= 100 else None


class _Watch:
    """The polls after the reboot command: down seen, then up on another boot."""

    def __init__(self, ssh: SshSettings, name: str, spec: InstallSpec, before: str | None, start: float) -> None:
        self.ssh, self.name, self.spec, self.before, self.start = ssh, name, spec, before, start
        self.down_at: float | None = None
        self.back: Remote | None = None

    def poll(self) -> bool:
        """True once the host answers on a new boot (``self.back`` is then its connection)."""
        try:
            remote = connect(self.ssh, self.name)
        except Unreachable:
            if self.down_at is None:
                self.down_at = time.monotonic()
            return False
        now = boot_id(remote, self.spec)
        new_boot = now != self.before if now is not None and self.before is not None else self.down_at is not None
        if new_boot:  # a glitch that hid the host for one poll is not a reboot: the boot id says so
            if self.down_at is None:  # rebooted between two polls
                self.down_at = time.monotonic()
            self.back = remote
            return True
        if now is not None and now == self.before:
            self.down_at = None  # the same boot after all: it has not gone down yet
        remote.close()
        return False


def reboot(remote: Remote, spec: InstallSpec, ssh: SshSettings, log: Log,
           release: Callable[[Remote], str], show: Log = lambda line: None) -> Beat:
    """Run the reboot command on ``remote`` (which it closes), then wait down and up; read the release."""
    argv = spec.root(*spec.commands.reboot)
    before = boot_id(remote, spec)
    wall, start = time.time(), time.monotonic()
    beat = Beat(rebooted_at=wall)
    try:
        done = remote.run(argv, timeout=60, check=False)
    except KaError:
        done = None  # the connection went with the host: that is what a reboot does
    finally:
        remote.close()
    if done is not None and done.code not in (0, -1):  # -1: the session ended under it, the host going down
        beat.problem = "reboot-failed"
        beat.detail = f"exit {done.code}: " + " | ".join(done.output.strip().splitlines()[-3:])
        return beat
    log(f"reboot command sent at {_clock(start, wall, start)}; waiting for ssh to go away "
        f"(up to {spec.down_timeout}s), then to come back (up to {spec.up_timeout}s)")
    watch = _Watch(ssh, remote.name, spec, before, start)
    said_down = False
    delay = POLL_START
    while not watch.poll():
        now = time.monotonic()
        if watch.down_at is None and now > start + spec.down_timeout:
            beat.problem = "did-not-go-down"
            return beat
        if watch.down_at is not None and not said_down:
            said_down, delay = True, POLL_START
            beat.down_after = watch.down_at - start
            said = f"down at {_clock(start, wall, watch.down_at)} (+{beat.down_after:.1f}s)"
            log(f"{said}; waiting for ssh to come back (up to {spec.up_timeout}s)")
            show(f"{said}; waiting for ssh")
        if watch.down_at is not None and now > watch.down_at + spec.up_timeout:
            beat.problem = "never-back"
            return beat
        time.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX)
    assert watch.back is not None and watch.down_at is not None
    beat.down_after = watch.down_at - start
    beat.up_after = time.monotonic() - start
    beat.back = watch.back
    try:
        beat.release = release(watch.back)
    except KaError as exc:
        beat.problem, beat.detail = "no-release", str(exc)
        return beat
    said = f"up at {_clock(start, wall, start + beat.up_after)} (+{beat.up_after:.1f}s), running {beat.release}"
    log(said)
    show(said)
    return beat


def _clock(start: float, wall: float, now: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall + (now - start)))
