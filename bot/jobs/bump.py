"""The bump job: ``/ka bump TAG [HOST…]`` moves hosts to a new baseline through a pull request.

It runs ``ka baseline bump`` (ka/promote/bump.py) on a clone of the default branch's head with the
bot's kernel tree, commits the edited manifests on a branch of its own (``ka/bump-<tag>-job<id>``,
so that no run touches another's), pushes it to the repository the bot fetches from, and opens a
pull request against the default branch whose description is the per-host table: moved, or the
first patch that no longer applies and its hunk.  The pull request's parity statuses then run as
for any pull request; nothing is merged here.  No host moving is an answer, not a failure.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from bot import mirror
from bot.forge import client as forge
from bot.forge.links import repo_of
from bot.forge.replies import render
from bot.services import Services
from bot.store import Job
from ka.errors import KaError
from ka.fleet.manifest import list_hosts
from ka.fleet.repo import WorkTree
from ka.io.runner import run
from ka.promote.baseline import KernelTree
from ka.promote.bump import MOVED, check_ref, plan_bump, write

Log = Callable[[str], None]
AUTHOR = {"GIT_AUTHOR_NAME": "kernel-agent", "GIT_AUTHOR_EMAIL": "kernel-agent@localhost",
          "GIT_COMMITTER_NAME": "kernel-agent", "GIT_COMMITTER_EMAIL": "kernel-agent@localhost"}


class BumpError(KaError):
    """The bump could not be made (no kernel tree, a push the forge refused)."""


def run_bump(services: Services, job: Job, log: Log, kick: Callable[[], None]) -> dict[str, Any]:
    """Check, edit, commit, push, open the pull request; the result for the job record and reply."""
    config = services.config
    to, base = check_ref(str(job.args["to"])), str(job.args["branch"])
    if config.kernel_tree is None:
        raise BumpError(f"the bot has no kernel tree (KA_KERNEL_TREE): it cannot check the patches on {to}")
    assert job.commit_sha is not None
    source = mirror.fetch_commit(config, job.clone_url, job.ref or job.commit_sha, job.commit_sha)
    work = config.state_dir / "bumps" / f"job-{job.id}"
    shutil.rmtree(work, ignore_errors=True)
    branch = f"ka/bump-{to}-job{job.id}"
    try:
        run(["git", "clone", "--quiet", "--no-checkout", "--", str(source), str(work)], timeout=600)
        run(["git", "-C", work, "checkout", "--quiet", "-b", branch, job.commit_sha], timeout=600)
        view = WorkTree(work, config.limits)
        rows, edits = plan_bump(view, job.args.get("hosts") or list_hosts(view), to, KernelTree(config.kernel_tree))
        for r in rows:
            log(f"{r.host}: {r.state}" + (f": {r.failure.patch}: {r.failure.detail}" if r.failure else ""))
        result: dict[str, Any] = {"bump": {"to": to, "base": base, "rows": [r.as_dict() for r in rows],
                                           "moved": sum(r.state == MOVED for r in rows), "pull": None}}
        if edits:
            write(work, edits)
            result["bump"].update(_propose(services, job, work, branch, result["bump"], log))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _propose(services: Services, job: Job, work: Any, branch: str, bump: dict[str, Any], log: Log) -> dict[str, Any]:
    """Commit, push the branch, open the pull request; what the reply links."""
    to = bump["to"]
    run(["git", "-C", work, "commit", "--quiet", "-am", f"Move {bump['moved']} hosts to {to} (ka baseline bump)\n\n"
         f"Asked by {job.requester.get('who')} in job {job.id}."], env=AUTHOR, timeout=60)
    url = mirror.clone_url(services.config.repo_url, job.clone_url)
    bare, env = mirror.git_credentials(url)
    pushed = run(["git", "-C", work, "push", "--quiet", "--", bare, f"HEAD:refs/heads/{branch}"], env=env,
                 check=False, timeout=600)
    if not pushed.ok:
        raise BumpError(f"pushing {branch} to {mirror.redact(url)} failed: "
                        f"{mirror.redact_text(pushed.err().strip(), url)[-300:]}")
    log(f"pushed {branch}")
    body = render("bump.md.j2", bump=bump, job=job)
    made = services.forge.send(forge.pull_request(repo_of(services.config), branch, bump["base"],
                                                  f"Move hosts to {to}", body))
    return {"branch": branch, "pull": made.get("html_url"), "number": made.get("number")}
