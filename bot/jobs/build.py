"""The build job: ``/ka build HOST…`` runs ka-build on the commit the command named (several hosts at once,
each on a free build slot: ka/build/many.py).

The manifest and patches come from that commit (a pull request's head, perhaps a fork's);
``fleet/infra.yaml`` (build hosts, repository, keys) comes from the default branch's head,
so a pull request can never send the build, or the signed packages, somewhere else.  A commit
that is not on the default branch is a pull request's: its code runs on the build host, so it
builds on ``pull_request_build_hosts`` (another account or machine) and is neither signed nor
published.  The build's output streams into the job log (live on the job page); its end posts
the commit status ``ka/build/<host>`` and the thread's reply (bot/jobs/endings.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from bot import mirror, public
from bot.forge.links import host_status
from bot.jobs.trusted import default_head, named_references
from bot.services import Services
from bot.store import HostResult, Job, insert_writes
from ka.build.flow import DEFAULT_PACKAGER, BuildError, BuildOptions, build
from ka.build.many import BUILT, FAILED, HostBuild, build_many
from ka.errors import ReferenceUnavailable
from ka.fleet.infra import Infra
from ka.fleet.repo import GitTree
from ka.promote.baseline import KernelTree

Log = Callable[[str], None]
log_ = logging.getLogger(__name__)


def run_build(services: Services, job: Job, log: Log, kick: Callable[[], None]) -> dict[str, Any]:
    """Fetch, read the infrastructure at the default branch, build; the result for the job record."""
    config, store = services.config, services.store
    assert job.commit_sha is not None
    hosts = [job.host] if job.host else list(job.args.get("hosts") or [])
    if job.host:
        with store.tx() as db:
            insert_writes(db, job.id, [host_status(config, job, "build", "pending", f"building {job.host}")])
    else:
        store.set_hosts(job.id, hosts, [host_status(config, job, "build", "pending", f"building {h}", h)
                                        for h in hosts])
    kick()
    mirror_dir = mirror.fetch_commit(config, job.clone_url, job.ref or job.commit_sha, job.commit_sha)
    head = default_head(services, job.clone_url)
    trusted = head.holds(job.commit_sha)
    machines = head.infra.build_hosts if trusted else head.infra.pull_request_build_hosts
    log(f"infra.yaml from {head.branch} at {head.sha[:12]}: "
        + ("build hosts " if trusted else f"{job.commit_sha[:12]} is not on {head.branch}: pull request build hosts ")
        + (", ".join(b.ssh for b in machines) or "none"))
    opts = BuildOptions(out_dir=config.state_dir / "builds" / f"job-{job.id}", ssh=config.ssh,
                        packager=config.packager or DEFAULT_PACKAGER, gnupghome=config.gnupghome,
                        canonical_cache=config.state_dir / "canonical-cache", trusted=trusted,
                        named_references=None if trusted else frozenset(named_references(head, config.limits)))
    kernel = KernelTree(config.kernel_tree) if config.kernel_tree else None
    view = GitTree(mirror_dir, job.commit_sha, config.limits)
    if not job.host:
        return _build_many(services, job, hosts, view, head.infra, kernel, opts, log, kick)
    try:
        result = build(view, job.host, head.infra, kernel, opts, log=log, phase=lambda name: log(f"== {name}"))
    except BuildError as exc:
        if exc.result is not None:
            store.set_result(job.id, public.scrub_tree(services.scrub, exc.result.as_dict()))
        raise
    except ReferenceUnavailable as exc:  # which host, path and error: the operator's log, not the thread
        log_.warning("job %s: %s", job.id, exc)
        raise BuildError(f"{job.host}: {exc.public} (the bot's log says why); nothing was built") from None
    return result.as_dict()


def _build_many(services: Services, job: Job, hosts: list[str], view: GitTree, infra: Infra,
                kernel: KernelTree | None, opts: BuildOptions, log: Log, kick: Callable[[], None]) -> dict[str, Any]:
    """Several hosts' builds at once (ka/build/many.py): each host's end is its row and its ``ka/build/<host>``
    status as soon as it ends; the job's result counts them, so a job with a failed host ends failed."""
    config, store = services.config, services.store
    builds = [HostBuild(h) for h in hosts]

    def changed(hb: HostBuild) -> None:
        if hb.state not in (BUILT, FAILED):
            log(f"{hb.host}: == {hb.state}")
            return
        row = _row(services, hb)
        store.record_host(job.id, row, host_status(config, job, "build", row.state, row.description, hb.host))
        kick()

    build_many(view, builds, infra, kernel, opts, log_for=lambda host: lambda line: log(f"{host}: {line}"),
               changed=changed)
    # each host's row is in the job's hosts already (its page and reply read them there): the counts decide
    return {"states": dict(Counter("success" if b.state == BUILT else "failure" for b in builds))}


def _row(services: Services, hb: HostBuild) -> HostResult:
    """A host's row: what was built and where, or why not, in public words."""
    r = hb.result
    if hb.state == BUILT and r is not None:
        where = (f", published to {r.published.host}" if r.published else
                 ", not published: a pull request's build" if r.unpublished else "")
        text, state = f"{r.pkgbase} {r.version} built on {r.build_host}{where}", "success"
    else:
        text, state = services.scrub(hb.error or "failed"), "failure"
    detail = public.scrub_tree(services.scrub, hb.as_dict())
    return HostResult(hb.host, state, text, detail)
