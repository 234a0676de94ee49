"""What operators and their monitoring ask: ``/healthz`` and ``/metrics``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from bot.web import metrics
from bot.web.context import services

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
def healthz() -> Any:
    services().store.ping()
    return jsonify({"ok": True, "outbox_backlog": services().store.backlog(),
                    "local_mode": services().config.local_mode})


@ops.get("/metrics")
def prometheus() -> Response:
    return Response(metrics.render(services().store), mimetype="text/plain; version=0.0.4")
