"""Every write to the forge goes through a persisted outbox, so none is lost when Forgejo is down.

Writes are sent strictly in the order they were made (a ``pending`` status must never land
after its ``success``); a transient failure stops the flush and retries it with backoff, a
permanent one is logged with the forge's message and skipped.  A lease in the database keeps
two flushers (threads or processes) from sending the same row twice.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import Any, Protocol

from bot import owner, public
from bot.forge.client import Forge, ForgeError, Permanent, Write
from bot.store import Store, insert_writes, lease_of, retry_write, set_lease, settle_write

log = logging.getLogger(__name__)
BACKOFF_MAX = 60.0
LEASE_SECONDS = 60.0
#: methods of rows composed at send time by a :class:`Dynamic`
DYNAMIC = ("SUMMARY",)



def backoff(attempts: int) -> float:
    """Seconds before retry number ``attempts``: 1, 2, 4, … capped at a minute."""
    return min(BACKOFF_MAX, 2.0 ** max(0, attempts - 1))


def add(store: Store, job_id: int | None, write: Write) -> None:
    """Queue a write (in its own transaction; :func:`bot.store.insert_writes` joins the caller's)."""
    with store.tx() as db:
        insert_writes(db, job_id, [write])


def _lease(store: Store, holder: str, take: bool) -> bool:
    """Take (or renew) the outbox lease for ``holder``, or let it go; False when someone else holds it."""
    now = time.time()
    with store.tx() as db:
        held = lease_of(db, "outbox")
        if take:
            if held and held[0] != holder and held[1] > now and owner.alive(held[0]):
                return False
            set_lease(db, "outbox", holder, now + LEASE_SECONDS)
        elif held and held[0] == holder:
            set_lease(db, "outbox", None)
    return True


def _due(store: Store) -> bool:
    return store.write_due(time.time())


class Dynamic(Protocol):
    """Rows whose write is made when they are sent (a pull request's summary comment)."""

    def compose(self, row: sqlite3.Row) -> Write:
        """The write to send for ``row``, from the state as it is now."""

    def sent(self, row: sqlite3.Row, write: Write, answer: dict[str, Any]) -> None:
        """The write landed."""

    def refused(self, row: sqlite3.Row, write: Write, exc: ForgeError) -> None:
        """The forge refused the write for good."""


def flush(store: Store, forge: Forge, dynamic: Dynamic | None = None) -> float | None:
    """Send due writes in order; return seconds until the next try, or None when nothing is due.

    When another flusher holds the lease this returns None at once: the holder looks for due
    writes again after it lets the lease go, so a write added meanwhile is not left behind.
    """
    holder = owner.me()
    while True:
        if not _lease(store, holder, take=True):
            return None
        try:
            delay = _send_all(store, forge, holder, dynamic)
        finally:
            _lease(store, holder, take=False)
        if delay is not None or not _due(store):
            return delay


def _send_all(store: Store, forge: Forge, holder: str, dynamic: Dynamic | None) -> float | None:
    while True:
        rows = store.pending_writes()
        if not rows:
            return None
        for row in rows:
            wait = row["next_at"] - time.time()
            if wait > 0:
                return wait
            if not _lease(store, holder, take=True):  # renewed before every send; lost → stop at once
                return None
            delay = _send_one(store, forge, row, dynamic)
            if delay is not None:
                return delay


def _send_one(store: Store, forge: Forge, row: sqlite3.Row, dynamic: Dynamic | None) -> float | None:
    """Send one row; the delay before a retry when it could not land, else None."""
    oid = row["id"]
    write = Write(row["method"], row["path"], json.loads(row["body"]), row["summary"])
    dynamic_row = row["method"] in DYNAMIC
    if dynamic_row and (dynamic is None or _superseded(store, row)):
        _settle(store, oid, "merged")  # a later row of the same kind renders the newer state
        return None
    try:
        if dynamic is not None and dynamic_row:
            write = _composed(dynamic, row)
        answer = forge.send(write)
    except Unmakeable as exc:  # a bug in composing must not block every write behind it
        _settle(store, oid, "failed", str(exc))
        log.error("outbox %s: cannot compose %s: %s", oid, write.summary, exc)
        return None
    except Permanent as exc:
        _settle(store, oid, "failed", str(exc))
        log.error("outbox %s: the forge refused %s: %s", oid, write.summary, exc)
        if dynamic is not None and dynamic_row:
            dynamic.refused(row, write, exc)
        return None
    except Exception as exc:  # Transient, or anything unexpected: keep the row and its place in line
        attempts = row["attempts"] + 1
        delay = backoff(attempts)
        with store.tx() as db:
            # the job page shows it: the public reason; the log has the exception as it was
            retry_write(db, oid, attempts, time.time() + delay, public.reason(exc)[:500])
        log.warning("outbox %s: %s: %s; retry %d in %.0fs", oid, type(exc).__name__, exc, attempts, delay)
        return delay
    if dynamic is not None and dynamic_row:
        dynamic.sent(row, write, answer)
    _settle(store, oid, "recorded" if answer.get("recorded") else "sent")  # local mode only records
    return None


class Unmakeable(Exception):
    """A dynamic row could not be composed for a reason retrying will not fix."""


def _composed(dynamic: Dynamic, row: sqlite3.Row) -> Write:
    try:
        return dynamic.compose(row)
    except ForgeError:
        raise  # the forge was asked something (a thread's comments): retry or refuse as for a send
    except Exception as exc:
        log.exception("composing outbox row %s", row["id"])
        raise Unmakeable(public.reason(exc)) from None


def _superseded(store: Store, row: sqlite3.Row) -> bool:
    return store.superseded(row)


def _settle(store: Store, oid: int, state: str, error: str | None = None) -> None:
    with store.tx() as db:
        settle_write(db, oid, state, error)
