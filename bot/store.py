"""Durable bot state in SQLite (WAL): deliveries, event keys, jobs, per-host results and the forge outbox.

Every process (web workers, the job worker) opens its own connections; SQLite's
locking and WAL make them safe together.  The schema carries a version (b4's
``checks.get_db``) and is migrated forward on open; a newer or damaged database
is refused with a message that says what to do.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot import owner
from bot.forge.client import Write
from ka.errors import EXIT_ENVIRONMENT, KaError
from ka.text import cap, encodable

SCHEMA_VERSION = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, event TEXT NOT NULL, action TEXT, repo TEXT, received_at REAL NOT NULL,
    outcome TEXT NOT NULL, reason TEXT, body BLOB);
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries(received_at);
CREATE INDEX IF NOT EXISTS deliveries_with_body ON deliveries(received_at) WHERE body IS NOT NULL;
CREATE TABLE IF NOT EXISTS event_keys (
    key TEXT PRIMARY KEY, job_id INTEGER, delivery_id TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, verb TEXT NOT NULL, host TEXT, commit_sha TEXT, ref TEXT,
    clone_url TEXT, requester TEXT, state TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL,
    finished_at REAL, hosts TEXT, result TEXT, error TEXT, owner TEXT, host_count INTEGER NOT NULL DEFAULT 0,
    args TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_commit ON jobs(verb, commit_sha);
CREATE TABLE IF NOT EXISTS job_hosts (
    job_id INTEGER NOT NULL, host TEXT NOT NULL, state TEXT NOT NULL, description TEXT, detail TEXT,
    updated_at REAL NOT NULL, PRIMARY KEY (job_id, host));
CREATE INDEX IF NOT EXISTS job_hosts_state ON job_hosts(job_id, state);
CREATE INDEX IF NOT EXISTS job_hosts_host ON job_hosts(host, job_id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER, method TEXT NOT NULL, path TEXT NOT NULL,
    body TEXT NOT NULL, summary TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, created_at REAL NOT NULL, sent_at REAL, last_error TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_at);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pr_heads (
    number INTEGER NOT NULL, sha TEXT NOT NULL, job_id INTEGER, at REAL NOT NULL, PRIMARY KEY (number, sha));
CREATE TABLE IF NOT EXISTS pr_summaries (number INTEGER PRIMARY KEY, comment_id INTEGER);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT, event TEXT NOT NULL, verb TEXT,
    command TEXT, hosts TEXT, place TEXT, number INTEGER, url TEXT, commit_sha TEXT, result TEXT, job_id INTEGER);
CREATE INDEX IF NOT EXISTS audit_job ON audit(job_id);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL = ("succeeded", "failed", "cancelled", "interrupted")
#: verbs that change a host or its packages: never two at once for one host
EXCLUSIVE = ("build", "install", "rollback")
#: what one host's result may occupy: a fork's pull request must not be able to grow the database
DETAIL_MAX = 16 * 1024
DESCRIPTION_MAX = 500
_FIELD_MAX = 4000


def _wal(conn: sqlite3.Connection, wait: float = 30.0) -> None:
    """Switch to WAL; the first switch needs the database alone, and SQLite answers "locked" at
    once (without its busy handler) while another process opens it too: wait for a turn."""
    deadline = time.monotonic() + wait
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class StateError(KaError):
    """The state folder or database cannot be used; the message says how to fix it."""

    exit_code = EXIT_ENVIRONMENT


@dataclass(frozen=True)
class Job:
    """One job record (per-host results live in ``job_hosts``: see :meth:`Store.host_results`)."""

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
    result: dict[str, Any]
    error: str | None
    owner: str | None = None
    host_count: int = 0
    args: dict[str, Any] = field(default_factory=dict)
    cancel_requested: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = {k: row[k] for k in row.keys() if k != "hosts"}  # noqa: SIM118 - sqlite3.Row is not a dict
        data["requester"] = json.loads(data["requester"] or "{}")
        data["result"] = json.loads(data["result"] or "{}")
        data["args"] = json.loads(data.get("args") or "{}")
        return cls(**data)

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at


@dataclass(frozen=True)
class HostResult:
    """One host's outcome in a fleet-wide job."""

    host: str
    state: str
    description: str
    detail: dict[str, Any]


