"""Where the bot's writes point: the job pages it links to, the repository it writes against."""

from __future__ import annotations

from urllib.parse import quote

from bot.config import Config
from bot.forge import client as forge
from bot.store import Job

LOCAL_REPO = "local/kernel-agent"  # what local mode records writes against when KA_REPO is unset


def job_url(config: Config, job_id: int, host: str | None = None) -> str:
    """The job page, anchored at a host."""
    return f"{config.public_url.rstrip('/')}/jobs/{job_id}" + (f"#host-{quote(host, safe='')}" if host else "")


def repo_of(config: Config) -> str:
    """``owner/name`` the bot writes to (statuses, comments)."""
    return config.repo or LOCAL_REPO


def host_status(config: Config, job: Job, kind: str, state: str, text: str, host: str | None = None) -> forge.Write:
    """The commit status ``ka/<kind>/<host>`` of a build or install job (``host``: one of a job of many),
    linking to its page (at that host)."""
    name = host or job.host
    assert job.commit_sha is not None and name is not None
    return forge.status(repo_of(config), job.commit_sha, state, f"ka/{kind}/{name}", f"job {job.id}: {text}",
                        job_url(config, job.id, host))
