"""The web app: ``create_app`` (the flaskr factory) and the blueprints it serves: the webhook (hooks.py),
the pages (pages.py), health and metrics (ops.py)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from bot import config as config_mod
from bot.config import Config
from bot.services import Services, make_services
from bot.web.hooks import hooks
from bot.web.ops import ops
from bot.web.pages import PAGES, pages, when


def create_app(config: Config | None = None, services: Services | None = None) -> Flask:
    """Build the app.  Without arguments the settings come from ``KA_CONFIG`` and the environment."""
    if services is None:
        cfg = config or config_mod.load()
        cfg.require_secret()
        services = make_services(cfg)
    app = Flask(__name__, template_folder=str(PAGES))
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_body
    app.extensions["ka"] = services
    app.add_template_filter(when, "when")

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"local_mode": services.config.local_mode, "permissions": services.config.local_permissions}

    for blueprint in (hooks, pages, ops):
        app.register_blueprint(blueprint)
    return app
