"""Showing a verb run over many hosts at once: on a terminal a live table, a row a host (rich); otherwise a
line on standard error each time a host changes phase."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, Protocol

from ka.cli.report import rich_table

if TYPE_CHECKING:
    from rich.live import Live
    from rich.table import Table

HEAD = ["HOST", "STATE", "WHERE", "TIME", "LAST LINE"]


class Row(Protocol):
    """What a host's row shows (ka.build.many.HostBuild is one)."""

    host: str
    state: str
    last: str

    @property
    def build_host(self) -> str: ...

    def seconds(self, now: float) -> float: ...


class LiveHosts:
    """The hosts' rows while they run; :meth:`changed` when one moves, :meth:`close` when all are done."""

    def __init__(self, prog: str, rows: Sequence[Row], stream: IO[str] | None = None,
                 live: bool | None = None) -> None:
        self.prog, self.rows = prog, rows
        self.stream = stream or sys.stderr
        self._live: Live | None = None
        if live if live is not None else self.stream.isatty():
            from rich.console import Console  # rich only for a terminal (ka-promote's start-up)
            from rich.live import Live
            self._live = Live(self._table(), console=Console(file=self.stream), refresh_per_second=4,
                              get_renderable=self._table)
            self._live.start()

    def _table(self) -> Table:
        now = time.monotonic()
        return rich_table(HEAD, [[r.host, r.state, r.build_host, f"{r.seconds(now):.0f}s", r.last[-80:]]
                                 for r in self.rows])

    def changed(self, row: Row) -> None:
        """A host's state changed: on a terminal the table redraws by itself; otherwise the new state is a line."""
        if self._live is not None:
            return
        where = f" on {row.build_host}" if row.build_host else ""
        print(f"{self.prog}: {row.host}: {row.state}{where}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> LiveHosts:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

