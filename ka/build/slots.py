"""Build slots: how many builds a build host runs at once (``max_builds`` in ``fleet/infra.yaml``, default 1).

A slot is ``flock`` on ``<workdir>/.ka-slots/<n>``, held on the build host by ``flock --nonblock --verbose
<file> cat`` for as long as the build's ssh connection lasts: once flock has the lock, ``cat`` runs and sends
back a line sent to it (flock's own "executing" line waits in its buffer until it exits); then ``cat`` waits
on its standard input, which ends when the build releases the slot, or when ka-build dies and the
connection drops.  So a crash never leaves a slot taken, and every ka-build on any machine
(a maintainer's terminal, the bot) counts against the same slots.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ka.errors import EXIT_ENVIRONMENT, KaError
from ka.fleet.infra import BuildHost
from ka.io.ssh import Completed, Held, Remote

SLOTS = ".ka-slots"  # in the build host's workdir
_ECHO = "ka-build slot"  # sent to cat under flock: back once the lock is taken
_BUSY = "failed to get lock"  # flock --verbose --nonblock, when another holds it


class SlotError(KaError):
    """flock could not be run on the build host (not installed, no room to make the slot folder)."""

    exit_code = EXIT_ENVIRONMENT


@dataclass
class Slot:
    """One of a build host's slots, held until :meth:`release`."""

    number: int
    held: Held

    def release(self) -> None:
        """Give the slot back (the build is over, or failed)."""
        self.held.close()


def take(remote: Remote, bh: BuildHost) -> Slot | None:
    """A free slot of ``bh`` (the lowest), or None when its ``max_builds`` builds are running."""
    folder = posixpath.join(bh.workdir, SLOTS)
    remote.run(["mkdir", "-p", "--", folder], timeout=60)
    for number in range(bh.max_builds):
        got = remote.hold(["flock", "--nonblock", "--verbose", posixpath.join(folder, str(number)), "cat"], _ECHO)
        if isinstance(got, Held):
            return Slot(number, got)
        if not _busy(got):
            raise SlotError(f"{bh.ssh}: cannot take a build slot with flock (util-linux) in {folder}: "
                            f"{got.output.strip()[-300:] or f'exit {got.code}'}")
    return None


def _busy(done: Completed) -> bool:
    return done.code == 1 and _BUSY in done.output
