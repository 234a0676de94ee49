"""The live fleet table as text cells: the terminal (ka/cli/report.py) and the bot's Markdown share them.

Apart from ka/status/live.py so that printing a table never loads ssh.
"""

from __future__ import annotations

from typing import Any

LIVE_HEAD = ["HOST", "UP", "RUNNING", "INSTALLED", "NEWEST BUILT", "MANIFEST", "MATCHES", "LAST INSTALL", "PROBLEM"]


def live_cells(r: Any) -> list[str]:
    """A live row as text cells (the terminal and the bot's Markdown share them)."""
    up = "yes" if r.reachable else ("no" if r.reachable is False else "-")
    mark = "" if r.is_newest is None else (" (installed)" if r.is_newest else " (not installed)")
    newest = (r.newest or "-") + mark
    last = f"{r.last_install} {r.last_install_at or ''}".strip() if r.last_install else "-"
    # why the host could not be asked: a column of its own, last, where a long message does not push the others
    return [r.host, up, r.running or "-", r.installed or "-", newest, r.manifest or "-", r.matches or "-", last,
            r.error or "-"]