def capped_detail(detail: dict[str, Any]) -> str:
    """``detail`` as JSON of at most :data:`DETAIL_MAX` bytes: long texts cut, else only the summary kept.

    Texts are made encodable too: a file name that is not UTF-8 must not make a page fail later.
    """
    trimmed = _trim(detail)
    text = json.dumps(trimmed, sort_keys=True, default=str)
    if len(text) <= DETAIL_MAX:
        return text
    keep = {k: v for k, v in trimmed.items() if isinstance(v, int | float | bool) or v is None}
    return json.dumps({**keep, "truncated": True}, sort_keys=True)


def _trim(value: Any) -> Any:
    if isinstance(value, str):
        return encodable(cap(value, _FIELD_MAX))
    if isinstance(value, dict):
        return {encodable(cap(str(k), 100)): _trim(v) for k, v in list(value.items())[:100]}
    if isinstance(value, list):
        return [_trim(v) for v in value[:100]]
    return value


def new_job(db: sqlite3.Connection, verb: str, commit: str | None, ref: str | None, clone_url: str | None,
            requester: dict[str, Any], host: str | None = None, args: dict[str, Any] | None = None) -> int:
    """Insert a queued job inside the caller's transaction; its id."""
    cur = db.execute("INSERT INTO jobs (verb, host, commit_sha, ref, clone_url, requester, state, created_at, args) "
                     "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                     (verb, host, commit, ref, clone_url, json.dumps(requester), time.time(),
                      json.dumps(args or {})))
    return int(cur.lastrowid or 0)


AUDIT_FIELDS = ("who", "event", "verb", "command", "hosts", "place", "number", "url", "commit_sha", "result",
                "job_id")


def insert_audit(db: sqlite3.Connection, **entry: Any) -> None:
    """Append to the audit log (append-only: triggers refuse updates and deletes)."""
    unknown = set(entry) - set(AUDIT_FIELDS)
    assert not unknown, unknown
    hosts = entry.get("hosts")
    entry["hosts"] = " ".join(hosts) if isinstance(hosts, list | tuple) else hosts
    entry["result"] = encodable(cap(str(entry.get("result") or ""), 1000))
    db.execute(f"INSERT INTO audit (at, {', '.join(AUDIT_FIELDS)}) VALUES (?{', ?' * len(AUDIT_FIELDS)})",  # noqa: S608
               (time.time(), *(entry.get(f) for f in AUDIT_FIELDS)))


def insert_writes(db: sqlite3.Connection, job_id: int | None, writes: list[Write]) -> None:
    """Queue forge writes inside the caller's transaction (see :mod:`bot.forge.outbox`)."""
    now = time.time()
    db.executemany("INSERT INTO outbox (job_id, method, path, body, summary, state, next_at, created_at) "
                   "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                   [(job_id, w.method, encodable(w.path), json.dumps(w.body), encodable(w.summary), now, now)
                    for w in writes])


# --- statements that join a caller's transaction (intake, endings, the outbox) ----------------

def delivery_seen(db: sqlite3.Connection, delivery_id: str) -> bool:
    """Whether a delivery with this id was stored before."""
    return db.execute("SELECT 1 FROM deliveries WHERE id = ?", (delivery_id,)).fetchone() is not None


