"""A package transaction on the host, detached from the ssh channel, and waited for.

``pacman -U`` (or ``apt-get``) killed half-way leaves a host with neither kernel complete: files of
the old package removed, the new one's not all in place.  A channel that closes (Ctrl-C of
ka-install, a dropped connection) would do exactly that to a command run in it.  So the
transaction runs under ``setsid -f`` with its output in a file, and ka-install polls for its end:

- an interrupt (Ctrl-C, SIGTERM) waits for the transaction to end, then stops the install; a second
  one leaves it running on its own and says so;
- a dropped connection is reconnected and waited on; the install then stops (it does not go on
  after losing the host once);
- when the transaction ends, whatever way, the script on the host puts the running kernel's
  modules (set aside before it, as a hard-linked copy) back in place: the way back never depends
  on ka-install being there to do it.
"""

from __future__ import annotations

import time

from ka.install.installer import Installer, InstallError
from ka.io import stopping
from ka.io.ssh import RemoteFailed, SshError, Unreachable, connect

#: runs detached: ``$1`` its folder, ``$2`` a copy set aside (or ""), ``$3`` where the copy goes back; then
#: the command.  The copy always replaces what the command left in its place: it is the complete one.
SCRIPT = r"""exec </dev/null >/dev/null 2>&1
dir=$1 aside=$2 place=$3; shift 3
echo $$ >"$dir/pid"
"$@" >"$dir/out" 2>&1
code=$?
if [ -n "$aside" ] && [ -e "$aside" ]; then
  rm -rf -- "$place" && mv -T -- "$aside" "$place"
fi
sync
echo "$code" >"$dir/rc.new" && mv -f -- "$dir/rc.new" "$dir/rc"
"""
#: the end (its exit code; "running"; "starting" before it wrote its pid; "gone" when its process is gone
#: without an exit code, killed), then the output from byte ``$2`` on; rc is read again after the pid, so
#: that an end between the two looks is not taken for a death
POLL = r"""cat -- "$1/rc" 2>/dev/null || {
  pid=$(cat -- "$1/pid" 2>/dev/null)
  if [ -z "$pid" ]; then echo starting
  elif [ -d "/proc/$pid" ]; then echo running
  else cat -- "$1/rc" 2>/dev/null || echo gone; fi
}
tail -c "+$2" -- "$1/out" 2>/dev/null; exit 0"""
STARTING_FOR = 60.0  # seconds a transaction may take to write its pid before it counts as never started
DEADLINE = 4 * 3600.0  # a package manager still running after this is not waited for any longer
POLL_EVERY = 0.5
RECONNECT_FOR = 60.0
OUTPUT_LIMIT = 8 << 20


def check_detachable(session: Installer) -> None:
    """The host can start a transaction detached (``setsid``, util-linux): checked before anything changes."""
    if not session.device.remote.run(["sh", "-c", "command -v setsid"], timeout=60, check=False).ok:
        raise InstallError(f"{session.host}: has no setsid (util-linux), which ka-install starts the package manager "
                           "with, detached from the connection; install util-linux; refused, nothing was changed")


