"""The web app: ``create_app`` (the flaskr factory), webhook intake and the job pages."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, render_template, request

from bot import config as config_mod
from bot import metrics, outbox
from bot.config import Config
from bot.intake import receive
from bot.services import Services, make_services
from handlers import router

log = logging.getLogger(__name__)
PAGES = Path(__file__).resolve().parent.parent / "templates" / "pages"
LOG_TAIL = 200_000


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
        reply = receive(services.store, router, services.config, dict(request.headers), request.get_data(cache=False))
        return jsonify(reply.body), reply.status

    @app.get("/jobs")
    def jobs() -> Any:
        rows = services.store.jobs()
        if _wants_json():
            return jsonify([_job_json(j) for j in rows])
        return render_template("jobs.html", jobs=rows, active=any(j.state in ("queued", "running") for j in rows))

    @app.get("/jobs/<int:job_id>")
    def job(job_id: int) -> Any:
        record = services.store.job(job_id) or abort(404)
        writes = services.store.query("SELECT * FROM outbox WHERE job_id = ? ORDER BY id", job_id)
        if _wants_json():
            return jsonify({**_job_json(record), "writes": [dict(w) for w in writes]})
        log_path = services.log_dir / f"{job_id}.log"
        text = log_path.read_text(errors="replace")[-LOG_TAIL:] if log_path.exists() else ""
        return render_template("job.html", job=record, writes=writes, log=text)

    @app.get("/healthz")
    def healthz() -> Any:
        services.store.query("SELECT 1")
        return jsonify({"ok": True, "outbox_backlog": outbox.backlog(services.store),
                        "local_mode": services.config.local_mode})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(services.store), mimetype="text/plain; version=0.0.4")

    return app


def _wants_json() -> bool:
    return request.args.get("format") == "json" or request.accept_mimetypes.best == "application/json"


def _job_json(job: Any) -> dict[str, Any]:
    return {k: getattr(job, k) for k in ("id", "verb", "host", "commit_sha", "ref", "requester", "state",
                                          "created_at", "started_at", "finished_at", "hosts", "result", "error")}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""
