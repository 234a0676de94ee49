"""The job table: claims, exclusivity per host, interrupted jobs."""

from __future__ import annotations

import time
from pathlib import Path

from bot.store import SCHEMA_VERSION, Store


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
    assert store.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    Store(tmp_path / "db")  # opening again is idempotent
