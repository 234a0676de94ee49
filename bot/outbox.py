"""Every write to the forge goes through a persisted outbox, so none is lost when Forgejo is down.

Writes are sent strictly in the order they were made (a ``pending`` status must never land
after its ``success``); a transient failure stops the flush and retries it with backoff, a
permanent one is logged with the forge's message and skipped.  A lease in the database keeps
two flushers (threads or processes) from sending the same row twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from bot.forge import Forge, Permanent, Transient, Write
from bot.store import Store

log = logging.getLogger(__name__)
BACKOFF_MAX = 60.0
LEASE_SECONDS = 60.0

_LEASES = """CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL)"""


def backoff(attempts: int) -> float:
    """Seconds before retry number ``attempts``: 1, 2, 4, … capped at a minute."""
    return min(BACKOFF_MAX, 2.0 ** max(0, attempts - 1))


def add(store: Store, job_id: int | None, write: Write) -> int:
    """Queue a write; returns its outbox id."""
    now = time.time()
    with store.tx() as db:
        cur = db.execute("INSERT INTO outbox (job_id, method, path, body, summary, state, next_at, created_at) "
                         "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                         (job_id, write.method, write.path, json.dumps(write.body), write.summary, now, now))
        return int(cur.lastrowid or 0)


def backlog(store: Store) -> int:
    """How many writes wait to be sent."""
    return int(store.query("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0])


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _alive(holder: str) -> bool:
    """False when the holder was a process on this machine that no longer exists (killed mid-flush)."""
    host, pid, _ = holder.split(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lease(store: Store, holder: str, take: bool) -> bool:
    now = time.time()
    with store.tx() as db:
        db.execute(_LEASES)
        row = db.execute("SELECT holder, until FROM leases WHERE name = 'outbox'").fetchone()
        if take:
            if row and row["holder"] != holder and row["until"] > now and _alive(row["holder"]):
                return False
            db.execute("INSERT OR REPLACE INTO leases VALUES ('outbox', ?, ?)", (holder, now + LEASE_SECONDS))
        elif row and row["holder"] == holder:
            db.execute("DELETE FROM leases WHERE name = 'outbox'")
    return True


def _due(store: Store) -> bool:
    return bool(store.query("SELECT 1 FROM outbox WHERE state = 'pending' AND next_at <= ? LIMIT 1", time.time()))


def flush(store: Store, forge: Forge) -> float | None:
    """Send due writes in order; return seconds until the next try, or None when nothing is due.

    When another flusher holds the lease this returns None at once: the holder looks for due
    writes again after it lets the lease go, so a write added meanwhile is not left behind.
    """
    holder = _holder()
    while True:
        if not _lease(store, holder, take=True):
            return None
        try:
            delay = _send_all(store, forge)
        finally:
            _lease(store, holder, take=False)
        if delay is not None or not _due(store):
            return delay


def _send_all(store: Store, forge: Forge) -> float | None:
    while True:
        rows = store.query("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 50")
        if not rows:
            return None
        for row in rows:
            wait = row["next_at"] - time.time()
            if wait > 0:
                return wait
            delay = _send_one(store, forge, row)
            if delay is not None:
                return delay


def _send_one(store: Store, forge: Forge, row: object) -> float | None:
    write = Write(row["method"], row["path"], json.loads(row["body"]), row["summary"])  # type: ignore[index]
    oid = row["id"]  # type: ignore[index]
    try:
        answer = forge.send(write)
    except Transient as exc:
        attempts = row["attempts"] + 1  # type: ignore[index]
        delay = backoff(attempts)
        with store.tx() as db:
            db.execute("UPDATE outbox SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
                       (attempts, time.time() + delay, str(exc), oid))
        log.warning("outbox %s: %s; retry %d in %.0fs", oid, exc, attempts, delay)
        return delay
    except Permanent as exc:
        with store.tx() as db:
            db.execute("UPDATE outbox SET state = 'failed', last_error = ?, attempts = attempts + 1 WHERE id = ?",
                       (str(exc), oid))
        log.error("outbox %s: the forge refused %s: %s", oid, write.summary, exc)
        return None
    state = "recorded" if answer.get("recorded") else "sent"  # local mode only records
    with store.tx() as db:
        db.execute("UPDATE outbox SET state = ?, sent_at = ?, attempts = attempts + 1 WHERE id = ?",
                   (state, time.time(), oid))
    return None
