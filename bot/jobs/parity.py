"""The parity job: every host of the fleet, at one commit, as commit statuses.

The commit may come from a fork's pull request, so everything read from it is hostile
input: hosts are checked one by one (memory bounded by a couple of hosts' patches, not
by the fleet), each host's outcome is stored as its own row with its status in the same
commit, and a host that cannot be read gets its own ``error`` while the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import mirror
from bot.config import Config
from bot.forge import client as forge
from bot.forge.links import job_url, repo_of
from bot.forge.summary import summary_write
from bot.jobs.trusted import Head, named_references
from bot.public import scrub_tree, scrubber
from bot.store import HostResult, Job, Store
from ka.errors import KaError, ReferenceUnavailable
from ka.fleet.manifest import list_hosts
from ka.fleet.repo import GitTree
from ka.promote.baseline import KernelTree
from ka.promote.canonical import OnlyNamed, SftpCanonical, references
from ka.promote.flow import PromoteResult, promote_each
from ka.text import printable

CONTEXT = "ka/parity/{host}"
log = logging.getLogger(__name__)
Log = Callable[[str], None]


@dataclass(frozen=True)
class HostOutcome:
    """The status a host gets."""

    state: str
    description: str
    detail: dict[str, Any]


def describe(r: PromoteResult) -> HostOutcome:
    """Commit-status state and description for one promote result."""
    detail = r.as_dict()
    if r.applies is False and r.failure:
        return HostOutcome("failure", f"does not apply: {r.failure.patch} ({r.failure.kind})", detail)
    if r.parity.state == "mismatch":
        return HostOutcome("failure", f"parity mismatch on {r.baseline}: {r.parity.reason}", detail)
    checked = "applies" if r.applies else "baseline not checked (no kernel tree)"
    return HostOutcome("success", f"{r.b2sum[:12]} on {r.baseline}: {checked}, parity {r.parity.state}", detail)


def status_for(config: Config, job: Job, host: str | None, state: str, description: str) -> forge.Write:
    """The commit status of ``host`` (the fleet-wide ``ka/parity`` when None) for this job."""
    assert job.commit_sha is not None
    context = CONTEXT.format(host=host) if host else "ka/parity"
    return forge.status(repo_of(config), job.commit_sha, state, context, f"job {job.id}: {description}",
                        job_url(config, job.id, host))


class _Unreadable:
    """Parity references when the default branch's settings cannot be read: none is read."""

    def read(self, host: str, path: str) -> bytes:
        raise ReferenceUnavailable(f"{host}:{path}: the default branch's infra.yaml could not be read")

    def close(self) -> None:
        pass


class ParityRun:
    """One run of a parity job."""

    def __init__(self, config: Config, store: Store, job: Job, log: Log, head: Callable[[], Head],
                 kick: Callable[[], None] = lambda: None, stop: Callable[[], None] = lambda: None) -> None:
        self.config, self.store, self.job, self.log, self.head = config, store, job, log, head
        self.kick = kick  # asks for the outbox to be flushed now, so "pending" shows while the job runs
        self.stop = stop  # raises when the job is to stop (a /ka cancel): checked before each host

    def _record(self, name: str, outcome: HostOutcome) -> None:
        host = printable(name)  # a file name that is not a host name still gets its own, readable status
        scrub = scrubber(self.config.state_dir, self.config.kernel_tree)  # a status is public: no folder of ours
        outcome = HostOutcome(outcome.state, scrub(outcome.description), scrub_tree(scrub, outcome.detail))
        self.store.record_host(self.job.id, HostResult(host, outcome.state, outcome.description, outcome.detail),
                               status_for(self.config, self.job, host, outcome.state, outcome.description))
        self.log(f"{host}: {outcome.state}: {outcome.description}")

    def run(self) -> dict[str, Any]:
        """Fetch, list the hosts at the commit, post pending, check host by host, post the final statuses."""
        sha = self.job.commit_sha
        assert sha is not None
        url = mirror.clone_url(self.config.repo_url, self.job.clone_url)
        self.log(f"fetching {sha} ({self.job.ref}) from {mirror.redact(url)}")
        view = GitTree(mirror.fetch_commit(self.config, self.job.clone_url, self.job.ref or sha, sha), sha,
                       self.config.limits)
        names = list_hosts(view)
        wanted = self.job.args.get("hosts")  # a command's hosts; a push checks the whole fleet
        if wanted:
            names = [n for n in names if n in wanted]
        hosts = [printable(n) for n in names]
        self.store.set_hosts(self.job.id, hosts,
                             [status_for(self.config, self.job, h, "pending", "checking parity") for h in hosts]
                             + [summary_write(n) for n in self.store.prs_at(sha)])
        self.log(f"{len(hosts)} hosts at {sha[:12]}: {', '.join(hosts[:50]) or 'none'}"
                 + (" …" if len(hosts) > 50 else ""))
        self.kick()
        try:
            kernel = KernelTree(self.config.kernel_tree) if self.config.kernel_tree else None
        except KaError as exc:
            for name in names:
                self._error(name, str(exc))
        else:
            remote = self._references()
            try:
                promote_each(view, names, kernel, sha, on_result=lambda r: self._record(r.host, describe(r)),
                             on_error=self._error, workers=self.config.check_workers, before_each=self.stop,
                             remote=remote)
            finally:
                remote.close()
        return {"hosts": len(hosts), "states": self.store.host_counts(self.job.id)}


    def _references(self) -> SftpCanonical | OnlyNamed | _Unreadable:
        """Parity references on hosts, read only inside the folders the default branch's infra.yaml names; for a
        commit not on the default branch, only those its manifests name."""
        try:
            head = self.head()
        except Exception as exc:  # the forge or the default branch's infra.yaml: not the commit's fault
            log.warning("job %s: parity references not read: the default branch's infra.yaml: %s", self.job.id, exc)
            return _Unreadable()
        assert self.job.commit_sha is not None
        named = None if head.holds(self.job.commit_sha) else lambda: named_references(head, self.config.limits)
        return references(self.config.ssh, head.infra, self.config.limits, self.config.state_dir / "canonical-cache",
                          self.log, named, where=f" on {head.branch}")

    def _error(self, name: str, message: str) -> None:
        self._record(name, HostOutcome("error", message, {"error": message}))