class Transaction:
    """One detached command of an install session, in a fresh folder of the ssh user's on the host (its
    output and exit code are never taken for another's)."""

    def __init__(self, session: Installer, name: str) -> None:
        self.s, self.name = session, name
        self.folder = ""
        self.output = b""
        self.dropped = False
        self.ended = False  # its exit code was read, or its process is known to be gone
        self.started = 0.0

    @staticmethod
    def argv(folder: str, aside: str, place: str, command: list[str]) -> list[str]:
        """The command line that starts it (to run as root): it returns at once."""
        return ["setsid", "-f", "sh", "-c", SCRIPT, "ka-transaction", folder, aside, place, *command]

    @staticmethod
    def argv_shown(aside: str, place: str, command: list[str]) -> list[str]:
        """The same, for ``--dry-run`` (the script and its folder left out)."""
        return ["setsid", "-f", "sh", "-c", "<detached: run, then put the set-aside copy back>", "ka-transaction",
                "<tmp>/<folder>", aside, place, *command]

    def run(self, command: list[str], aside: str = "", place: str = "") -> tuple[int, str]:
        """Start ``command`` as root, detached; wait for its end; (exit code, output).  ``aside`` (a copy set
        aside) goes back to ``place`` when it ends."""
        device = self.s.device
        self.folder = device.remote.run(["mktemp", "-d", "-p", device.tmp(), f"{self.name}.XXXXXX"],
                                        timeout=60).output.strip()
        self.s.got.transaction = self.folder
        self.ended = False
        try:
            device.remote.run(self.s.spec.root(*self.argv(self.folder, aside, place, command)), timeout=120)
            code = self._wait()
        finally:
            if self.ended:
                self.s.got.transaction = None
        text = self.output.decode("utf-8", "replace")
        if self.dropped:
            raise Unreachable(f"{self.s.host}: the connection dropped while the package manager ran; it went on "
                              f"on the host and ended with exit {code}; the install stops here")
        return code, text

    def _wait(self) -> int:
        """Poll until it ends.  A first stop signal waits for the end (then stops); a second leaves it running
        on its own (see ka/io/stopping.py; without deferred signals, each Ctrl-C counts)."""
        raw, said = 0, False
        self.started = time.monotonic()
        while True:
            try:
                code = self._poll()
                if code is not None:
                    break
                time.sleep(POLL_EVERY)
            except KeyboardInterrupt:
                raw += 1
            told = stopping.asked() + raw
            if told >= 2:
                raise KeyboardInterrupt(stopping.name())
            if told and not said:
                said = self._waiting()
        if stopping.asked() + raw:
            raise KeyboardInterrupt(stopping.name())
        return code

    def _waiting(self) -> bool:
        self.s.show(f"interrupted: the package manager is changing {self.s.host} and is not stopped half-way; "
                    "waiting for it to end (interrupt again to leave it running on its own)")
        return True

    def _poll(self) -> int | None:
        """One look: the output so far, and the exit code once it ended; reconnects a dropped connection."""
        try:
            got = self.s.device.remote.output(["sh", "-c", POLL, "ka-poll", self.folder, str(len(self.output) + 1)],
                                              timeout=60, limit=OUTPUT_LIMIT)
        except SshError as exc:
            if not (isinstance(exc, Unreachable) or not self.s.device.remote.alive()
                    or (isinstance(exc, RemoteFailed) and exc.code in (-1, 124))):
                raise
            self._reconnect()
            return None
        head, _, new = got.partition(b"\n")
        done = new.rfind(b"\n") + 1
        if done:  # complete lines only: an unfinished one waits for its end
            for line in (self.output[self.output.rfind(b"\n") + 1:] + new[:done]).splitlines():
                self.s.log(line.decode("utf-8", "replace"))
        self.output += new
        status = head.decode("ascii", "replace").strip()
        if not status.lstrip("-").isdigit():
            self._still_there(status)
            return None
        self.ended = True
        if not self.output.endswith(b"\n") and self.output:
            self.s.log(self.output[self.output.rfind(b"\n") + 1:].decode("utf-8", "replace"))
        return int(status)

    def _still_there(self, status: str) -> None:
        """A transaction whose process is gone without an exit code (killed), that never started, or that runs
        past the deadline is not waited for."""
        waited = time.monotonic() - self.started
        if status == "gone" or (status == "starting" and waited > STARTING_FOR):
            self.ended = True  # nothing runs there any more
            raise InstallError(f"{self.s.host}: the package manager's process ended without an exit code (killed?) "
                               f"or never started; its output: {self.folder}/out")
        if waited > DEADLINE:
            raise InstallError(f"{self.s.host}: the package manager still runs after {DEADLINE / 3600:.0f} h; it "
                               f"goes on by itself (its output: {self.folder}/out)")

    def _reconnect(self) -> None:
        """The connection is gone: the transaction is not.  Connect again (the host did not reboot)."""
        self.dropped = True
        self.s.log(f"the connection to {self.s.host} dropped while the package manager ran; reconnecting to wait "
                   "for it")
        give_up = time.monotonic() + RECONNECT_FOR
        while True:
            try:
                self.s.device.reconnected(connect(self.s.opts.ssh, self.s.spec.ssh), keep_tmp=True)
                return
            except Unreachable:
                if time.monotonic() > give_up:
                    raise
                time.sleep(2)

