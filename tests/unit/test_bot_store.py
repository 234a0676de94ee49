"""The job table: claims, exclusivity per host, interrupted jobs."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from bot.config import Config
from bot.forge import client as forge
from bot.jobs.worker import prune
from bot.services import make_services
from bot.store import DESCRIPTION_MAX, DETAIL_MAX, SCHEMA_VERSION, HostResult, Job, Store, insert_writes
from tests.support.db import sql


def _job(store: Store, verb: str, host: str | None) -> int:
    with store.tx() as db:
        cur = db.execute("INSERT INTO jobs (verb, host, state, created_at) VALUES (?, ?, 'queued', ?)",
                         (verb, host, time.time()))
        return int(cur.lastrowid)


def test_jobs_that_change_a_host_wait_for_each_other(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    build = _job(store, "build", "ampere")
    install = _job(store, "install", "ampere")
    other = _job(store, "install", "ohm")
    parity = _job(store, "parity", None)
    assert store.claim(build) is not None
    assert store.claim(install) is None           # same host busy: it waits, still queued
    assert store.job(install).state == "queued"   # type: ignore[union-attr]
    assert store.claim(other) is not None         # another host runs alongside
    assert store.claim(parity) is not None        # parity only reads
    store.finish(build, "succeeded")
    assert store.claim(install) is not None
    assert store.claim(install) is None           # claimed once only


def test_finish_only_ends_a_running_job(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    job = _job(store, "parity", None)
    store.claim(job)
    store.finish(job, "succeeded")
    store.finish(job, "failed", "late")  # a second, stale finish changes nothing
    record = store.job(job)
    assert record is not None and (record.state, record.error) == ("succeeded", None)


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    assert sql(store, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
    Store(tmp_path / "db")  # opening again is idempotent


# --- per-host results as rows (defect 3), capped (defect 1), bodies pruned (defect 17) ----------

def test_a_hosts_result_is_capped(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    job = _job(store, "parity", None)
    store.set_hosts(job, ["h"], [])
    huge = {"excerpt": "x" * 10_000_000, "series": [{"patches": ["p" * 1000] * 1000}] * 1000, "n": 3}
    store.record_host(job, HostResult("h", "failure", "d" * 1_000_000, huge), forge.status(
        "o/r", "a" * 40, "failure", "ka/parity/h", "x", "http://x"))
    row = sql(store, "SELECT length(description), length(detail) FROM job_hosts")[0]
    assert row[0] <= DESCRIPTION_MAX and row[1] <= DETAIL_MAX
    (result,) = store.host_results(job)
    assert result.detail["n"] == 3


def test_a_name_that_is_not_utf8_is_stored_readably(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    job = _job(store, "parity", None)
    store.set_hosts(job, ["h"], [])
    store.record_host(job, HostResult("h", "error", "fleet/bad\udcff.yaml", {"error": "bad\udcff"}),
                      forge.status("o/r", "a" * 40, "error", "ka/parity/h", "x", "http://x"))
    (result,) = store.host_results(job)
    assert result.description == "fleet/bad\\udcff.yaml" and result.detail == {"error": "bad\\udcff"}


def test_recording_a_host_costs_the_same_for_the_first_and_the_ten_thousandth(tmp_path: Path) -> None:
    """Write volume per host is constant: the job's results are never rewritten as a whole."""
    store = Store(tmp_path / "db")
    job = _job(store, "parity", None)
    hosts = [f"h{n:05d}" for n in range(10_000)]
    store.set_hosts(job, hosts, [])
    write = forge.status("o/r", "a" * 40, "success", "ka/parity/h", "x", "http://x")
    detail = {"b2sum": "f" * 128, "series": [{"include": "soc/base", "patches": ["p"] * 10}]}

    def written(batch: list[str]) -> int:
        before = _wchar()
        for host in batch:
            store.record_host(job, HostResult(host, "success", "ok", detail), write)
        return _wchar() - before

    first = written(hosts[:100])
    for n in range(100, 9_900, 100):
        for host in hosts[n:n + 100]:
            store.record_host(job, HostResult(host, "success", "ok", detail), write)
    last = written(hosts[9_900:])
    assert last < 2 * first, (first, last)
    assert store.host_counts(job) == {"success": 10_000}


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def test_finish_gives_every_pending_host_its_error_in_one_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    job = _job(store, "parity", None)
    store.claim(job)
    store.set_hosts(job, ["a", "b", "c"], [])
    ok = forge.status("o/r", "a" * 40, "success", "c", "d", "u")
    store.record_host(job, HostResult("b", "success", "ok", {}), ok)
    asked: list[list[str]] = []

    def writes(db: sqlite3.Connection, ended: Job, pending: list[str]) -> None:
        assert ended.state == "failed" and ended.finished_at and ended.host_count == 3
        asked.append(pending)
        insert_writes(db, job, [forge.status("o/r", "a" * 40, "error", f"ka/parity/{h}", "gone", "u") for h in pending])
    assert store.finish(job, "failed", "boom", writes)
    assert asked == [["a", "c"]]
    assert {r.host: r.state for r in store.host_results(job)} == {"a": "error", "b": "success", "c": "error"}
    assert sql(store, "SELECT COUNT(*) FROM outbox")[0][0] == 3
    assert not store.finish(job, "failed", "again", writes)  # stale: nothing more


