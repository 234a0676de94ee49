"""The bot's pages: the fleet, the job list, a job with its hosts, writes and log, and what a job page
polls while a job runs.  Each answers JSON too (``?format=json`` or ``Accept: application/json``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, jsonify, render_template, request

from bot.jobs import live as running_fleet
from bot.store import FINAL, JOB_STATES, HostResult, Job
from bot.web.context import services
from bot.web.writes import shown
from ka.fleet.manifest import HOST_RE

pages = Blueprint("pages", __name__)
PAGES = Path(__file__).resolve().parents[2] / "templates" / "pages"
LOG_TAIL = 200_000
PAGE_SIZE, PAGE_MAX = 50, 200
HOSTS_PAGE, HOSTS_MAX = 500, 2000
ID_MAX = 2**63 - 1  # SQLite's integer range: a larger id is no job, not an OverflowError
VERBS = ("parity", "commands", "build", "install", "rollback")


@dataclass(frozen=True)
class FleetRow:
    """A host on the fleet page: its latest parity on the default branch, its last build and install."""

    result: HostResult
    build: Job | None
    install: Job | None

    def as_dict(self) -> dict[str, Any]:
        return {**self.result.__dict__, "build": _job_json(self.build) if self.build else None,
                "install": _job_json(self.install) if self.install else None}


@pages.get("/")
def fleet() -> Any:
    branch = services().store.get("default_branch") or "main"
    job = services().store.latest_parity(f"refs/heads/{branch}")
    rows = [FleetRow(r, _last("build", r.host), _last("install", r.host))
            for r in (services().store.host_results(job.id, 0, HOSTS_MAX) if job else [])]
    running = running_fleet.stored(services())
    if _wants_json():
        return jsonify({"branch": branch, "job": _job_json(job) if job else None,
                        "hosts": [r.as_dict() for r in rows], "live": running})
    return render_template("fleet.html", branch=branch, job=job, rows=rows, live_head=running_fleet.HEAD,
                           live_rows=[(r, running_fleet.cells(r)) for r in running])


@pages.get("/jobs")
def jobs() -> Any:
    limit = min(_int_arg("limit", PAGE_SIZE, minimum=1), PAGE_MAX)
    before = request.args.get("before")
    filters = _filters()
    rows = services().store.jobs(limit, _id(before) if before else None, **filters)
    older = rows[-1].id if len(rows) == limit else None
    if _wants_json():
        return jsonify({"jobs": [_job_json(j) for j in rows], "older": older})
    return render_template("jobs.html", jobs=rows, older=older, limit=limit, filters=filters,
                           verbs=VERBS, states=JOB_STATES,
                           active=any(j.state in ("queued", "running") for j in rows))


@pages.get("/jobs/<job_id>")
def job(job_id: str) -> Any:
    record = services().store.job(_id(job_id)) or abort(404)
    offset = _int_arg("hosts_offset", 0)
    limit = min(_int_arg("hosts_limit", HOSTS_PAGE, minimum=1), HOSTS_MAX)
    hosts = services().store.host_results(record.id, offset, limit)
    writes = services().store.writes_of(record.id)
    if _wants_json():
        return jsonify({**_job_json(record), "hosts": [h.__dict__ for h in hosts], "hosts_offset": offset,
                        "writes": [dict(w) for w in writes]})
    log_path = services().log_dir / f"{record.id}.log"
    text, end = _tail(log_path)
    return render_template("job.html", job=record, hosts=hosts, offset=offset, limit=limit,
                           writes=[shown(w) for w in writes], asked_url=_forge_link(record.requester.get("url")),
                           log=text, log_end=end, audit=services().store.audit(job_id=record.id, limit=200),
                           counts=services().store.host_counts(record.id))


def _forge_link(url: object) -> str | None:
    """A link into the forge the bot serves; none in local mode, where there is no forge to link to."""
    forge = services().config.forgejo_url
    if not isinstance(url, str) or services().config.local_mode or not forge:
        return None
    return url if url.startswith(forge.rstrip("/") + "/") else None


@pages.get("/jobs/<job_id>/live")
def live(job_id: str) -> Any:
    """What a job page needs to follow a running job: its state, counts, and the log from ``offset`` on."""
    record = services().store.job(_id(job_id)) or abort(404)
    text, end = _tail(services().log_dir / f"{record.id}.log", _int_arg("offset", 0))
    return jsonify({"state": record.state, "error": record.error, "counts": services().store.host_counts(record.id),
                    "log": text, "offset": end, "final": record.state in FINAL,
                    "finished": when(record.finished_at)})


def _id(text: str) -> int:
    """A job id from the URL; 404 for anything that is not one."""
    if not text.isdigit() or not text.isascii() or int(text) > ID_MAX:
        abort(404)
    return int(text)


def _int_arg(name: str, default: int, minimum: int = 0) -> int:
    value = request.args.get(name, "")
    if not value:
        return default
    if not value.isdigit() or not value.isascii() or len(value) > 9 or int(value) < minimum:
        abort(400, f"{name}: not a count of at least {minimum}")
    return int(value)


def _tail(path: Path, offset: int | None = None) -> tuple[str, int]:
    """The log from byte ``offset`` (default: its last 200 KB), at most 200 KB of it, and where it ends."""
    try:
        with open(path, "rb") as fh:
            end = fh.seek(0, 2)
            start = max(0, end - LOG_TAIL) if offset is None else min(max(offset, end - LOG_TAIL), end)
            fh.seek(start)
            data = fh.read(end - start)
    except OSError:
        return "", 0
    cut = data.rfind(b"\n") + 1 if offset is not None else len(data)  # whole lines only, while it grows
    return data[:cut].decode("utf-8", "replace"), start + cut


def _filters() -> dict[str, str | None]:
    """``/jobs`` filters, checked: an unknown verb or state is a 400, not an empty page."""
    host, verb, state = (request.args.get(k) or None for k in ("host", "verb", "state"))
    if host is not None and not HOST_RE.fullmatch(host):
        abort(400, "host: not a host name")
    if verb is not None and verb not in VERBS:
        abort(400, f"verb: one of {', '.join(VERBS)}")
    if state is not None and state not in JOB_STATES:
        abort(400, f"state: one of {', '.join(JOB_STATES)}")
    return {"host": host, "verb": verb, "state": state}


def _last(verb: str, host: str) -> Job | None:
    found = services().store.jobs(1, host=host, verb=verb)
    return found[0] if found else None


def _wants_json() -> bool:
    return request.args.get("format") == "json" or request.accept_mimetypes.best == "application/json"


def _job_json(job: Job) -> dict[str, Any]:
    return {k: getattr(job, k) for k in ("id", "verb", "host", "commit_sha", "ref", "requester", "state", "created_at",
                                          "started_at", "finished_at", "host_count", "args", "result", "error")}


def when(ts: float | None) -> str:
    """A time stamp as the pages show it (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""
