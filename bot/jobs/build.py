"""The build job: ``/ka build HOST`` runs ka-build on the commit the command named.

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
from collections.abc import Callable
from typing import Any

from bot import mirror, public
from bot.forge.links import host_status
from bot.jobs.trusted import default_head, named_references
from bot.services import Services
from bot.store import Job, insert_writes
from ka.build.flow import DEFAULT_PACKAGER, BuildError, BuildOptions, build
from ka.errors import ReferenceUnavailable
from ka.fleet.repo import GitTree
from ka.promote.baseline import KernelTree

Log = Callable[[str], None]
log_ = logging.getLogger(__name__)


def run_build(services: Services, job: Job, log: Log, kick: Callable[[], None]) -> dict[str, Any]:
    """Fetch, read the infrastructure at the default branch, build; the result for the job record."""
    config, store = services.config, services.store
    assert job.commit_sha is not None and job.host is not None
    with store.tx() as db:
        insert_writes(db, job.id, [host_status(config, job, "build", "pending", f"building {job.host}")])
    kick()
    mirror_dir = mirror.fetch_commit(config, job.clone_url, job.ref or job.commit_sha, job.commit_sha)
    head = default_head(services, job.clone_url)
    trusted = head.holds(job.commit_sha)
    hosts = head.infra.build_hosts if trusted else head.infra.pull_request_build_hosts
    log(f"infra.yaml from {head.branch} at {head.sha[:12]}: "
        + ("build hosts " if trusted else f"{job.commit_sha[:12]} is not on {head.branch}: pull request build hosts ")
        + (", ".join(b.ssh for b in hosts) or "none"))
    opts = BuildOptions(out_dir=config.state_dir / "builds" / f"job-{job.id}", ssh=config.ssh,
                        packager=config.packager or DEFAULT_PACKAGER, gnupghome=config.gnupghome,
                        canonical_cache=config.state_dir / "canonical-cache", trusted=trusted,
                        named_references=None if trusted else frozenset(named_references(head, config.limits)))
    kernel = KernelTree(config.kernel_tree) if config.kernel_tree else None
    view = GitTree(mirror_dir, job.commit_sha, config.limits)
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
