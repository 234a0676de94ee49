"""Accepting a comment's commands: who may run what, on which commit, for which hosts.

This is the ``commands`` job the intake queues for a new comment.  It asks the forge (the
commenter's permission, the pull request's head at this moment, the default branch), reads
the fleet at the commit (hosts) and at the default branch's head (operators), and then, in
one transaction, queues the jobs, the one reply that acknowledges them (or says why not),
and the audit entries.  Every command ends in that reply or, for a job, in the job's own
terminal reply.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot import mirror, public
from bot.events.commands import MAX_COMMANDS, Command, allowed, help_table
from bot.events.router import get
from bot.forge import client as forge
from bot.forge.links import job_url, repo_of
from bot.forge.replies import code, mention, render, status_comment
from bot.jobs import live
from bot.jobs.endings import end_job
from bot.services import Services
from bot.store import FINAL, Job, insert_audit, insert_writes, new_job
from ka.errors import KaError
from ka.fleet import infra
from ka.fleet.manifest import list_hosts
from ka.fleet.repo import GitTree, resolve_commit
from ka.io.runner import run

Log = Callable[[str], None]
log = logging.getLogger(__name__)


class Refused(Exception):
    """A command that cannot go ahead; the message is the reply line."""


@dataclass
class Planned:
    """A job to queue, and how the reply names it."""

    cmd: Command
    verb: str
    commit: str
    ref: str
    hosts: list[str] | None
    note: str = ""
    at: str | None = None  # named with @SHA: not the branch's state, whatever it says
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What became of one command: a reply line, or a job to queue."""

    written: str
    line: str = ""
    job: Planned | None = None
    event: str = "answered"
    verb: str | None = None
    hosts: list[str] = field(default_factory=list)
    job_id: int | None = None


