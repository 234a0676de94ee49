"""Looking into the bot's database from a test: a connection of its own, as a person with sqlite3 would.

The bot itself reaches its tables only through bot/store.py's named statements; tests read the
rows behind them directly, to check what those statements wrote.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from bot.store import Store


def sql(store: Store, statement: str, *args: Any) -> list[sqlite3.Row]:
    """The rows of ``statement`` on ``store``'s database."""
    conn = sqlite3.connect(store.path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(statement, args).fetchall()
    finally:
        conn.close()
