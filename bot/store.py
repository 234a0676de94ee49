"""Durable bot state in SQLite (WAL): deliveries, event keys, jobs and the forge outbox.

Every process (web workers, the job worker) opens its own connections; SQLite's
locking and WAL make them safe together.  The schema carries a version (b4's
``checks.get_db``) so later issues can migrate it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot import owner

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, event TEXT NOT NULL, action TEXT, repo TEXT, received_at REAL NOT NULL,
    outcome TEXT NOT NULL, reason TEXT, body BLOB);
CREATE TABLE IF NOT EXISTS event_keys (
    key TEXT PRIMARY KEY, job_id INTEGER, delivery_id TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, verb TEXT NOT NULL, host TEXT, commit_sha TEXT, ref TEXT,
    clone_url TEXT, requester TEXT, state TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL,
    finished_at REAL, hosts TEXT, result TEXT, error TEXT, owner TEXT);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_commit ON jobs(verb, commit_sha);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER, method TEXT NOT NULL, path TEXT NOT NULL,
    body TEXT NOT NULL, summary TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, created_at REAL NOT NULL, sent_at REAL, last_error TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_at);
"""

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL = ("succeeded", "failed", "cancelled", "interrupted")
#: verbs that change a host or its packages: never two at once for one host
EXCLUSIVE = ("build", "install")


@dataclass(frozen=True)
class Job:
    """One job record."""

    id: int
    verb: str
    host: str | None
    commit_sha: str | None
    ref: str | None
    clone_url: str | None
    requester: dict[str, Any]
    state: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    hosts: list[str]
    result: dict[str, Any]
    error: str | None
    owner: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        data["requester"] = json.loads(data["requester"] or "{}")
        data["hosts"] = json.loads(data["hosts"] or "[]")
        data["result"] = json.loads(data["result"] or "{}")
        return cls(**data)

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at


class Store:
    """The bot's SQLite database; one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = self._conn()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{path}: schema {version} is newer than this bot ({SCHEMA_VERSION})")
        db.executescript(SCHEMA)  # idempotent; executescript manages its own transaction
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a stored delivery survives a power cut, not only a crash
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (``BEGIN IMMEDIATE``) so concurrent writers queue cleanly."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        """Rows of a read-only statement."""
        return self._conn().execute(sql, args).fetchall()

    # --- jobs -------------------------------------------------------------------------------

    def job(self, job_id: int) -> Job | None:
        """One job, or None."""
        rows = self.query("SELECT * FROM jobs WHERE id = ?", job_id)
        return Job.from_row(rows[0]) if rows else None

    def jobs(self, limit: int = 100) -> list[Job]:
        """The newest jobs first."""
        return [Job.from_row(r) for r in self.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", limit)]

    def jobs_in(self, *states: str) -> list[Job]:
        """Jobs in any of ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        return [Job.from_row(r) for r in self.query(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id",  # noqa: S608
                                                     *states)]

    def claim(self, job_id: int) -> Job | None:
        """Move a queued job to running; None when it is not queued or its host is busy."""
        with self.tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ? AND state = 'queued'", (job_id,)).fetchone()
            if row is None:
                return None
            if row["verb"] in EXCLUSIVE and db.execute(
                    "SELECT 1 FROM jobs WHERE state = 'running' AND host = ? AND verb IN ('build', 'install')",
                    (row["host"],)).fetchone():
                return None
            db.execute("UPDATE jobs SET state = 'running', started_at = ?, owner = ? WHERE id = ?",
                       (time.time(), owner.me(thread=False), job_id))
        return self.job(job_id)

    def set_hosts(self, job_id: int, hosts: list[str]) -> None:
        """Record which hosts a fleet-wide job covers."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET hosts = ? WHERE id = ?", (json.dumps(hosts), job_id))

    def set_result(self, job_id: int, result: dict[str, Any]) -> None:
        """Store the (partial or final) result of a job."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET result = ? WHERE id = ?", (json.dumps(result, sort_keys=True), job_id))

    def finish(self, job_id: int, state: str, error: str | None = None) -> None:
        """End a running job."""
        assert state in FINAL
        with self.tx() as db:
            db.execute("UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE id = ? AND state = 'running'",
                       (state, time.time(), error, job_id))

    def interrupt_running(self) -> list[Job]:
        """Mark jobs whose worker process is gone as interrupted; return them.

        Jobs of a worker that still runs (another process of a split deployment) are left alone.
        """
        with self.tx() as db:
            rows = [r for r in db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
                    if not owner.alive(r["owner"])]
            for r in rows:
                db.execute("UPDATE jobs SET state = 'interrupted', finished_at = ?, "
                           "error = 'interrupted: the bot stopped while this job ran' WHERE id = ?",
                           (time.time(), r["id"]))
        return [Job.from_row(r) for r in rows]
