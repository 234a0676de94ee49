"""The web app: ``create_app`` (the flaskr factory), webhook intake and the job pages."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, render_template, request

from bot import config as config_mod
from bot.config import Config
from bot.forge import outbox
from bot.jobs import live as running_fleet
from bot.services import Services, make_services
from bot.store import FINAL, JOB_STATES, HostResult, Job
from bot.web import metrics
from bot.web.intake import receive
from bot.web.serving import RequestTimeout
from handlers import router
from ka.fleet.manifest import HOST_RE

log = logging.getLogger(__name__)
PAGES = Path(__file__).resolve().parents[2] / "templates" / "pages"
LOG_TAIL = 200_000
PAGE_SIZE, PAGE_MAX = 50, 200
HOSTS_PAGE, HOSTS_MAX = 500, 2000
ID_MAX = 2**63 - 1  # SQLite's integer range: a larger id is no job, not an OverflowError
VERBS = ("parity", "commands", "build", "install", "rollback")
#: One delivery at a time per process once its body is in: the work is CPU (HMAC, JSON) and one
#: commit, which threads cannot run in parallel anyway; queueing here instead of on the GIL and
#: SQLite's lock took intake from 770 to 960 deliveries/s and its p99 from 56 to 45 ms.
_INTAKE = threading.Lock()


@dataclass(frozen=True)
class FleetRow:
    """A host on the fleet page: its latest parity on the default branch, its last build and install."""

    result: HostResult
    build: Job | None
    install: Job | None

    def as_dict(self) -> dict[str, Any]:
        return {**self.result.__dict__, "build": _job_json(self.build) if self.build else None,
                "install": _job_json(self.install) if self.install else None}


class BodyError(Exception):
    """The request body could not be read in full; ``status`` is the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_body(environ: dict[str, Any], max_body: int, timeout: float) -> bytes:
    """The whole request body, read against a deadline and a size cap (chunked bodies too).

    A client that sends slowly holds a web thread for at most ``timeout`` seconds in all;
    a body over ``max_body`` is refused as soon as it passes the cap, not cut short.
    """
    length = environ.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > max_body:
        raise BodyError(413, f"body of {length} bytes is over the {max_body}-byte limit")
    stream, sock = environ["wsgi.input"], environ.get("gunicorn.socket")
    deadline = time.monotonic() + timeout
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if isinstance(sock, socket.socket):
                sock.settimeout(remaining)
            chunk = stream.read(min(65536, max_body + 1 - size))
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
            size += len(chunk)
            if size > max_body:
                raise BodyError(413, f"body is over the {max_body}-byte limit")
    except (TimeoutError, RequestTimeout):
        raise BodyError(408, f"body not received within {timeout:g}s") from None
    except BodyError:
        raise
    except Exception as exc:  # gunicorn's InvalidChunkSize, a dropped connection, …
        raise BodyError(400, f"unreadable body: {type(exc).__name__}: {exc}"[:300]) from None
    finally:
        if isinstance(sock, socket.socket):
            sock.settimeout(None)


def create_app(config: Config | None = None, services: Services | None = None) -> Flask:
    """Build the app.  Without arguments the settings come from ``KA_CONFIG`` and the environment."""
    if services is None:
        cfg = config or config_mod.load()
        cfg.require_secret()
        services = make_services(cfg)
    app = Flask(__name__, template_folder=str(PAGES))
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_body
    app.extensions["ka"] = services
    app.add_template_filter(_when, "when")

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"local_mode": services.config.local_mode, "permissions": services.config.local_permissions}

    @app.get("/")
    def fleet() -> Any:
        branch = services.store.get("default_branch") or "main"
        job = services.store.latest_parity(f"refs/heads/{branch}")
        rows = [FleetRow(r, _last(services, "build", r.host), _last(services, "install", r.host))
                for r in (services.store.host_results(job.id, 0, HOSTS_MAX) if job else [])]
        running = running_fleet.stored(services)
        if _wants_json():
            return jsonify({"branch": branch, "job": _job_json(job) if job else None,
                            "hosts": [r.as_dict() for r in rows], "live": running})
        return render_template("fleet.html", branch=branch, job=job, rows=rows, live_head=running_fleet.HEAD,
                               live_rows=[(r, running_fleet.cells(r)) for r in running])

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        try:
            body = read_body(request.environ, services.config.max_body, services.config.body_timeout)
        except BodyError as exc:
            log.warning("delivery refused (%d): %s", exc.status, exc)
            return jsonify({"error": str(exc)}), exc.status
        with _INTAKE:
            reply = receive(services.store, router, services.config, dict(request.headers), body)
        return jsonify(reply.body), reply.status

    @app.get("/jobs")
    def jobs() -> Any:
        limit = min(_int_arg("limit", PAGE_SIZE, minimum=1), PAGE_MAX)
        before = request.args.get("before")
        filters = _filters()
        rows = services.store.jobs(limit, _id(before) if before else None, **filters)
        older = rows[-1].id if len(rows) == limit else None
        if _wants_json():
            return jsonify({"jobs": [_job_json(j) for j in rows], "older": older})
        return render_template("jobs.html", jobs=rows, older=older, limit=limit, filters=filters,
                               verbs=VERBS, states=JOB_STATES,
                               active=any(j.state in ("queued", "running") for j in rows))

    @app.get("/jobs/<job_id>")
    def job(job_id: str) -> Any:
        record = services.store.job(_id(job_id)) or abort(404)
        offset = _int_arg("hosts_offset", 0)
        limit = min(_int_arg("hosts_limit", HOSTS_PAGE, minimum=1), HOSTS_MAX)
        hosts = services.store.host_results(record.id, offset, limit)
        writes = services.store.writes_of(record.id)
        if _wants_json():
            return jsonify({**_job_json(record), "hosts": [h.__dict__ for h in hosts], "hosts_offset": offset,
                            "writes": [dict(w) for w in writes]})
        log_path = services.log_dir / f"{record.id}.log"
        text, end = _tail(log_path)
        return render_template("job.html", job=record, hosts=hosts, offset=offset, limit=limit, writes=writes,
                               log=text, log_end=end, audit=services.store.audit(job_id=record.id, limit=200),
                               counts=services.store.host_counts(record.id))

    @app.get("/jobs/<job_id>/live")
    def live(job_id: str) -> Any:
        """What a job page needs to follow a running job: its state, counts, and the log from ``offset`` on."""
        record = services.store.job(_id(job_id)) or abort(404)
        text, end = _tail(services.log_dir / f"{record.id}.log", _int_arg("offset", 0))
        return jsonify({"state": record.state, "error": record.error, "counts": services.store.host_counts(record.id),
                        "log": text, "offset": end, "final": record.state in FINAL,
                        "finished": _when(record.finished_at)})

    @app.get("/healthz")
    def healthz() -> Any:
        services.store.ping()
        return jsonify({"ok": True, "outbox_backlog": outbox.backlog(services.store),
                        "local_mode": services.config.local_mode})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(services.store), mimetype="text/plain; version=0.0.4")

    return app


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


def _last(services: Services, verb: str, host: str) -> Job | None:
    found = services.store.jobs(1, host=host, verb=verb)
    return found[0] if found else None


def _wants_json() -> bool:
    return request.args.get("format") == "json" or request.accept_mimetypes.best == "application/json"


def _job_json(job: Job) -> dict[str, Any]:
    return {k: getattr(job, k) for k in ("id", "verb", "host", "commit_sha", "ref", "requester", "state", "created_at",
                                          "started_at", "finished_at", "host_count", "args", "result", "error")}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""
