"""What a job's end means, written in the same transaction as the end itself.

For a parity job: an ``error`` status for every host it did not finish (or one fleet-wide
status when it never listed them), and a fresh summary for the pull requests whose head it
checked.  For a job a command asked for: the terminal reply in that thread (the command,
who asked, the commit, the duration, the outcome, the table or the reason, the log's last
lines, the manual fallback) and a reaction on the command (``rocket`` or ``confused``).  For
a comment's ``commands`` job that could not finish: a reply that says so.  For every job: an
audit entry.  Because all of this commits with the job's state, a job can never be final
without its reply, and never have a reply without being final.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from bot.config import Config
from bot.forge import client as forge
from bot.forge.links import host_status, job_url, repo_of
from bot.forge.replies import code, mention, result_comment
from bot.forge.summary import summary_write
from bot.jobs.parity import CONTEXT
from bot.services import Services
from bot.store import Job, host_state_counts, insert_audit, insert_writes, prs_headed_at

OnEnd = Callable[[sqlite3.Connection, Job, list[str]], None]
log = logging.getLogger(__name__)
FINISH_RETRY_MAX = 30.0  # seconds between attempts to record an end, at most
WORDS = {"failed": "failed", "cancelled": "cancelled", "interrupted": "interrupted", "succeeded": "ended"}


def ending(config: Config, log_dir_of: Callable[[int], object], word: str, plain: bool = False) -> OnEnd:
    """The ``on_end`` for :meth:`bot.store.Store.finish`; ``word`` says how it ended ("failed", …).

    ``plain`` is the fallback when composing the full reply failed (a bug in a template, say):
    one line and a link instead of the table and the log, so the thread still hears of the end.
    """
    def on_end(db: sqlite3.Connection, job: Job, pending: list[str]) -> None:
        reason = job.error or "ended without a result for this host"
        writes = ending_statuses(config, job, pending, word, reason)
        if job.verb == "parity" and job.commit_sha:
            writes += [summary_write(n) for n in prs_headed_at(db, job.commit_sha)]
        if job.verb == "build" and job.commit_sha and job.host:
            writes.append(build_status(config, job))
        if job.verb in ("install", "rollback") and job.commit_sha and job.host:
            writes.append(install_status(config, job))
        if job.requester.get("kind") == "comment":
            writes += _plain_reply(config, job) if plain else _thread_reply(config, db, job, log_dir_of(job.id))
        insert_writes(db, job.id, writes)
        _audit(db, job)
    return on_end


def ending_statuses(config: Config, job: Job, pending: list[str], word: str, reason: str) -> list[forge.Write]:
    """Error statuses for the hosts a job did not finish: a parity job's (or one fleet-wide status when it
    listed none), or a build or install of several hosts' (one host's has its own, :func:`build_status`,
    :func:`install_status`)."""
    if job.commit_sha is None or (job.state == "succeeded" and not pending):
        return []
    if job.verb in ("build", "install") and not job.host:  # several hosts: each has its own status
        return [host_status(config, job, job.verb, "error", f"{word}: {reason}", h) for h in pending]
    if job.verb != "parity":
        return []
    targets: list[str | None] = list(pending) if pending or job.host_count else [None]
    repo = repo_of(config)
    reason += "; push again to re-check" if job.state == "interrupted" else ""
    return [forge.status(repo, job.commit_sha, "error", CONTEXT.format(host=h) if h else "ka/parity",
                         f"job {job.id} {word}: {reason}", job_url(config, job.id, h)) for h in targets]


def build_status(config: Config, job: Job) -> forge.Write:
    """The final ``ka/build/<host>`` status: success with what was built, else why not."""
    r = job.result
    if job.state == "succeeded":
        where = (f", published to {r['repository']['host']}" if r.get("repository") else
                 ", not published: a pull request's build" if r.get("unpublished") else "")
        state, text = "success", f"{r.get('pkgbase')} {r.get('version')} built on {r.get('build_host')}{where}"
    else:
        state, text = ("failure" if job.state == "failed" else "error"), f"{job.state}: {job.error or ''}"
    return host_status(config, job, "build", state, text)


def install_status(config: Config, job: Job) -> forge.Write:
    """The final ``ka/install/<host>``: the commit whose settings installed what now runs, or why not."""
    r = job.result
    if job.state == "succeeded":
        state = "success"
        text = (f"{r.get('version') or ''} installed, reboot pending" if r.get("state") == "pending-reboot"
                else f"runs {r.get('new_release')}")
    else:
        state, text = ("failure" if job.state == "failed" else "error"), f"{job.state}: {job.error or ''}"
    return host_status(config, job, "install", state, f"{job.verb} {text}".strip())


def _thread_reply(config: Config, db: sqlite3.Connection, job: Job, log_path: object) -> list[forge.Write]:
    req = job.requester
    repo, number, comment_id = repo_of(config), int(req["number"]), int(req["comment_id"])
    if job.verb == "commands":
        if job.state == "succeeded":
            return []  # its acknowledgement was the reply
        body = (f"{mention(req.get('who'))}: the bot could not act on this comment: `{code(job.error or job.state)}`. "
                f"Nothing was queued; write the command again. ([job {job.id}]({job_url(config, job.id)}))\n")
        return [forge.comment(repo, number, body), forge.reaction(repo, comment_id, "confused")]
    from pathlib import Path

    body = result_comment(config, db, job, Path(str(log_path)))
    return [forge.comment(repo, number, body),
            forge.reaction(repo, comment_id, "rocket" if job.state == "succeeded" else "confused")]


def _plain_reply(config: Config, job: Job) -> list[forge.Write]:
    req = job.requester
    repo, number, comment_id = repo_of(config), int(req["number"]), int(req["comment_id"])
    body = (f"`{code(req.get('command') or job.verb)}` asked by {mention(req.get('who'))}: job {job.id} "
            f"**{job.state}**; the details are on [its page]({job_url(config, job.id)}).\n")
    return [forge.comment(repo, number, body),
            forge.reaction(repo, comment_id, "rocket" if job.state == "succeeded" else "confused")]


def _audit(db: sqlite3.Connection, job: Job) -> None:
    req = job.requester
    hosts = job.args.get("hosts") or ([job.host] if job.host else None)
    states = host_state_counts(db, job.id)
    detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    place = {"comment": "pull request" if req.get("is_pull") else "issue", "push": "push",
             "pull_request": "pull request"}.get(str(req.get("kind")), str(req.get("kind")))
    insert_audit(db, who=req.get("who"), event="outcome", verb=job.verb, command=req.get("command"),
                 hosts=hosts or (["all"] if job.verb == "parity" else None), place=place, number=req.get("number"),
                 url=req.get("url"), commit_sha=job.commit_sha,
                 result=f"{job.state}" + (f": {job.error}" if job.error else "") + (f" ({detail})" if detail else ""),
                 job_id=job.id)


def end_job(services: Services, job: Job, state: str, error: str | None, was: str = "running",
            retry: float = FINISH_RETRY_MAX) -> bool:
    """Finish ``job`` with everything its end means (:mod:`bot.jobs.endings`); False when it was not ``was``.

    Retries until the database takes the write (a full disk, a locked file): a job that
    cannot be finished would stay ``running``, its hosts ``pending`` and its command without
    a reply for good; waiting here until space returns is the only way to keep the promise.
    """
    delay = 0.5
    endings = [ending(services.config, lambda job_id: services.log_dir / f"{job_id}.log", WORDS[state], plain)
               for plain in (False, True)]
    on_end: OnEnd | None = endings.pop(0)
    while True:
        try:
            return services.store.finish(job.id, state, error, on_end, was=was)
        except (sqlite3.Error, OSError) as exc:
            log.error("job %s: cannot record its end (%s); retrying in %.0fs", job.id, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, retry)
        except Exception:  # a bug in what the end says must not keep the job running: say less, then nothing
            log.exception("job %s: cannot compose its end", job.id)
            on_end = endings.pop(0) if endings else None