def test_delivery_bodies_are_pruned_and_records_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    now = time.time()
    with store.tx() as db:
        for n, age_days in enumerate((40, 31, 29, 1)):
            db.execute("INSERT INTO deliveries VALUES (?, 'push', NULL, 'o/r', ?, 'queued', '', ?)",
                       (f"d{n}", now - age_days * 86400, b"{}"))
    services = make_services(Config(state_dir=tmp_path / "state"))
    services.store = store
    assert prune(services, now) == 2
    rows = sql(store, "SELECT id, body IS NULL FROM deliveries ORDER BY id")
    assert [tuple(r) for r in rows] == [("d0", 1), ("d1", 1), ("d2", 0), ("d3", 0)]
    keep = make_services(Config(state_dir=tmp_path / "state", delivery_retention_days=0))
    keep.store = store
    assert prune(keep, now + 10**9) == 0


def test_schema_1_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_1)
        db.execute("INSERT INTO jobs (verb, commit_sha, state, created_at, hosts, result) VALUES "
                   "('parity', 'abc', 'succeeded', 0, ?, ?)",
                   (json.dumps(["a", "b"]), json.dumps({"a": {"state": "success", "description": "ok",
                                                               "detail": {"b2sum": "f"}}})))
        db.execute("PRAGMA user_version = 1")
        db.commit()
    store = Store(path)
    assert sql(store, "PRAGMA user_version")[0][0] == SCHEMA_VERSION == 4
    job = store.job(1)
    assert job is not None and job.host_count == 2 and job.result == {}
    assert [(r.host, r.state, r.detail) for r in store.host_results(1)] == [("a", "success", {"b2sum": "f"}),
                                                                          ("b", "pending", {})]


SCHEMA_1 = """
CREATE TABLE deliveries (id TEXT PRIMARY KEY, event TEXT NOT NULL, action TEXT, repo TEXT, received_at REAL NOT NULL,
    outcome TEXT NOT NULL, reason TEXT, body BLOB);
CREATE TABLE event_keys (key TEXT PRIMARY KEY, job_id INTEGER, delivery_id TEXT, created_at REAL NOT NULL);
CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, verb TEXT NOT NULL, host TEXT, commit_sha TEXT, ref TEXT,
    clone_url TEXT, requester TEXT, state TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL,
    finished_at REAL, hosts TEXT, result TEXT, error TEXT, owner TEXT);
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER, method TEXT NOT NULL, path TEXT NOT NULL,
    body TEXT NOT NULL, summary TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, created_at REAL NOT NULL, sent_at REAL, last_error TEXT);
"""


def _open(path: str) -> int:
    return sql(Store(Path(path)), "PRAGMA user_version")[0][0]


def test_processes_opening_an_old_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    """gunicorn's web workers and the job worker open the database together after an upgrade."""
    import multiprocessing

    for attempt in range(5):
        path = tmp_path / f"old{attempt}.db"
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.executescript(SCHEMA_1)
            db.execute("PRAGMA user_version = 1")
            db.commit()
        with multiprocessing.get_context("fork").Pool(4) as pool:
            assert pool.map(_open, [str(path)] * 4) == [SCHEMA_VERSION] * 4


def test_a_migration_that_fails_midway_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_1)
        db.execute("INSERT INTO jobs (verb, state, created_at, hosts, result) VALUES ('parity', 'failed', 0, ?, ?)",
                   ("not json", "{}"))  # the migration cannot read it
        db.execute("PRAGMA user_version = 1")
        db.commit()
    with pytest.raises(Exception, match="Expecting value"):
        Store(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "host_count" not in [r[1] for r in db.execute("PRAGMA table_info(jobs)")]


