"""Intake on a real SQLite store: stored before the answer, deduplicated on what the event is about."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from bot.store import Store
from tests.support.botkit import delivery, push_payload, send

SHA = "a" * 40


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ka-bot.db")



def test_rerun_after_an_interrupted_job(store: Store) -> None:
    send(store, delivery("push-forgejo-12", push_payload(SHA, "/srv/fleet.git")))
    store.claim(1)
    assert store.dead_running() == []  # its worker (this process) is alive: left alone
    dead = subprocess.Popen(["true"])
    dead.wait()
    with store.tx() as db:
        db.execute("UPDATE jobs SET owner = ?", (f"{socket.gethostname()}:{dead.pid}:0:0",))
    assert [j.id for j in store.dead_running()] == [1]
    assert store.finish(1, "interrupted", "gone")
    reply = send(store, delivery("push-forgejo-12", push_payload(SHA, "/srv/fleet.git", ref="refs/heads/again")))
    assert reply.new_jobs == [2]
