"""Showing what a long verb is doing: on a terminal a live line (phase, elapsed time, last output
line) with rich; otherwise one line per phase on standard error, nothing that redraws."""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.live import Live
    from rich.text import Text


class Progress:
    """Phases and output lines of a verb; :meth:`close` when done."""

    def __init__(self, prog: str, stream: IO[str] | None = None, live: bool | None = None) -> None:
        self.prog = prog
        self.stream = stream or sys.stderr
        self.start = self.phase_start = time.monotonic()
        self.current = "starting"
        self.last = ""
        self._live: Live | None = None
        if live if live is not None else self.stream.isatty():
            # rich only for a terminal: its import is a third of ka-promote's start-up
            from rich.console import Console
            from rich.live import Live
            self._live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=4,
                              transient=True)
            self._live.start()

    def _render(self) -> Text:
        from rich.text import Text
        now = time.monotonic()
        text = Text()
        text.append(f"{self.prog}: ", style="bold")
        text.append(self.current, style="cyan")
        text.append(f"  {now - self.phase_start:5.1f}s (total {now - self.start:.0f}s)  ", style="dim")
        text.append(self.last[-120:])
        return text

    def phase(self, name: str) -> None:
        """A new phase begins."""
        self.current, self.phase_start, self.last = name, time.monotonic(), ""
        if self._live is not None:
            self._live.update(self._render())
        else:
            print(f"{self.prog}: {name}", file=self.stream, flush=True)

    def line(self, text: str) -> None:
        """A line of output of the current phase (shown live on a terminal only)."""
        self.last = text
        if self._live is not None:
            self._live.update(self._render())

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
