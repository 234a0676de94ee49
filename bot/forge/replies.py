"""What the bot writes in threads: acknowledgements, terminal replies, the status table.

Comment bodies are Jinja templates in ``templates/comments/``.  Everything that comes from a
commit or a delivery (host descriptions, reasons, logins) goes through the ``code`` filter:
inside a code span it cannot mention anyone, link anywhere or break the table around it.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from bot.config import Config
from bot.forge.links import job_url
from bot.public import scrubber
from bot.store import HostResult, Job, Store, host_results
from ka.text import cap, encodable

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "comments"
TABLE_ROWS = 100
LOG_LINES = 20
_LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def code(text: object) -> str:
    """Text made safe for a markdown code span: no backticks, no line breaks, capped."""
    return encodable(cap(str(text), 300)).replace("`", "'").replace("\r", " ").replace("\n", " ")


def cell(text: object) -> str:
    """Text made safe for a table cell (pipes escaped)."""
    return code(text).replace("|", "\\|")


def span(text: object) -> str:
    """Untrusted text as a code span, safe in a table cell: a span renders no mention, link or image."""
    return f"`{cell(text)}`" if str(text) else ""


_ENV = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, autoescape=False,  # noqa: S701 - markdown, not HTML: the code filter does the escaping
                   trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
_ENV.filters["code"] = code
_ENV.filters["cell"] = cell
_ENV.filters["span"] = span


def render(name: str, **context: Any) -> str:
    """A comment template, rendered."""
    return _ENV.get_template(name).render(**context).strip() + "\n"


def mention(login: str | None) -> str:
    """``@login`` when it is a login, else the text in a code span (never a surprise mention)."""
    if login and _LOGIN.fullmatch(login):
        return f"@{login}"
    return f"`{code(login or 'someone')}`"


def duration(job: Job) -> str:
    """How long a job ran, in words."""
    seconds = job.seconds or 0.0
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def log_tail(path: Path, lines: int = LOG_LINES) -> str:
    """The last lines of a job's log, safe inside a fenced block."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:]).replace("```", "'''")


OUTCOME = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled",
           "interrupted": "interrupted by a restart of the bot"}


def host_rows(results: list[HostResult]) -> list[dict[str, Any]]:
    """Per-host table rows of a parity job."""
    rows = []
    for r in results:
        d = r.detail
        applies = {True: "yes", False: "**no**", None: "not checked"}.get(d.get("applies"), "—")
        rows.append({"host": r.host, "state": r.state, "b2sum": d.get("b2sum"), "baseline": d.get("baseline") or "—",
                     "applies": applies if "applies" in d else "—",
                     "parity": d.get("parity") or (r.description if r.state == "error" else "—"),
                     # a build of several hosts: where each was built, what, or why not
                     "build_host": d.get("build_host") or "—", "version": d.get("version") or "—",
                     "why": r.description if r.state != "success" else "",
                     # a rollout's: its wave, how it ended, the kernel before and after, the backup
                     "wave": d.get("wave"), "outcome": d.get("outcome") or r.state, "backup": d.get("backup") or "—",
                     "kernel": (f"{d.get('old_release') or '?'} → {d.get('new_release') or '?'}"
                                if d.get("old_release") or d.get("new_release") else "—")})
    return rows


def result_comment(config: Config, db: sqlite3.Connection, job: Job, log_path: Path) -> str:
    """The terminal reply of a job a command asked for."""
    req = job.requester
    rows = host_results(db, job.id, 0, TABLE_ROWS)
    failed = job.state != "succeeded"
    text = render("result.md.j2", job=job, command=req.get("command") or job.verb, mention=mention(req.get("who")),
                  outcome=OUTCOME.get(job.state, job.state), duration=duration(job), job_url=job_url(config, job.id),
                  reason=job.error if failed else "", reason_word="why", rows=host_rows(rows),
                  more=max(0, job.host_count - TABLE_ROWS), log=log_tail(log_path),
                  fallback=fallback(job), retry=job.verb in ("parity", "build"),
                  artifacts=job.result.get("artifacts") or [], build_host=job.result.get("build_host"),
                  build_fallback=job.result.get("fallback") or [], repository=job.result.get("repository"),
                  kept=job.result.get("kept"), unpublished=job.result.get("unpublished"),
                  audit=job.result.get("audit") or [], bump=job.result.get("bump"),
                  install=job.result if job.verb in ("install", "rollback") and job.host else None)  # (a rollout: rows)
    return scrubber(config.state_dir, config.kernel_tree)(text)  # the parts are scrubbed at the source; the net


def fallback(job: Job) -> str:
    """The command that does by hand what the job did."""
    sha = job.commit_sha or "HEAD"
    if job.verb == "parity":
        hosts = job.args.get("hosts")
        who = " ".join(hosts) if hosts else "--all"
        return f"ka-promote {who} --rev {sha} --kernel-tree $KA_KERNEL_TREE   # in a clone of the fleet repository"
    if job.verb == "build":
        hosts = job.host or " ".join(job.args.get("hosts") or []) or "--all"
        return f"ka-build {hosts} --rev {sha} --kernel-tree $KA_KERNEL_TREE   # in a clone of the fleet repository"
    if job.verb == "bump":
        hosts = job.args.get("hosts")
        return (f"ka baseline bump --to {job.args.get('to')} {' '.join(hosts) if hosts else '--all'}   # in a "
                "clone of the fleet repository, then commit and open the pull request")
    if job.verb in ("install", "rollback"):
        flags = " --rollback" if job.verb == "rollback" else (" --no-reboot" if job.args.get("no_reboot") else "")
        flags += " --parallel" if job.args.get("parallel") and not job.host else ""
        hosts = job.host or " ".join(job.args.get("hosts") or [])
        return f"ka-install {hosts}{flags} --rev {sha}   # in a clone of the fleet repository"
    return f"ka-{job.verb} {job.host or ''}".strip()


def status_comment(config: Config, store: Store, branch: str, hosts: list[str]) -> str:
    """The ``/ka status`` reply: per host, the latest parity on the default branch, last build, last install."""
    job = store.latest_parity(f"refs/heads/{branch}")
    results = store.host_results(job.id) if job else []
    known = {r.host: r for r in results}
    wanted = hosts or list(known)
    rows = []
    for host in [h for h in wanted if h in known][:TABLE_ROWS]:
        r = known[host]
        assert job is not None
        rows.append({"host": host, "state": r.state, "b2sum": r.detail.get("b2sum"),
                     "url": job_url(config, job.id, host), "build": _last(store, config, "build", host),
                     "install": _last(store, config, "install", host)})
    return render("status.md.j2", rows=rows, branch=branch, job=job, job_url=job_url(config, job.id) if job else "",
                  unknown=[h for h in wanted if h not in known] if job else [])


def _last(store: Store, config: Config, verb: str, host: str) -> str:
    jobs = store.jobs(1, host=host, verb=verb)
    if not jobs:
        return "—"
    return f"[{jobs[0].state}]({job_url(config, jobs[0].id)})"
