"""Each pull request's one summary comment: the parity table of its current head, edited in place.

A summary is queued in the outbox as a ``SUMMARY`` row, not as a finished write: its body is
rendered when the row is sent, from the database as it is then, so a burst of updates is one
edit, and the comment never shows an older state than the last one queued.  The first send
creates the comment and remembers its id; every later one edits it.  If someone deleted it,
the next update creates it again.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Any

from bot.config import Config
from bot.forge import client as forge
from bot.forge.links import job_url, repo_of
from bot.forge.replies import TABLE_ROWS, render
from bot.store import Store

METHOD = "SUMMARY"
MARKER = "<!-- kernel-agent summary"


def summary_write(number: int) -> forge.Write:
    """The outbox row that asks for pull request ``number``'s summary to be brought up to date."""
    return forge.Write(METHOD, f"pr/{number}", {}, summary=f"summary comment of #{number}")


def number_of(row: sqlite3.Row) -> int:
    return int(str(row["path"]).removeprefix("pr/"))


class Summaries:
    """Renders summary rows into real writes for :func:`bot.forge.outbox.flush`, and remembers the comment."""

    def __init__(self, store: Store, config: Config, forge_api: forge.Forge) -> None:
        self.store, self.config, self.forge = store, config, forge_api

    def compose(self, row: sqlite3.Row) -> forge.Write:
        """PATCH the summary; POST it only when the thread has none from the bot yet.

        A POST whose answer was lost (a timeout, a crash before the id was stored) did create the
        comment: before posting, the thread is searched for the summary's marker, so a retry edits
        that comment instead of adding a second one.
        """
        number = number_of(row)
        body = self.render(number)
        repo = repo_of(self.config)
        comment_id = self.store.summary_comment(number) or self._existing(number)
        return forge.edit_comment(repo, comment_id, body) if comment_id else forge.comment(repo, number, body)

    def _existing(self, number: int) -> int | None:
        login = self.config.bot_login or self.store.get("bot_login")
        for c in self.forge.comments(number):
            author = (c.get("user") or {}).get("login") if isinstance(c.get("user"), dict) else None
            if MARKER in str(c.get("body", "")) and (not login or author == login) and isinstance(c.get("id"), int):
                self.store.set_summary_comment(number, c["id"])
                return int(c["id"])
        return None

    def sent(self, row: sqlite3.Row, write: forge.Write, answer: dict[str, Any]) -> None:
        if write.method == "POST" and isinstance(answer.get("id"), int):
            self.store.set_summary_comment(number_of(row), answer["id"])

    def refused(self, row: sqlite3.Row, write: forge.Write, exc: forge.ForgeError) -> None:
        if write.method == "PATCH" and exc.status == 404:  # deleted by someone: the next update writes it again
            self.store.set_summary_comment(number_of(row), None)

    def render(self, number: int) -> str:
        """The summary's markdown, from the database as it is now."""
        heads = self.store.pr_heads(number)
        if not heads:
            return "kernel-agent: no head of this pull request has been checked yet.\n"
        head, job = heads[0], self.store.job(heads[0]["job_id"])
        assert job is not None
        results = self.store.host_results(job.id, 0, TABLE_ROWS)
        earlier = [self._earlier(h) for h in heads[1:50]]
        return render("summary.md.j2", head=head, job=job, job_url=job_url(self.config, job.id), rows=results,
                      counts=sorted(Counter(self.store.host_counts(job.id)).items()), earlier=earlier,
                      more=max(0, job.host_count - TABLE_ROWS))

    def _earlier(self, head: sqlite3.Row) -> dict[str, Any]:
        job = self.store.job(head["job_id"]) if head["job_id"] else None
        counts = sorted(self.store.host_counts(job.id).items()) if job else []
        return {"sha": head["sha"], "job": job, "counts": counts,
                "url": job_url(self.config, job.id) if job else ""}
