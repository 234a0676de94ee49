"""Intake on a real SQLite store: stored before the answer, deduplicated on what the event is about."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Config
from bot.jobs.intake import receive
from bot.store import Store
from handlers import router
from tests.support.botkit import REPO, delivery, pr_payload, push_payload, sample, send
from tests.support.db import sql

SHA = "a" * 40


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ka-bot.db")




def count(store: Store, table: str) -> int:
    return int(sql(store, f"SELECT COUNT(*) FROM {table}")[0][0])


def test_push_queues_one_job(store: Store) -> None:
    reply = send(store, delivery("push-forgejo-12", push_payload(SHA, "/srv/fleet.git")))
    assert reply.status == 202 and reply.body["outcome"] == "queued" and reply.new_jobs == [1]
    job = store.job(1)
    assert job and (job.verb, job.commit_sha, job.ref, job.state) == ("parity", SHA, "refs/heads/main", "queued")
    assert job.requester["kind"] == "push" and job.requester["who"] == "maintainer"
    assert count(store, "deliveries") == 1


def test_replay_under_new_delivery_id_creates_nothing(store: Store) -> None:
    payload = push_payload(SHA, "/srv/fleet.git")
    first = send(store, delivery("push-forgejo-12", payload))
    replay = send(store, delivery("push-forgejo-12", payload))
    assert replay.status == 200 and replay.body["outcome"] == "duplicate" and replay.new_jobs == []
    assert replay.body["jobs"] == first.body["jobs"]
    assert "already handled by job 1" in replay.body["reason"]
    assert count(store, "jobs") == 1 and count(store, "deliveries") == 2


def test_same_delivery_id_twice(store: Store) -> None:
    d = delivery("push-forgejo-12", push_payload(SHA, "/srv/fleet.git"))
    send(store, d)
    again = send(store, d)
    assert again.body["outcome"] == "duplicate" and "received before" in again.body["reason"]
    assert count(store, "deliveries") == 1


def test_push_and_pr_update_of_one_commit_share_a_job(store: Store) -> None:
    send(store, delivery("push-forgejo-12", push_payload(SHA, "/srv/fleet.git", ref="refs/heads/topic")))
    reply = send(store, delivery("pull_request-synchronized-gitea-1.22", pr_payload(4, SHA, "/srv/fleet.git")))
    assert reply.new_jobs == [] and reply.body["jobs"] == [1]
    assert "already checked by job 1" in reply.body["reason"]
    other = send(store, delivery("pull_request-synchronized-gitea-1.22", pr_payload(4, "b" * 40, "/srv/fleet.git")))
    assert other.new_jobs == [2]




@pytest.mark.parametrize(("name", "outcome", "reason"), [
    ("push-tag-forgejo-12", "ignored", "tag push refs/tags/v1.1"),
    ("push-test-delivery-forgejo-15-synthesized", "ping", "pong"),
    ("delete-branch-gitea-1.16", "ignored", "delete: not handled"),
    ("pull_request-closed-merged-gitea-com", "ignored", "pull_request closed: not handled"),
])
def test_ignored_with_reason(store: Store, name: str, outcome: str, reason: str) -> None:
    payload = sample(name)["payload"]
    payload["repository"]["full_name"] = REPO
    reply = send(store, delivery(name, payload))
    assert reply.status == 200 and reply.body["outcome"] == outcome and reason in reply.body["reason"]
    assert count(store, "jobs") == 0 and count(store, "deliveries") == 1


def test_other_repository_is_ignored(store: Store) -> None:
    reply = send(store, delivery("push-forgejo-12"))
    assert reply.status == 200 and reply.body["outcome"] == "ignored"
    assert "delivery for root/example-push; this bot serves fleet/kernel-agent" in reply.body["reason"]
    assert count(store, "jobs") == 0


@pytest.mark.parametrize(("secret", "status"), [(None, 401), ("wrong", 401)])
def test_bad_signature_stores_nothing(store: Store, secret: str | None, status: int) -> None:
    reply = send(store, delivery("push-forgejo-12", push_payload(SHA, "/x"), secret=secret))
    assert reply.status == status and "signature" in reply.body["error"]
    assert count(store, "deliveries") == 0


def test_malformed_push_is_400(store: Store) -> None:
    payload = push_payload("not-a-sha", "/x")
    reply = send(store, delivery("push-forgejo-12", payload))
    assert reply.status == 400 and reply.body["error"] == "push: after is not a commit id"
    assert count(store, "deliveries") == 0


def test_legacy_secret_in_body_is_not_stored(store: Store) -> None:
    data = sample("push-signed-gitea-legacy")
    config = Config(repo="max/webhook_test", webhook_secret="test")
    reply = receive(store, router, config, data["headers"], data["raw_body"].encode())
    assert reply.status == 202
    body = sql(store, "SELECT body FROM deliveries")[0][0]
    assert b'"secret"' not in body and b"9d7157" in body


def test_failed_job_is_rerun_by_a_replay(store: Store) -> None:
    payload = push_payload(SHA, "/srv/fleet.git")
    send(store, delivery("push-forgejo-12", payload))
    store.claim(1)
    store.finish(1, "failed", "fetch failed")
    replay = send(store, delivery("push-forgejo-12", payload))
    assert replay.new_jobs == [2]
    assert send(store, delivery("push-forgejo-12", payload)).body["outcome"] == "duplicate"


def test_no_secret_accepts_nothing_unless_insecure(store: Store) -> None:
    d = delivery("push-forgejo-12", push_payload(SHA, "/x"), secret=None)
    assert send(store, d, Config(repo=REPO)).status == 401
    assert send(store, d, Config(repo=REPO, insecure=True)).status == 202
