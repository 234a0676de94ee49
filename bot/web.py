"""The web app: ``create_app`` (the flaskr factory), webhook intake and the job pages."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, render_template, request

from bot import config as config_mod
from bot import metrics, outbox
from bot.config import Config
from bot.intake import receive
from bot.services import Services, make_services
from bot.serving import RequestTimeout
from bot.store import Job
from handlers import router

log = logging.getLogger(__name__)
PAGES = Path(__file__).resolve().parent.parent / "templates" / "pages"
LOG_TAIL = 200_000
PAGE_SIZE, PAGE_MAX = 50, 200
HOSTS_PAGE, HOSTS_MAX = 500, 2000
ID_MAX = 2**63 - 1  # SQLite's integer range: a larger id is no job, not an OverflowError
#: One delivery at a time per process once its body is in: the work is CPU (HMAC, JSON) and one
#: commit, which threads cannot run in parallel anyway; queueing here instead of on the GIL and
#: SQLite's lock took intake from 770 to 960 deliveries/s and its p99 from 56 to 45 ms.
_INTAKE = threading.Lock()


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
        return {"local_mode": services.config.local_mode}

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
        rows = services.store.jobs(limit, _id(before) if before else None)
        older = rows[-1].id if len(rows) == limit else None
        if _wants_json():
            return jsonify({"jobs": [_job_json(j) for j in rows], "older": older})
        return render_template("jobs.html", jobs=rows, older=older, limit=limit,
                               active=any(j.state in ("queued", "running") for j in rows))

    @app.get("/jobs/<job_id>")
    def job(job_id: str) -> Any:
        record = services.store.job(_id(job_id)) or abort(404)
        offset = _int_arg("hosts_offset", 0)
        limit = min(_int_arg("hosts_limit", HOSTS_PAGE, minimum=1), HOSTS_MAX)
        hosts = services.store.host_results(record.id, offset, limit)
        writes = services.store.query("SELECT * FROM outbox WHERE job_id = ? ORDER BY id LIMIT 200", record.id)
        if _wants_json():
            return jsonify({**_job_json(record), "hosts": [h.__dict__ for h in hosts], "hosts_offset": offset,
                            "writes": [dict(w) for w in writes]})
        log_path = services.log_dir / f"{record.id}.log"
        return render_template("job.html", job=record, hosts=hosts, offset=offset, limit=limit,
                               writes=writes, log=_tail(log_path))

    @app.get("/healthz")
    def healthz() -> Any:
        services.store.query("SELECT 1")
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


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - LOG_TAIL))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _wants_json() -> bool:
    return request.args.get("format") == "json" or request.accept_mimetypes.best == "application/json"


def _job_json(job: Job) -> dict[str, Any]:
    return {k: getattr(job, k) for k in ("id", "verb", "host", "commit_sha", "ref", "requester", "state",
                                          "created_at", "started_at", "finished_at", "host_count", "result", "error")}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""
