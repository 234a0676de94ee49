"""The job table: claims, exclusivity per host, interrupted jobs."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def test_a_queue_in_use_is_not_taken_for_a_damaged_one(tmp_path: Path) -> None:
    from bot.services import _set_aside_if_damaged

    queue = tmp_path / "queue.db"
    holder = sqlite3.connect(queue, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # the previous worker, still writing
    try:
        _set_aside_if_damaged(queue)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert queue.exists() and not list(tmp_path.glob("queue.db.damaged-*"))
    queue.write_bytes(b"garbage" * 1000)
    _set_aside_if_damaged(queue)
    assert not queue.exists() and list(tmp_path.glob("queue.db.damaged-*"))
