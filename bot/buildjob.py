"""The build job: ``/ka build HOST`` runs ka-build on the commit the command named.

The manifest and patches come from that commit (a pull request's head, perhaps a fork's);
``fleet/infra.yaml`` (build hosts, repository, keys) comes from the default branch's head,
so a pull request can never send the build, or the signed packages, somewhere else.  The
build's output streams into the job log (live on the job page); its end posts the commit
status ``ka/build/<host>`` and the thread's reply (bot/endings.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot import mirror
from bot.links import host_status
from bot.services import Services
from bot.store import Job, insert_writes
from ka.baseline import KernelTree
from ka.build import DEFAULT_PACKAGER, BuildError, BuildOptions, build
from ka.infra import load_infra
from ka.repo import GitTree

Log = Callable[[str], None]


def run_build(services: Services, job: Job, log: Log, kick: Callable[[], None]) -> dict[str, Any]:
    """Fetch, read the infrastructure at the default branch, build; the result for the job record."""
    config, store = services.config, services.store
    assert job.commit_sha is not None and job.host is not None
    with store.tx() as db:
        insert_writes(db, job.id, [host_status(config, job, "build", "pending", f"building {job.host}")])
    kick()
    mirror_dir = mirror.fetch_commit(config, job.clone_url, job.ref or job.commit_sha, job.commit_sha)
    branch, head = services.forge.default_branch()
    mirror.fetch_commit(config, job.clone_url, f"refs/heads/{branch}", head)
    infra = load_infra(GitTree(mirror_dir, head, config.limits))
    log(f"infra.yaml from {branch} at {head[:12]}: build hosts "
        f"{', '.join(b.ssh for b in infra.build_hosts) or 'none'}")
    opts = BuildOptions(out_dir=config.state_dir / "builds" / f"job-{job.id}", ssh=config.ssh,
                        packager=config.packager or DEFAULT_PACKAGER, gnupghome=config.gnupghome,
                        canonical_cache=config.state_dir / "canonical-cache")
    kernel = KernelTree(config.kernel_tree) if config.kernel_tree else None
    view = GitTree(mirror_dir, job.commit_sha, config.limits)
    try:
        result = build(view, job.host, infra, kernel, opts, log=log, phase=lambda name: log(f"== {name}"))
    except BuildError as exc:
        if exc.result is not None:
            store.set_result(job.id, exc.result.as_dict())
        raise
    return result.as_dict()
