"""A stop asked for by a signal (Ctrl-C, SIGTERM), honoured where stopping is safe.

An exception raised at any bytecode can land inside the ssh library holding its locks, or between a
remote command and the record of what it did.  While :func:`deferred` is in force a signal only says
"stop": the work calls :func:`check` at its safe points (between steps, between the commands of a
step, in its waits), and a long wait that must not be cut short (a package transaction) asks
:func:`asked` how often it was told.  A third signal stops at once, for a wait that hangs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HARD = 3  # the signal that stops at once, whatever runs

_told: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _told.append(signum)
    if len(_told) == HARD:  # once: later ones must not cut the clean-up short that this one starts
        raise KeyboardInterrupt(f"signal {signum}, {len(_told)} times")


@contextlib.contextmanager
def deferred(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Within the block, ``signals`` ask for a stop instead of raising (only in the main thread, where
    Python runs signal handlers; elsewhere the block changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _note) for s in signals}
    _told.clear()
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        _told.clear()


def asked() -> int:
    """How many stop signals came (0: none)."""
    return len(_told)


def name() -> str:
    """The first stop signal's name (``SIGINT``), for messages."""
    return signal.Signals(_told[0]).name if _told else "interrupt"


def check() -> None:
    """Stop here when a signal asked for it (as Ctrl-C would: :class:`KeyboardInterrupt`)."""
    if _told:
        raise KeyboardInterrupt(name())
