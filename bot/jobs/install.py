"""The install jobs: ``/ka install HOST [--no-reboot]`` and ``/ka rollback HOST`` run ka-install.

Everything an install acts on comes from the default branch's head at the moment the command
was accepted (the job's commit): the host's ``install`` settings (which commands run as root on
the host), ``fleet/infra.yaml`` (the repository, its key, the backup host).  A pull request can
ask for an install, never change how one is done.  The job streams its steps into the job log,
posts ``ka/install/<host>`` on that commit, and its end replies in the thread with the old and
new kernel, the backup and the heartbeat (bot/jobs/endings.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from bot import mirror, public
from bot.forge.links import host_status
from bot.jobs import live
from bot.services import Services
from bot.store import HostResult, Job, insert_writes
from ka.fleet.infra import Infra, load_infra
from ka.fleet.repo import GitTree
from ka.install.flow import install, rollback
from ka.install.installer import InstallError, InstallOptions, InstallResult
from ka.install.waves import DONE, ENDED, NOT_STARTED, HostInstall, plan, roll_out

Log = Callable[[str], None]
log_ = logging.getLogger(__name__)


def run_install(services: Services, job: Job, log: Log, kick: Callable[[], None]) -> dict[str, Any]:
    """Install (or roll back) ``job.host`` with the settings at the job's commit; the result for the record."""
    config, store = services.config, services.store
    assert job.commit_sha is not None
    hosts = [job.host] if job.host else list(job.args.get("hosts") or [])
    if job.host:
        with store.tx() as db:
            pending = host_status(config, job, "install", "pending", f"{job.verb} of {job.host} running")
            insert_writes(db, job.id, [pending])
    else:
        store.set_hosts(job.id, hosts, [host_status(config, job, "install", "pending", "waiting in the rollout", h)
                                        for h in hosts])
    kick()
    mirror_dir = mirror.fetch_commit(config, job.clone_url, job.ref or job.commit_sha, job.commit_sha)
    view = GitTree(mirror_dir, job.commit_sha, config.limits)
    infra = load_infra(view)
    who = job.requester.get("who") or "the bot"
    opts = InstallOptions(out_dir=config.state_dir / "installs" / f"job-{job.id}", ssh=config.ssh,
                          gnupghome=config.gnupghome, reboot=not job.args.get("no_reboot"),
                          who=f"kernel-agent job {job.id}, asked by {who}")
    log(f"settings from {job.ref} at {job.commit_sha[:12]}; backup host "
        f"{infra.backup.ssh if infra.backup else 'none'}")
    if not job.host:
        return _roll_out(services, job, hosts, view, infra, opts, log, kick)
    assert job.host is not None
    try:
        result: InstallResult = (rollback(view, job.host, infra, opts, log=log, phase=lambda n: log(f"== {n}"))
                                 if job.verb == "rollback" else
                                 install(view, job.host, infra, opts, log=log, phase=lambda n: log(f"== {n}")))
    except InstallError as exc:
        if exc.result is not None:
            store.set_result(job.id, public.scrub_tree(services.scrub, exc.result.as_dict()))
            for line in exc.result.recovery:
                log(f"way back: {line}")
        raise
    finally:
        _ask_again(services, job, log)
    return result.as_dict()


def _roll_out(services: Services, job: Job, hosts: list[str], view: GitTree, infra: Infra, opts: InstallOptions,
              log: Log, kick: Callable[[], None]) -> dict[str, Any]:
    """Several hosts in waves (ka/install/waves.py): each host's end is its row and its ``ka/install/<host>``
    status as it ends; a host not started after a failure gets an error status saying so.  The job's result
    counts them, so a rollout with a failed host ends failed."""
    config, store = services.config, services.store
    rows = plan(view, hosts)
    log("the rollout: " + "; ".join(f"wave {w}: " + ", ".join(r.host + (" (canary)" if r.canary else "")
                                                               for r in rows if r.wave == w)
                                    for w in sorted({r.wave for r in rows})))

    def changed(row: HostInstall) -> None:
        if row.state not in ENDED:
            log(f"{row.host}: == {row.state}")
            return
        result = _row(services, row)
        state = {"success": "success", "failure": "failure"}.get(result.state, "error")
        store.record_host(job.id, result, host_status(config, job, "install", state, result.description, row.host))
        kick()

    try:
        roll_out(view, rows, infra, opts, parallel=bool(job.args.get("parallel")),
                 log_for=lambda host: lambda line: log(f"{host}: {line}"), changed=changed)
    finally:
        _ask_again(services, job, log, hosts)
    return {"states": dict(Counter(_row(services, r).state for r in rows))}


def _row(services: Services, row: HostInstall) -> HostResult:
    """A host's row of a rollout: what it runs now, or why not, in public words."""
    r = row.result
    if row.state in DONE.values() and r is not None:
        text, state = (f"{r.version or ''} installed, reboot pending" if row.state == "pending reboot"
                       else f"install: runs {r.new_release}"), "success"
    elif row.state == NOT_STARTED:
        text, state = "not started: the rollout stopped at an earlier host; nothing was changed here", "skipped"
    else:
        text, state = services.scrub(f"{row.state}: {row.error or 'failed'}"), "failure"
    return HostResult(row.host, state, text, public.scrub_tree(services.scrub, row.as_dict()))


def _ask_again(services: Services, job: Job, log: Log, hosts: list[str] | None = None) -> None:
    """The fleet page shows the hosts as the install left them."""
    try:
        live.refresh(services, hosts or ([job.host] if job.host else None), job.clone_url)
    except Exception as exc:  # the install's outcome stands; the page catches up later
        log_.warning("job %s: fleet page of %s: %s: %s", job.id, job.host, type(exc).__name__, exc)
        log(f"could not ask {job.host} for the fleet page: {public.reason(exc)}")