class Acceptor:
    """One run of a ``commands`` job."""

    def __init__(self, services: Services, job: Job, log: Log) -> None:
        self.services, self.config, self.job, self.log = services, services.config, job, log
        self.req = job.requester
        self._role: str | None = None
        self._head: tuple[str, str, str | None] | None = None  # (sha, ref, fork)
        self._default: tuple[str, str] | None = None
        self._hosts: dict[str, list[str]] = {}
        self.help = ""

    # --- what the forge and the fleet say, asked once each ---------------------------------

    def role(self) -> str:
        if self._role is None:
            try:
                self._role = self.services.forge.permission(self.req["who"])
            except forge.Permanent:  # unknown user (404), or a bot without the admin right to ask (403)
                self._role = "none"
            self.log(f"{self.req['who']} has {self._role}")
        return self._role

    def default(self) -> tuple[str, str]:
        if self._default is None:
            self._default = self.services.forge.default_branch()
            self.services.store.put("default_branch", self._default[0])
        return self._default

    def head(self) -> tuple[str, str, str | None]:
        """(commit, ref to fetch it by, the fork it comes from) for this thread, read now."""
        if self._head is None:
            if self.req.get("is_pull"):
                pr = self.services.forge.pull(int(self.req["number"]))
                sha = get(pr, "head", "sha")
                if not isinstance(sha, str):
                    raise Refused(f"pull request #{self.req['number']} has no head commit")
                head_repo, base_repo = get(pr, "head", "repo", "full_name"), get(pr, "base", "repo", "full_name")
                fork = None
                if head_repo != base_repo and (head_repo or base_repo):  # no head repository: a deleted fork
                    fork = str(head_repo) if head_repo else "a repository that no longer exists"
                self._head = (sha, f"refs/pull/{self.req['number']}/head", fork)
            else:
                branch, sha = self.default()
                self._head = (sha, f"refs/heads/{branch}", None)
        return self._head

    def commit(self, cmd: Command) -> tuple[str, str]:
        """The full commit a command names (its @SHA, else the thread's head) and the ref to fetch."""
        sha, ref, _ = self.head()
        self.fetch(ref, sha)
        if cmd.commit is None:
            return sha, ref
        try:
            named = resolve_commit(self.mirror_dir, cmd.commit)
        except KaError:
            named = None
        # the mirror also holds other pull requests' and forks' heads: only this thread's history counts
        if named is None or not run(["git", "-C", self.mirror_dir, "merge-base", "--is-ancestor", named, sha],
                                    check=False).ok:
            raise Refused(f"commit `{code(cmd.commit)}` is not on `{code(ref)}` (its head is `{sha[:12]}`)")
        return named, ref

    @property
    def mirror_dir(self) -> Any:
        return self.config.state_dir / "mirror.git"

    def fetch(self, ref: str, sha: str) -> None:
        mirror.fetch_commit(self.config, self.job.clone_url, ref, sha)

    def hosts_at(self, sha: str) -> list[str]:
        if sha not in self._hosts:
            self._hosts[sha] = list_hosts(GitTree(self.mirror_dir, sha, self.config.limits))
        return self._hosts[sha]

    def operators(self, host: str) -> list[str]:
        """Operators of ``host`` in fleet/infra.yaml at the default branch's head (never the PR's)."""
        branch, sha = self.default()
        self.fetch(f"refs/heads/{branch}", sha)
        return infra.operators(GitTree(self.mirror_dir, sha, self.config.limits)).get(host, [])

    # --- one command -----------------------------------------------------------------------

    def one(self, item: dict[str, Any]) -> Outcome:
        if "invalid" in item:
            if item.get("closest") is None or item["invalid"].startswith("unknown command"):
                self.help = help_table()
            return Outcome(item["written"], f"`{code(item['written'])}`: {item['invalid']}", event="invalid")
        cmd = Command.from_dict(item)
        out = Outcome(cmd.text, verb=cmd.verb, hosts=list(cmd.hosts))
        try:
            self._permitted(cmd)
            handler = getattr(self, f"_{cmd.verb}")
            handler(cmd, out)
        except Refused as exc:
            out.line, out.event = f"`{cmd.text}`: {exc}", "refused"
        except Exception as exc:  # the forge or a fetch failed for this command: the others still count
            log.warning("job %s: %s: %s: %s", self.job.id, cmd.text, type(exc).__name__, exc)
            why = self.services.scrub(public.reason(exc))
            self.log(f"{cmd.text}: {why}")
            out.line = f"`{cmd.text}`: could not be done: `{code(why)}`; write it again"
            out.event, out.job = "error", None
        return out

    def _permitted(self, cmd: Command) -> None:
        spec = cmd.spec
        if spec.role == "anyone":
            return
        role = self.role()
        operator = spec.role == "admin" and bool(cmd.hosts) and all(self.req["who"] in self.operators(h)
                                                                      for h in cmd.hosts)
        # read alone proves nothing on a public repository: ask whether the login was added as a collaborator
        collaborator = operator and role == "read" and self.services.forge.collaborator(self.req["who"])
        if not allowed(spec, role, operator, collaborator):
            why = ("; an operator needs write access, or to be a collaborator of the repository (read is enough)"
                   if operator else "")
            raise Refused(f"needs {spec.who}; {mention(self.req['who'])} has **{role}**{why}")

    def _help(self, cmd: Command, out: Outcome) -> None:
        out.line = f"`{cmd.text}`: see the table below"
        self.help = help_table(cmd.topic)

    def _status(self, cmd: Command, out: Outcome) -> None:
        branch, _ = self.default()
        text = status_comment(self.config, self.services.store, branch, list(cmd.hosts))
        try:
            rows = live.refresh(self.services, list(cmd.hosts) or None, self.job.clone_url)
            text += "\n" + render("live.md.j2", head=live.HEAD, rows=[live.cells(r) for r in rows],
                                  timeout=f"{self.config.live_timeout:g}")
        except Exception as exc:  # the forge or the mirror failed: the stored table still answers
            log.warning("job %s: live status: %s: %s", self.job.id, type(exc).__name__, exc)
            why = self.services.scrub(public.reason(exc))
            self.log(f"live status: {why}")
            text += f"\nThe hosts could not be asked now: `{code(why)}`\n"
        out.line = "`" + cmd.text + "`:\n\n" + _indent(text)

    def _fleet_with(self, cmd: Command, sha: str) -> list[str]:
        """The fleet's hosts at ``sha``; :class:`Refused` when the command names one it lacks."""
        fleet = self.hosts_at(sha)
        unknown = [h for h in cmd.hosts if h not in fleet]
        if unknown:
            raise Refused(f"not in the fleet at `{sha[:12]}`: {', '.join(f'`{code(h)}`' for h in unknown)}; "
                          f"its hosts: {', '.join(f'`{code(h)}`' for h in fleet[:100]) or 'none'}")
        return fleet

    def _promote(self, cmd: Command, out: Outcome) -> None:
        sha, ref = self.commit(cmd)
        self._fleet_with(cmd, sha)
        out.job = Planned(cmd, "parity", sha, ref, None if cmd.all_hosts else list(cmd.hosts),
                          at=sha if cmd.commit else None)

    def _build(self, cmd: Command, out: Outcome) -> None:
        sha, ref = self.commit(cmd)
        fleet = self._fleet_with(cmd, sha)
        out.job = Planned(cmd, "build", sha, ref, list(fleet) if cmd.all_hosts else list(cmd.hosts),
                          at=sha if cmd.commit else None)

    def _install(self, cmd: Command, out: Outcome) -> None:
        """Installs act with the settings at the default branch's head, whatever thread asks; several hosts are
        a rollout in waves (ka/install/waves.py)."""
        branch, sha, ref = self._default_with(list(cmd.hosts))
        hosts = self.hosts_at(sha) if cmd.all_hosts else list(cmd.hosts)
        what = "the newest published package" if cmd.verb == "install" else "the kept previous kernel"
        if len(hosts) > 1:
            what += " in waves, the first host alone as the canary; the first failure stops the rollout"
        out.job = Planned(cmd, cmd.verb, sha, ref, hosts, note=f": {what}, with the settings on `{code(branch)}`",
                          args={"no_reboot": "--no-reboot" in cmd.flags, "parallel": "--parallel" in cmd.flags})

    _rollback = _install

    def _default_with(self, hosts: list[str]) -> tuple[str, str, str]:
        """The default branch, its head (fetched) and ref; :class:`Refused` when a host is not in its fleet."""
        branch, sha = self.default()
        ref = f"refs/heads/{branch}"
        self.fetch(ref, sha)
        fleet = self.hosts_at(sha)
        unknown = [h for h in hosts if h not in fleet]
        if unknown:
            raise Refused(f"{', '.join(f'`{code(h)}`' for h in unknown)} {'is' if len(unknown) == 1 else 'are'} not "
                          f"in the fleet on `{code(branch)}` (`{sha[:12]}`); "
                          f"its hosts: {', '.join(f'`{code(h)}`' for h in fleet[:100]) or 'none'}")
        return branch, sha, ref

    def _bump(self, cmd: Command, out: Outcome) -> None:
        """A bump starts from the default branch's head, whatever thread asks; its pull request says the rest."""
        branch, sha, ref = self._default_with(list(cmd.hosts))
        out.job = Planned(cmd, "bump", sha, ref, list(cmd.hosts) or None, args={"to": cmd.to, "branch": branch},
                          note=f": a pull request against `{code(branch)}` moving them to `{code(cmd.to or '')}`")

    def _cancel(self, cmd: Command, out: Outcome) -> None:
        target = self._target(cmd)
        if target.state in FINAL:
            raise Refused(f"job {target.id} already ended: {target.state}")
        reason = f"cancelled by {self.req['who']}"
        if target.state == "queued" and end_job(self.services, target, "cancelled", reason, was="queued"):
            out.line = f"`{cmd.text}`: job [{target.id}]({job_url(self.config, target.id)}) cancelled"
        elif target.verb == "parity":
            self.services.store.request_cancel(target.id, reason)
            out.line = (f"`{cmd.text}`: job [{target.id}]({job_url(self.config, target.id)}) is running; "
                        "it stops after the host it is checking")
        else:
            raise Refused(f"job {target.id} ({target.verb}) is running and cannot stop safely; it will finish")
        out.hosts = [target.host] if target.host else []

    def _retry(self, cmd: Command, out: Outcome) -> None:
        target = self._target(cmd)
        if target.state not in FINAL:
            raise Refused(f"job {target.id} is still {target.state}")
        if target.verb != "parity" or target.commit_sha is None:
            raise Refused(f"job {target.id} ({target.verb}) cannot be retried: write its command again")
        out.job = Planned(cmd, target.verb, target.commit_sha, target.ref or target.commit_sha,
                          target.args.get("hosts"), note=f" (retry of job {target.id})", at=target.args.get("at"))

    def _target(self, cmd: Command) -> Job:
        assert cmd.job is not None
        target = self.services.store.job(cmd.job) if cmd.job < 2**63 else None
        if target is None:
            raise Refused(f"there is no job {cmd.job}")
        return target

    # --- the run ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Act on every command; queue, acknowledge, audit and end this job in one transaction.

        Ending the commands job in the same commit as its jobs and its acknowledgement means
        that a crash leaves either nothing done (and a reply that says so) or everything.
        """
        ignored = self._not_to_act()
        if ignored:
            result: dict[str, Any] = {"ignored": ignored}
            with self.services.store.tx() as db:
                self.services.store.end_in(db, self.job.id, "succeeded", result)
            return result
        outcomes = [self.one(item) for item in self.job.args.get("items", [])]
        queued: list[int] = []
        with self.services.store.tx() as db:
            for out in outcomes:
                if out.job is not None:
                    queued.append(self._queue(db, out))
                self._audit(db, out)
            insert_writes(db, self.job.id, [forge.comment(repo_of(self.config), int(self.req["number"]),
                                                          self.services.scrub(self._ack(outcomes)))])
            result = {"commands": len(outcomes), "jobs": queued}
            self.services.store.end_in(db, self.job.id, "succeeded", result)
        self.log(f"{len(outcomes)} command(s); jobs queued: {queued or 'none'}")
        return result

    def _not_to_act(self) -> str:
        """Why this comment must not act: the bot's own account wrote it, or the bot cannot tell.

        Fails closed: the bot's replies quote commands, so when its own login is unknown (no
        ``KA_BOT_LOGIN`` and ``GET /user`` refused) no comment acts, and the log says why.
        """
        login = self.config.bot_login or self.services.store.get("bot_login")
        if not login:
            try:
                login = self.services.forge.me()
                self.services.store.put("bot_login", login)
            except forge.ForgeError as exc:
                reason = (f"the bot's own login is unknown (GET /user: {exc}), so this comment may be its own: "
                          "no command acts until KA_BOT_LOGIN names the bot's account")
                log.warning("comment by %s not acted on: %s", self.req.get("who"), reason)
                return reason
        if str(self.req.get("who", "")).lower() == str(login).lower():
            return "a comment of the bot's own account"
        return ""

    def _queue(self, db: sqlite3.Connection, out: Outcome) -> int:
        plan = out.job
        assert plan is not None
        requester = {k: self.req.get(k) for k in ("who", "url", "number", "comment_id", "is_pull", "delivery")}
        requester.update(kind="comment", command=plan.cmd.text, commands_job=self.job.id)
        job_id = new_job(db, plan.verb, plan.commit, plan.ref, self.job.clone_url, requester,
                         host=plan.hosts[0] if plan.hosts and len(plan.hosts) == 1 else None,
                         args={"hosts": plan.hosts, **({"at": plan.at} if plan.at else {}), **plan.args})
        what = ", ".join(plan.hosts) if plan.hosts else "every host"
        out.line = (f"`{plan.cmd.text}`: job [{job_id}]({job_url(self.config, job_id)}) queued "
                    f"({plan.verb} of {what} on `{plan.commit[:12]}`){plan.note}")
        out.event, out.hosts, out.job_id = "accepted", plan.hosts or [], job_id
        return job_id

    def _audit(self, db: sqlite3.Connection, out: Outcome) -> None:
        place = "pull request" if self.req.get("is_pull") else "issue"
        insert_audit(db, who=self.req.get("who"), event="command", verb=out.verb, command=out.written,
                     hosts=out.hosts, place=place, number=self.req.get("number"), url=self.req.get("url"),
                     commit_sha=out.job.commit if out.job else (self._head[0] if self._head else None),
                     result=f"{out.event}: {_plain(out.line)}", job_id=out.job_id or self.job.id)

    def _ack(self, outcomes: list[Outcome]) -> str:
        sha, fork, where = None, None, ""
        if self._head is not None:
            sha, ref, fork = self._head
            where = f" (head of #{self.req['number']})" if self.req.get("is_pull") else f" (head of `{ref[11:]}`)"
        return render("ack.md.j2", mention=mention(self.req.get("who")), commit=sha, where=where,
                      fork=fork if any(o.job for o in outcomes) else None, lines=[o.line for o in outcomes],
                      capped=bool(self.job.args.get("capped")), cut=bool(self.job.args.get("cut")),
                      max_commands=MAX_COMMANDS, help=self.help)


def _indent(text: str) -> str:
    return "\n".join("  " + ln if ln else "" for ln in text.splitlines())


def _plain(line: str) -> str:
    return line.replace("`", "").replace("**", "")

