"""One verb run over many hosts at once (ka/build/many.py, ka/install/waves.py): a row a host, changed from
the hosts' threads one change at a time, and the exit code of them all."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ka.errors import EXIT_OK

WAITING = "waiting"


@dataclass
class HostRun:
    """One host's run among many: where it stands, since when, and how it ended."""

    host: str
    state: str = WAITING  # waiting, a phase's name while it runs, then how it ended
    started: float | None = None
    ended: float | None = None
    last: str = ""  # its last log line
    error: str = ""
    exit_code: int = EXIT_OK

    def seconds(self, now: float) -> float:
        """How long it has run (or ran)."""
        return 0.0 if self.started is None else (self.ended or now) - self.started


class Notes:
    """Changes to the rows from the hosts' threads, one at a time; ``changed(row)`` when a row's state changes
    (a new output line is no change: a terminal's table redraws by itself)."""

    def __init__(self, changed: Callable[[Any], None]) -> None:
        self.changed = changed
        self._lock = threading.Lock()

    def __call__(self, row: HostRun, **what: Any) -> None:
        with self._lock:
            for key, value in what.items():
                setattr(row, key, value)
            if "state" in what:
                self.changed(row)


def worst(rows: list[Any]) -> int:
    """The exit code of many hosts' runs: the worst of theirs (0 when every one succeeded)."""
    return max((r.exit_code for r in rows), default=EXIT_OK)
