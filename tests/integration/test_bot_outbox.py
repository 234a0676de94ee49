"""The outbox and the forge client against the fake Forgejo (real HTTP, checked against the spec)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import owner
from bot.forge import client as forge
from bot.forge import outbox
from bot.store import Store
from tests.support.botkit import REPO
from tests.support.db import sql
from tests.support.fakeforgejo import FakeForgejo


@pytest.fixture
def fake() -> Iterator[FakeForgejo]:
    f = FakeForgejo(repo=REPO).start()
    yield f
    if f._server:
        f.stop()
    assert f.violations == []


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ka-bot.db")


def client(fake: FakeForgejo, token: str | None = None) -> forge.ForgejoClient:
    return forge.ForgejoClient(fake.url, token or fake.token, REPO, timeout=(2, 5))


def status(n: int, state: str = "pending") -> forge.Write:
    return forge.status(REPO, "c" * 40, state, f"ka/parity/h{n}", f"description {n}", f"http://bot/jobs/{n}")


def test_writes_land_in_order(fake: FakeForgejo, store: Store) -> None:
    for n in range(5):
        outbox.add(store, 1, status(n))
    assert store.backlog() == 5
    assert outbox.flush(store, client(fake)) is None
    assert [s["context"] for s in fake.statuses()] == [f"ka/parity/h{n}" for n in range(5)]
    assert store.backlog() == 0


@pytest.mark.parametrize(("busy", "answered"), [(0, True), (2, True), (3, False)])
def test_a_read_is_asked_again_twice_when_the_forge_is_busy(fake: FakeForgejo, busy: int, answered: bool) -> None:
    fake.permissions["writer"] = "write"
    fake.fail_next = busy
    if answered:
        assert client(fake).permission("writer") == "write"
    else:
        with pytest.raises(forge.Transient, match="HTTP 503"):
            client(fake).permission("writer")
    assert len(fake.calls) == min(busy + 1, 3)


def test_a_write_is_not_asked_again_by_the_client(fake: FakeForgejo) -> None:
    fake.fail_next = 1  # the outbox retries writes, with the order and the record they need
    with pytest.raises(forge.Transient, match="HTTP 503"):
        client(fake).send(status(1))
    assert len(fake.calls) == 1 and fake.statuses() == []


def test_forge_down_then_back(fake: FakeForgejo, store: Store) -> None:
    fake.down()
    outbox.add(store, 1, status(1, "pending"))
    outbox.add(store, 1, status(1, "success"))
    delay = outbox.flush(store, client(fake))
    assert delay == 1.0  # first retry after a second
    row = sql(store, "SELECT attempts, last_error FROM outbox WHERE id = 1")[0]
    assert row[0] == 1 and "unreachable" in row[1]
    fake.up()
    time.sleep(1.05)
    assert outbox.flush(store, client(fake)) is None
    assert [s["state"] for s in fake.statuses()] == ["pending", "success"]  # order kept across the outage


def test_5xx_is_retried_with_backoff(fake: FakeForgejo, store: Store) -> None:
    fake.fail_with = 503
    outbox.add(store, 1, status(1))
    assert outbox.flush(store, client(fake)) == 1.0
    sql(store, "SELECT 1")
    with store.tx() as db:
        db.execute("UPDATE outbox SET next_at = 0")
    assert outbox.flush(store, client(fake)) == 2.0
    fake.fail_with = None
    with store.tx() as db:
        db.execute("UPDATE outbox SET next_at = 0")
    assert outbox.flush(store, client(fake)) is None
    assert len(fake.statuses()) == 1


def test_permanent_error_is_logged_and_skipped(fake: FakeForgejo, store: Store,
                                               caplog: pytest.LogCaptureFixture) -> None:
    outbox.add(store, 1, forge.comment(REPO, 7, ""))  # Forgejo answers 422 to an empty body
    outbox.add(store, 1, status(2))
    assert outbox.flush(store, client(fake)) is None
    failed = sql(store, "SELECT state, last_error FROM outbox WHERE id = 1")[0]
    assert failed[0] == "failed" and "HTTP 422" in failed[1] and "[Body]: Required" in failed[1]
    assert "the forge refused comment on #7" in caplog.text
    assert len(fake.statuses()) == 1
    fake.violations.clear()  # the empty comment body was sent on purpose


def test_wrong_token_waits_for_a_good_one(fake: FakeForgejo, store: Store) -> None:
    outbox.add(store, 1, status(1))
    assert outbox.flush(store, client(fake, token="wrong")) == 1.0
    row = sql(store, "SELECT state, last_error FROM outbox")[0]
    assert row[0] == "pending" and "HTTP 401: token is required" in row[1]
    with store.tx() as db:
        db.execute("UPDATE outbox SET next_at = 0")
    assert outbox.flush(store, client(fake)) is None
    assert len(fake.statuses()) == 1


def test_unexpected_error_keeps_the_row_in_line(store: Store) -> None:
    class Broken:
        def send(self, write: forge.Write) -> dict:
            raise ValueError("a bug")

    outbox.add(store, 1, status(1))
    assert outbox.flush(store, Broken()) == 1.0  # type: ignore[arg-type]
    # the job page shows last_error: the public reason, not the exception (the log has that)
    assert sql(store, "SELECT state, last_error FROM outbox")[0][:] == (
        "pending", "an internal error in the bot (its log has the traceback)")


def test_lease_keeps_a_second_flusher_out(fake: FakeForgejo, store: Store) -> None:
    outbox.add(store, 1, status(1))
    other = owner.me().rsplit(":", 1)[0] + ":1"  # another thread of a live process holds it
    assert outbox._lease(store, other, take=True)
    assert outbox.flush(store, client(fake)) is None
    assert fake.statuses() == []
    outbox._lease(store, other, take=False)
    assert outbox.flush(store, client(fake)) is None
    assert len(fake.statuses()) == 1


def test_lease_lost_mid_flush_stops_sending(fake: FakeForgejo, store: Store) -> None:
    class Thief:
        def __init__(self) -> None:
            self.sent = 0

        def send(self, write: forge.Write) -> dict:
            self.sent += 1
            with store.tx() as db:  # another live flusher takes the lease (ours ran out)
                db.execute("UPDATE leases SET holder = ?, until = ?", ("other-machine:1:1:1", time.time() + 60))
            return {}

    for n in range(3):
        outbox.add(store, 1, status(n))
    thief = Thief()
    assert outbox.flush(store, thief) is None  # type: ignore[arg-type]
    assert thief.sent == 1
    assert store.backlog() == 2


def test_lease_of_a_dead_process_is_taken_over(fake: FakeForgejo, store: Store) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    outbox.add(store, 1, status(1))
    assert outbox._lease(store, f"{socket.gethostname()}:{dead.pid}:0:1", take=True)
    assert outbox.flush(store, client(fake)) is None
    assert len(fake.statuses()) == 1


def test_client_reads(fake: FakeForgejo) -> None:
    fake.permissions["alice"] = "write"
    fake.pulls[3] = {"number": 3, "head": {"sha": "d" * 40}}
    c = client(fake)
    assert c.permission("alice") == "write"
    assert c.pull(3)["head"]["sha"] == "d" * 40
    with pytest.raises(forge.Permanent, match="HTTP 404"):
        c.permission("mallory")
    posted = c.send(forge.comment(REPO, 3, "hello"))
    for write in (forge.edit_comment(REPO, posted["id"], "edited"), forge.reaction(REPO, posted["id"], "eyes")):
        c.send(write)
    assert fake.comments(3) == [{"id": posted["id"], "number": 3, "body": "edited", "edits": 1}]
    with pytest.raises(forge.Permanent, match="HTTP 404"):  # a comment someone deleted
        c.send(forge.edit_comment(REPO, 999, "edited"))
    fake.branches["main"] = "e" * 40
    assert c.default_branch() == ("main", "e" * 40)
    assert c.me() == "ka-bot"
    assert "fake-forgejo-token" not in repr(c)


def test_long_description_is_cut() -> None:
    w = forge.status(REPO, "c" * 40, "failure", "ka/parity/x", "y" * 500, "http://bot")
    assert len(w.body["description"]) == forge.DESCRIPTION_MAX