def insert_delivery(db: sqlite3.Connection, delivery_id: str, event: str, action: str | None, repo: str | None,
                    outcome: str, reason: str, body: bytes) -> bool:
    """Store a delivery once; False when its id was there already."""
    cur = db.execute("INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (delivery_id, event, action, repo, time.time(), outcome, reason, body))
    return cur.rowcount == 1


#: a job that gave its answer: it is queued, running or succeeded, or it failed because its hosts failed (its
#: result counts their states); not one that crashed, was cancelled or interrupted: that one runs again
ANSWERS = ("(j.state IN ('queued', 'running', 'succeeded') OR (j.state = 'failed' "
           "AND json_extract(COALESCE(j.result, '{}'), '$.states') IS NOT NULL))")


def event_key_job(db: sqlite3.Connection, key: str) -> tuple[int, bool] | None:
    """The job an event key points at, and whether that job answers the event (:data:`ANSWERS`)."""
    row = db.execute(f"SELECT k.job_id, {ANSWERS} FROM event_keys k LEFT JOIN jobs j ON j.id = k.job_id "  # noqa: S608
                     "WHERE k.key = ?", (key,)).fetchone()
    return (int(row[0]), bool(row[1])) if row else None


def set_event_key(db: sqlite3.Connection, key: str, job_id: int, delivery_id: str) -> None:
    """Point an event key at a job (a key whose job failed points at the new one)."""
    db.execute("INSERT OR REPLACE INTO event_keys VALUES (?, ?, ?, ?)", (key, job_id, delivery_id, time.time()))


def fleet_parity_job(db: sqlite3.Connection, sha: str) -> int | None:
    """The newest fleet-wide parity job of ``sha`` that answers it (:data:`ANSWERS`)."""
    row = db.execute(f"SELECT id FROM jobs j WHERE verb = 'parity' AND commit_sha = ? AND {ANSWERS} "  # noqa: S608
                     "AND json_extract(COALESCE(args, '{}'), '$.hosts') IS NULL ORDER BY id DESC LIMIT 1",
                     (sha,)).fetchone()
    return int(row[0]) if row else None


def set_pr_head(db: sqlite3.Connection, number: int, sha: str, job_id: int) -> None:
    """A pull request's head is now ``sha``, checked by ``job_id``."""
    db.execute("INSERT OR REPLACE INTO pr_heads VALUES (?, ?, ?, ?)", (number, sha, job_id, time.time()))


def prs_headed_at(db: sqlite3.Connection, sha: str) -> list[int]:
    """Pull requests whose latest head is ``sha``."""
    return [int(r[0]) for r in db.execute("SELECT number FROM pr_heads p WHERE sha = ? AND at = (SELECT MAX(at) "
                                          "FROM pr_heads q WHERE q.number = p.number)", (sha,))]


def host_state_counts(db: sqlite3.Connection, job_id: int) -> dict[str, int]:
    """How many hosts of a job are in each state."""
    return {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM job_hosts WHERE job_id = ? GROUP BY state",
                                           (job_id,))}


def host_results(db: sqlite3.Connection, job_id: int, offset: int = 0, limit: int = -1) -> list[HostResult]:
    """A job's hosts by name with their results, from ``offset`` (``limit`` -1: all)."""
    rows = db.execute("SELECT host, state, description, detail FROM job_hosts WHERE job_id = ? ORDER BY host "
                      "LIMIT ? OFFSET ?", (job_id, limit, offset))
    return [HostResult(r[0], r[1], r[2] or "", _detail(r[3])) for r in rows]


def _detail(text: str | None) -> dict[str, Any]:
    return dict(json.loads(text or "{}"))


_LEASES = """CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL)"""


def lease_of(db: sqlite3.Connection, name: str) -> tuple[str, float] | None:
    """Who holds the lease ``name``, until when."""
    db.execute(_LEASES)
    row = db.execute("SELECT holder, until FROM leases WHERE name = ?", (name,)).fetchone()
    return (row[0], row[1]) if row else None


def set_lease(db: sqlite3.Connection, name: str, holder: str | None, until: float = 0.0) -> None:
    """Give the lease ``name`` to ``holder`` until ``until``; ``holder`` None lets it go."""
    db.execute(_LEASES)
    if holder is None:
        db.execute("DELETE FROM leases WHERE name = ?", (name,))
    else:
        db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (name, holder, until))


def retry_write(db: sqlite3.Connection, write_id: int, attempts: int, next_at: float, error: str) -> None:
    """A pending write could not land: try again at ``next_at``."""
    db.execute("UPDATE outbox SET attempts = ?, next_at = ?, last_error = ? WHERE id = ? AND state = 'pending'",
               (attempts, next_at, error, write_id))


def settle_write(db: sqlite3.Connection, write_id: int, state: str, error: str | None) -> None:
    """A pending write is done with: ``sent``, ``recorded``, ``merged`` or ``failed``."""
    db.execute("UPDATE outbox SET state = ?, sent_at = ?, last_error = ?, attempts = attempts + 1 "
               "WHERE id = ? AND state = 'pending'", (state, time.time(), error, write_id))


