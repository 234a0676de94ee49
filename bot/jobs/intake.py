"""Intake: a verified delivery becomes a stored record and, at most once, jobs.

Deduplication is on what the event is about, not only on the delivery id: Forgejo's
"Replay" sends the same payload under a new id.  A push counts once per (ref, after),
a pull-request update once per (number, head sha); and since parity depends only on
the commit, a push and a PR update of the same commit share one parity job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.config import Config
from bot.events.delivery import DeliveryError, Event, parse
from bot.events.router import Ignore, Router, RunCommands, RunParity, get
from bot.forge import client as forge
from bot.forge.links import repo_of
from bot.forge.summary import summary_write
from bot.store import (
    Store,
    delivery_seen,
    event_key_job,
    fleet_parity_job,
    insert_delivery,
    insert_writes,
    new_job,
    set_event_key,
    set_pr_head,
)

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """The HTTP answer to a delivery, and the jobs it created."""

    status: int
    body: dict[str, Any]
    new_jobs: list[int] = field(default_factory=list)


def receive(store: Store, router: Router, config: Config, headers: Mapping[str, str], body: bytes) -> Reply:
    """Verify, parse, store and dispatch one delivery."""
    if config.secret_bytes is None and not config.insecure:
        return Reply(401, {"error": "the bot has no webhook secret configured; it accepts no deliveries"})
    try:
        event = parse(headers, body, config.secret_bytes)
    except DeliveryError as exc:
        log.warning("delivery refused (%d): %s", exc.status, exc)
        return Reply(exc.status, {"error": str(exc)})
    if config.repo and event.repo != config.repo:
        return _record(store, event, "ignored", f"delivery for {event.repo}; this bot serves {config.repo}")
    try:
        decisions = router.dispatch(event)
    except DeliveryError as exc:
        return Reply(exc.status, {"error": f"{event.name}: {exc}"})
    if not config.local_mode:  # local mode has no forge: ka-bot deliver's samples do not say what the branch is
        _note_default_branch(store, event)
    ignores = [d for d in decisions if isinstance(d, Ignore)]
    runs = [d for d in decisions if not isinstance(d, Ignore) and not _own(store, config, d)]
    if not runs:
        reasons = [d.reason for d in ignores] or ["a comment of the bot's own account"]
        outcome = "ping" if any(d.ping for d in ignores) else "ignored"
        return _record(store, event, outcome, "; ".join(reasons))
    return _queue(store, config, event, runs)


def _note_default_branch(store: Store, event: Event) -> None:
    """Remember the repository's default branch (the fleet page and /ka status show it)."""
    branch = get(event.payload, "repository", "default_branch")
    if isinstance(branch, str) and 0 < len(branch) < 250 and store.get("default_branch") != branch:
        store.put("default_branch", branch)


def _own(store: Store, config: Config, decision: RunParity | RunCommands) -> bool:
    """A comment written by the bot's own account (its replies quote commands; they never act)."""
    if not isinstance(decision, RunCommands):
        return False
    login = config.bot_login or store.get("bot_login")
    return bool(login) and decision.author.lower() == str(login).lower()


def _stored_body(event: Event) -> bytes:
    """The body, without the secret that Gitea ≤ 1.14 put inside it."""
    if "secret" not in event.payload:
        return event.body
    return json.dumps({k: v for k, v in event.payload.items() if k != "secret"}).encode()


def _insert_delivery(db: Any, event: Event, outcome: str, reason: str) -> bool:
    return insert_delivery(db, event.delivery_id, event.name, event.action, event.repo, outcome, reason,
                           _stored_body(event))


def _record(store: Store, event: Event, outcome: str, reason: str) -> Reply:
    with store.tx() as db:
        fresh = _insert_delivery(db, event, outcome, reason)
    if not fresh:
        return _seen_before(event)
    log.info("delivery %s %s: %s (%s)", event.delivery_id, event.name, outcome, reason)
    return Reply(200, {"outcome": outcome, "reason": reason, "delivery": event.delivery_id})


def _seen_before(event: Event) -> Reply:
    return Reply(200, {"outcome": "duplicate", "reason": f"delivery {event.delivery_id} was received before"})


def _queue(store: Store, config: Config, event: Event, runs: list[RunParity | RunCommands]) -> Reply:
    jobs, new, reasons = [], [], []
    with store.tx() as db:
        if delivery_seen(db, event.delivery_id):
            return _seen_before(event)
        for run in runs:
            if isinstance(run, RunCommands):
                job_id, created, reason = _commands_job(db, config, event, run)
            else:
                job_id, created, reason = _job_for(db, config, event, run)
            jobs.append(job_id)
            reasons.append(reason)
            if created:
                new.append(job_id)
        outcome = "queued" if new else "duplicate"
        _insert_delivery(db, event, outcome, "; ".join(reasons))
    log.info("delivery %s %s: %s jobs %s", event.delivery_id, event.name, outcome, jobs)
    return Reply(202 if new else 200, {"outcome": outcome, "jobs": jobs, "reason": "; ".join(reasons),
                                       "delivery": event.delivery_id}, new)


def _job_for(db: Any, config: Config, event: Event, run: RunParity) -> tuple[int, bool, str]:
    """The job that answers ``run``: an existing one for the same event or commit, or a new one."""
    seen = event_key_job(db, run.event_key)
    if seen and seen[1]:
        return seen[0], False, f"{run.event_key} already handled by job {seen[0]}"
    same = fleet_parity_job(db, run.commit)
    if same:
        job_id, created, reason = same, False, f"commit {run.commit[:12]} already checked by job {same}"
    else:
        requester = {"kind": run.requester.kind, "who": run.requester.who, "url": run.requester.url,
                     "number": run.requester.number, "delivery": event.delivery_id}
        job_id = new_job(db, "parity", run.commit, run.ref, run.clone_url, requester)
        created, reason = True, f"parity on {run.commit[:12]} queued"
    # a key whose job failed or was interrupted now points at the new job: the event is checked again
    set_event_key(db, run.event_key, job_id, event.delivery_id)
    if run.requester.kind == "pull_request" and run.requester.number:
        set_pr_head(db, run.requester.number, run.commit, job_id)
        insert_writes(db, job_id, [summary_write(run.requester.number)])  # the PR's one summary comment
    return job_id, created, reason


def _commands_job(db: Any, config: Config, event: Event, run: RunCommands) -> tuple[int, bool, str]:
    """A new comment's commands: once per comment id, acknowledged at once with an ``eyes`` reaction."""
    seen = event_key_job(db, run.event_key)
    if seen:
        return int(seen[0]), False, f"comment {run.comment_id} already handled by job {seen[0]}"
    requester = {"kind": "comment", "who": run.author, "url": run.url, "number": run.number,
                 "comment_id": run.comment_id, "is_pull": run.is_pull, "delivery": event.delivery_id}
    job_id = new_job(db, "commands", None, None, run.clone_url, requester,
                     args={"items": run.items, "capped": run.capped, "cut": run.cut})
    set_event_key(db, run.event_key, job_id, event.delivery_id)
    insert_writes(db, job_id, [forge.reaction(repo_of(config), run.comment_id, "eyes")])
    return job_id, True, f"{len(run.items)} command(s) of comment {run.comment_id} queued"
