"""The parity job: every host of the fleet, at one commit, as commit statuses."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import forge, mirror
from bot.config import Config
from bot.store import Job
from ka.baseline import KernelTree
from ka.errors import KaError
from ka.manifest import list_hosts
from ka.promote import HostPlan, PromoteResult, plan_host, promote_many
from ka.repo import GitTree

CONTEXT = "ka/parity/{host}"
LOCAL_REPO = "local/kernel-agent"  # what local mode records writes against when KA_REPO is unset
Post = Callable[[forge.Write], None]
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


def job_url(config: Config, job_id: int, host: str | None = None) -> str:
    """The job page, anchored at a host."""
    return f"{config.public_url.rstrip('/')}/jobs/{job_id}" + (f"#host-{host}" if host else "")


class ParityRun:
    """One run of a parity job."""

    def __init__(self, config: Config, job: Job, post: Post, log: Log,
                 save: Callable[[dict[str, Any]], None], kick: Callable[[], None] = lambda: None) -> None:
        self.config, self.job, self.post, self.log, self.save = config, job, post, log, save
        self.kick = kick  # asks for the outbox to be flushed now, so "pending" shows while the job runs
        self.outcomes: dict[str, HostOutcome] = {}
        self._lock = threading.Lock()  # hosts finish on promote's worker threads

    def results(self) -> dict[str, Any]:
        """Per-host outcomes so far (saved after each host, so a crash leaves what was reported)."""
        return {h: {"state": o.state, "description": o.description, "detail": o.detail}
                for h, o in self.outcomes.items()}

    def _record(self, host: str, outcome: HostOutcome) -> None:
        with self._lock:
            self.outcomes[host] = outcome
            self.status(host, outcome.state, outcome.description)
            self.save(self.results())
            self.log(f"{host}: {outcome.state}: {outcome.description}")

    def status(self, host: str, state: str, description: str) -> None:
        repo = self.config.repo or LOCAL_REPO
        assert self.job.commit_sha is not None
        self.post(forge.status(repo, self.job.commit_sha, state, CONTEXT.format(host=host),
                               f"job {self.job.id}: {description}", job_url(self.config, self.job.id, host)))

    def run(self, on_hosts: Callable[[list[str]], None]) -> dict[str, Any]:
        """Fetch, list the hosts at the commit, post pending, check, post the final statuses."""
        sha = self.job.commit_sha
        assert sha is not None
        repo_dir = self.config.state_dir / "mirror.git"
        url = self._clone_url()
        self.log(f"fetching {sha} ({self.job.ref}) from {mirror.redact(url)}")
        mirror.fetch(repo_dir, url, self.job.ref or sha, sha)
        view = GitTree(repo_dir, sha)
        hosts = list_hosts(view)
        on_hosts(hosts)
        self.log(f"hosts at {sha[:12]}: {', '.join(hosts) or 'none'}")
        for host in hosts:
            self.status(host, "pending", "checking parity")
        self.kick()
        plans = self._plans(view, hosts)
        try:
            kernel = KernelTree(self.config.kernel_tree) if self.config.kernel_tree else None
        except KaError as exc:
            for p in plans:
                self._error(p.manifest.host, str(exc))
        else:
            promote_many(self._with_baseline(plans, kernel), kernel, sha, on_done=self._done)
        return self.results()

    def _clone_url(self) -> str:
        """KA_REPO_URL, else the delivery's clone URL, which must be a network URL."""
        url = self.config.repo_url or self.job.clone_url
        if not url:
            raise mirror.FetchError("no clone URL: the delivery had none and KA_REPO_URL is unset")
        if not self.config.repo_url and not mirror.is_remote(url):
            raise mirror.FetchError(f"the delivery's clone URL {mirror.redact(url)!r} is not a remote URL; "
                                    "set KA_REPO_URL to fetch from a local path")
        return url

    def _error(self, host: str, message: str) -> None:
        self._record(host, HostOutcome("error", message, {"error": message}))

    def _plans(self, view: GitTree, hosts: list[str]) -> list[HostPlan]:
        plans = []
        for host in hosts:
            try:
                plans.append(plan_host(view, host))
            except KaError as exc:
                self._error(host, f"invalid at this commit: {str(exc).splitlines()[0]}")
            except Exception as exc:  # one host's broken tree must not take the others down
                self._error(host, f"cannot read at this commit: {type(exc).__name__}: {exc}")
        return plans

    def _with_baseline(self, plans: list[HostPlan], kernel: KernelTree | None) -> list[HostPlan]:
        """The plans whose baseline the kernel tree has; the others get an error status."""
        if kernel is None:
            return plans
        missing: dict[str, str | None] = {}  # ref → why it is missing, once per ref, not once per host
        runnable = []
        for p in plans:
            ref = p.manifest.baseline_ref
            if ref not in missing:
                try:
                    kernel.commit(ref, "baseline.ref")
                    missing[ref] = None
                except KaError as exc:
                    missing[ref] = str(exc)
            if missing[ref] is None:
                runnable.append(p)
            else:
                self._error(p.manifest.host, f"kernel tree lacks the baseline: {p.manifest.path}: {missing[ref]}")
        return runnable

    def _done(self, result: PromoteResult) -> None:
        self._record(result.host, describe(result))