class _WriterLock:
    """Writers of one database queue here: threads on a lock, processes on ``flock`` of a lock file.

    Both wake the next writer the moment the lock is free, where SQLite's busy handler polls
    by sleeping (up to 100 ms a turn), which under many threads and two web processes turned
    into tail latencies of seconds.  SQLite's own locking still guards correctness.
    """

    def __init__(self, path: Path) -> None:
        self.thread_lock = threading.Lock()
        self.path = path.with_name(path.name + ".lock")
        self.fd: int | None = None
        self.pid = 0

    def __enter__(self) -> int:
        self.thread_lock.acquire()
        try:
            if self.fd is None or self.pid != os.getpid():  # after a fork, flock on a shared fd excludes nobody
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self.pid = os.getpid()
        except BaseException:
            self.thread_lock.release()
            raise
        return self.fd

    def __exit__(self, *exc: object) -> None:
        self.thread_lock.release()


_LOCKS: dict[Path, _WriterLock] = {}
_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> _WriterLock:
    with _LOCKS_GUARD:
        key = path.resolve()
        if key not in _LOCKS:
            _LOCKS[key] = _WriterLock(key)
        return _LOCKS[key]


class Store:
    """The bot's SQLite database; one connection per thread."""

    def __init__(self, path: Path, check: bool = False) -> None:
        self.path = path
        self._local = threading.local()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = self._conn()
            if check:
                self._quick_check(db)
            self._migrate(db)
        except OSError as exc:
            raise StateError(f"{path.parent}: cannot use the state folder: {exc.strerror or exc} "
                             "(KA_STATE_DIR; it must exist or be creatable, and be writable by the bot's user)") \
                from None
        except sqlite3.DatabaseError as exc:
            damaged = isinstance(exc, _Damaged) or "not a database" in str(exc) or "malformed" in str(exc)
            raise StateError(_db_error(path, str(exc), damaged)) from None

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring the schema up to date: in one transaction, under the writers' lock, the version
        read inside it; processes that open the database at once (gunicorn's workers and the job
        worker) migrate it once, and a crash midway leaves it as it was."""
        if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        with self.tx() as tx:
            version = tx.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(f"{self.path}: the database has schema {version}, newer than this bot's "
                                 f"({SCHEMA_VERSION}): run the kernel-agent version that wrote it, or a newer one")
            if version == 1:
                _migrate_1_to_2(tx)
            # 2 → 3 is the partial index of delivery bodies, created below with the rest
            if version in (1, 2, 3):
                _migrate_3_to_4(tx)
            for statement in _statements(SCHEMA):  # not executescript: it would commit halfway
                tx.execute(statement)
            tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _quick_check(self, db: sqlite3.Connection) -> None:
        found = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
        if found != ["ok"]:
            raise _Damaged("; ".join(found))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            _wal(conn)
            conn.execute("PRAGMA synchronous=FULL")  # a stored delivery survives a power cut, not only a crash
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (``BEGIN IMMEDIATE``) so concurrent writers queue cleanly.

        Threads of one process queue on a lock first: SQLite's own busy handler waits by sleeping
        (up to 100 ms a turn), which under many threads turned into seconds of tail latency.
        """
        db = self._conn()
        with _write_lock(self.path) as lock_fd:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:  # SQLite may have rolled back already (a full disk does that)
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self._conn().execute(sql, args).fetchall()

    def ping(self) -> None:
        """Raise when the database cannot be read."""
        self._rows("SELECT 1")

    # --- jobs -------------------------------------------------------------------------------

    def job(self, job_id: int) -> Job | None:
        """One job, or None."""
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", job_id)
        return Job.from_row(rows[0]) if rows else None

    def jobs(self, limit: int = 50, before: int | None = None, host: str | None = None, verb: str | None = None,
             state: str | None = None) -> list[Job]:
        """The newest jobs first, ``limit`` of them, older than job ``before``, filtered when asked.

        ``host`` matches a job for that host and a fleet-wide job that covered it.
        """
        where: list[str] = ["id < ?"]
        args: list[Any] = [before if before is not None else 2**63 - 1]
        if host:
            where.append("(host = ? OR id IN (SELECT job_id FROM job_hosts WHERE host = ?))")
            args += [host, host]
        for column, value in (("verb", verb), ("state", state)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        rows = self._rows(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",  # noqa: S608
                          *args, limit)
        return [Job.from_row(r) for r in rows]

    def jobs_in(self, *states: str) -> list[Job]:
        """Jobs in any of ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        return [Job.from_row(r) for r in self._rows(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id",  # noqa: S608
                                                     *states)]

    def claim(self, job_id: int) -> Job | None:
        """Move a queued job to running; None when it is not queued or its host is busy."""
        with self.tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ? AND state = 'queued'", (job_id,)).fetchone()
            if row is None:
                return None
            if row["verb"] in EXCLUSIVE and db.execute(
                    "SELECT 1 FROM jobs WHERE state = 'running' AND host = ? AND verb IN (?, ?, ?)",
                    (row["host"], *EXCLUSIVE)).fetchone():
                return None
            db.execute("UPDATE jobs SET state = 'running', started_at = ?, owner = ? WHERE id = ?",
                       (time.time(), owner.me(thread=False), job_id))
        return self.job(job_id)

    def set_result(self, job_id: int, result: dict[str, Any]) -> None:
        """Store the job-level result (artifacts of a build, say), capped like a host's."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET result = ? WHERE id = ?", (capped_detail(result), job_id))

    # --- hosts of a fleet-wide job ----------------------------------------------------------

    def set_hosts(self, job_id: int, hosts: list[str], writes: list[Write]) -> None:
        """Record the hosts a job covers, all pending, and queue ``writes`` (their pending statuses): one commit."""
        now = time.time()
        with self.tx() as db:
            db.executemany("INSERT OR IGNORE INTO job_hosts VALUES (?, ?, 'pending', '', '{}', ?)",
                           [(job_id, h, now) for h in hosts])
            db.execute("UPDATE jobs SET host_count = ? WHERE id = ?", (len(hosts), job_id))
            insert_writes(db, job_id, writes)

    def record_host(self, job_id: int, result: HostResult, write: Write) -> None:
        """A host's outcome and its status, in one commit: linear in the number of hosts."""
        with self.tx() as db:
            db.execute("UPDATE job_hosts SET state = ?, description = ?, detail = ?, updated_at = ? "
                       "WHERE job_id = ? AND host = ?",
                       (result.state, encodable(cap(result.description, DESCRIPTION_MAX)), capped_detail(result.detail),
                        time.time(), job_id, result.host))
            insert_writes(db, job_id, [write])

    def host_results(self, job_id: int, offset: int = 0, limit: int = -1) -> list[HostResult]:
        """Per-host outcomes in host order (``limit`` -1: all)."""
        return host_results(self._conn(), job_id, offset, limit)

    def host_counts(self, job_id: int) -> dict[str, int]:
        """How many hosts of a job are in each state."""
        return host_state_counts(self._conn(), job_id)

    # --- ending jobs ------------------------------------------------------------------------

    def finish(self, job_id: int, state: str, error: str | None = None,
               on_end: Callable[[sqlite3.Connection, Job, list[str]], None] | None = None,
               was: str = "running") -> bool:
        """End a job that is in state ``was``, in one commit with everything that ends with it.

        Hosts still pending become ``error`` with the job's error; then ``on_end(db, job,
        pending)`` adds, in the same transaction, what the end means (statuses for the
        pending hosts, the reply to the command that asked, the audit entry).  False when
        the job was not in state ``was`` (a stale finish).
        """
        assert state in FINAL
        error = encodable(cap(error, 2000)) if error else error
        with self.tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE id = ? AND state = ?", (job_id, was)).fetchone() is None:
                return False
            pending = [r[0] for r in db.execute("SELECT host FROM job_hosts WHERE job_id = ? AND state = 'pending' "
                                                "ORDER BY host", (job_id,))]
            now = time.time()
            db.execute("UPDATE job_hosts SET state = 'error', description = ?, updated_at = ? "
                       "WHERE job_id = ? AND state = 'pending'", (cap(error or state, DESCRIPTION_MAX), now, job_id))
            db.execute("UPDATE jobs SET state = ?, finished_at = ?, error = ?, started_at = COALESCE(started_at, ?) "
                       "WHERE id = ?", (state, now, error, now, job_id))
            if on_end is not None:
                on_end(db, Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()), pending)
        return True

    def end_in(self, db: sqlite3.Connection, job_id: int, state: str, result: dict[str, Any]) -> None:
        """End a running job inside the caller's transaction: for a job whose whole work is that transaction."""
        db.execute("UPDATE jobs SET state = ?, finished_at = ?, result = ? WHERE id = ? AND state = 'running'",
                   (state, time.time(), capped_detail(result), job_id))

    def request_cancel(self, job_id: int, reason: str) -> None:
        """Ask a running job to stop where it safely can (parity: between hosts)."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"cancel:{job_id}", reason))

    def cancel_reason(self, job_id: int) -> str | None:
        """Why the job was asked to stop, once someone asked."""
        rows = self._rows("SELECT cancel_requested FROM jobs WHERE id = ?", job_id)
        if not rows or not rows[0][0]:
            return None
        return self.get(f"cancel:{job_id}") or "cancelled on request"

    # --- small facts: the bot's login, the default branch ------------------------------------

    def get(self, key: str) -> str | None:
        """A value of the key-value table."""
        rows = self._rows("SELECT value FROM kv WHERE key = ?", key)
        return str(rows[0][0]) if rows else None

    def put(self, key: str, value: str) -> None:
        """Set a value of the key-value table."""
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def dead_running(self) -> list[Job]:
        """Running jobs whose worker process is gone (another live worker's jobs are left alone)."""
        return [job for job in self.jobs_in("running") if not owner.alive(job.owner)]

    # --- the audit log ----------------------------------------------------------------------

    def audit(self, job_id: int | None = None, host: str | None = None, since: float | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
        """Audit entries, oldest first, filtered by job, host and time; with ``limit``, the newest that many.

        An entry about the whole fleet (``all``) concerns every host.
        """
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        if host:
            where.append("(hosts = 'all' OR instr(' ' || hosts || ' ', ' ' || ? || ' ') > 0)")
            args.append(host)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        rows = self._rows(f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",  # noqa: S608
                          *args, -1 if limit is None else limit)
        return [dict(r) for r in reversed(rows)]

    # --- pull requests: their heads, and the one summary comment each ---------------------------

    def pr_heads(self, number: int) -> list[sqlite3.Row]:
        """The heads a pull request had, newest first, with the parity job of each."""
        return self._rows("SELECT * FROM pr_heads WHERE number = ? ORDER BY at DESC, rowid DESC", number)

    def prs_at(self, sha: str) -> list[int]:
        """Pull requests whose latest head is ``sha``."""
        return prs_headed_at(self._conn(), sha)

    def summary_comment(self, number: int) -> int | None:
        """The id of a pull request's summary comment, once it exists."""
        rows = self._rows("SELECT comment_id FROM pr_summaries WHERE number = ?", number)
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def set_summary_comment(self, number: int, comment_id: int | None) -> None:
        """Remember (or forget, when it was deleted) a pull request's summary comment."""
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO pr_summaries VALUES (?, ?)", (number, comment_id))

    def latest_parity(self, ref: str) -> Job | None:
        """The newest finished fleet-wide parity job of ``ref`` (a command's host subset does not count)."""
        rows = self._rows("SELECT * FROM jobs WHERE verb = 'parity' AND ref = ? AND state IN ('succeeded', 'failed') "
                          "AND json_extract(COALESCE(args, '{}'), '$.hosts') IS NULL "
                          "AND json_extract(COALESCE(args, '{}'), '$.at') IS NULL ORDER BY id DESC LIMIT 1", ref)
        return Job.from_row(rows[0]) if rows else None

    # --- the outbox ------------------------------------------------------------------------

    def backlog(self) -> int:
        """How many writes wait to be sent."""
        return int(self._rows("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0])

    def write_due(self, now: float) -> bool:
        """Whether a pending write may be sent at ``now``."""
        return bool(self._rows("SELECT 1 FROM outbox WHERE state = 'pending' AND next_at <= ? LIMIT 1", now))

    def pending_writes(self, limit: int = 50) -> list[sqlite3.Row]:
        """The oldest pending writes, in the order they were made."""
        return self._rows("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id LIMIT ?", limit)

    def superseded(self, row: sqlite3.Row) -> bool:
        """Whether a later pending write of the same method and path renders a newer state than ``row``."""
        return bool(self._rows("SELECT 1 FROM outbox WHERE state = 'pending' AND method = ? AND path = ? AND id > ? "
                               "LIMIT 1", row["method"], row["path"], row["id"]))

    def writes_of(self, job_id: int, limit: int = 200) -> list[sqlite3.Row]:
        """A job's writes to the forge, oldest first."""
        return self._rows("SELECT * FROM outbox WHERE job_id = ? ORDER BY id LIMIT ?", job_id, limit)

    def newest_write(self) -> int:
        """The id of the newest write queued (0 when none)."""
        return int(self._rows("SELECT MAX(id) FROM outbox")[0][0] or 0)

    # --- the worker's view of the queue --------------------------------------------------------

    def queued_after(self, last: int) -> list[tuple[int, str]]:
        """Queued jobs with an id over ``last``, oldest first: (id, verb)."""
        return [(int(r[0]), str(r[1])) for r in self._rows("SELECT id, verb FROM jobs WHERE state = 'queued' "
                                                           "AND id > ? ORDER BY id", last)]

    def commits_in_use(self, since: float) -> set[str]:
        """Commits of jobs queued, running, or ended after ``since``: the mirror keeps them."""
        return {r[0] for r in self._rows("SELECT commit_sha FROM jobs WHERE commit_sha IS NOT NULL AND (state IN "
                                         "('queued', 'running') OR finished_at > ?)", since)}

    # --- counts for the metrics ----------------------------------------------------------------

    def delivery_counts(self) -> list[tuple[str, str, int]]:
        """(event, outcome, how many) over every stored delivery."""
        return [(r[0], r[1], r[2]) for r in self._rows("SELECT event, outcome, COUNT(*) FROM deliveries "
                                                       "GROUP BY event, outcome")]

    def job_counts(self) -> dict[tuple[str, str], int]:
        """How many jobs of each (verb, state)."""
        return {(r[0], r[1]): r[2] for r in self._rows("SELECT verb, state, COUNT(*) FROM jobs GROUP BY 1, 2")}

    def job_durations(self) -> list[tuple[str, float]]:
        """(verb, seconds) of every finished job."""
        return [(r[0], r[1]) for r in self._rows("SELECT verb, finished_at - started_at FROM jobs "
                                                 "WHERE finished_at IS NOT NULL AND started_at IS NOT NULL")]

    # --- retention --------------------------------------------------------------------------

    def prune_bodies(self, before: float, batch: int = 500) -> int:
        """Drop the bodies of deliveries received before ``before`` (the records stay); how many.

        In batches of short transactions, so that intake never waits long for the write lock.
        """
        dropped = 0
        while True:
            with self.tx() as db:
                n = db.execute("UPDATE deliveries SET body = NULL WHERE rowid IN (SELECT rowid FROM deliveries "
                               "WHERE body IS NOT NULL AND received_at < ? LIMIT ?)", (before, batch)).rowcount
            dropped += n
            if n < batch:
                return dropped


def _statements(script: str) -> list[str]:
    """A SQL script's statements (a trigger's body holds semicolons of its own)."""
    found, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            found.append(current.strip())
            current = ""
    return found


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Schema 1 kept each job's per-host results as one JSON document; move them into rows."""
    db.execute("ALTER TABLE jobs ADD COLUMN host_count INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE TABLE job_hosts (job_id INTEGER NOT NULL, host TEXT NOT NULL, state TEXT NOT NULL, "
               "description TEXT, detail TEXT, updated_at REAL NOT NULL, PRIMARY KEY (job_id, host))")
    for job_id, hosts, result in db.execute("SELECT id, hosts, result FROM jobs").fetchall():
        names, found = json.loads(hosts or "[]"), json.loads(result or "{}")
        for host in names:
            r = found.get(host) or {}
            db.execute("INSERT OR IGNORE INTO job_hosts VALUES (?, ?, ?, ?, ?, ?)",
                       (job_id, host, r.get("state", "pending"), r.get("description", ""),
                        capped_detail(r.get("detail") or {}), time.time()))
        db.execute("UPDATE jobs SET host_count = ?, result = '{}' WHERE id = ?", (len(names), job_id))


class _Damaged(sqlite3.DatabaseError):
    """``quick_check`` found damage."""


def _migrate_3_to_4(db: sqlite3.Connection) -> None:
    """Schema 4: a job's arguments (a command's hosts, flags) and cancel requests; the audit log,
    pull requests' heads and summaries (new tables, created with the rest of the schema)."""
    db.execute("ALTER TABLE jobs ADD COLUMN args TEXT")
    db.execute("ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")


def _db_error(path: Path, text: str, damaged: bool) -> str:
    if damaged:
        return (f"{path}: the database is damaged ({cap(text, 200)}). Stop the bot, move {path.name} (and its "
                f"-wal and -shm files) aside, then restore it from a backup, or recover what SQLite can read: "
                f"sqlite3 {path.name}.damaged .recover | sqlite3 {path.name}; then start the bot again")
    return f"{path}: cannot open the database: {text} (is the state folder writable by the bot's user?)"
