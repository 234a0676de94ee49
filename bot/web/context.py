"""The bot's parts, as the views reach them: built once by ``create_app`` and kept on the app."""

from __future__ import annotations

from flask import current_app

from bot.services import Services


def services() -> Services:
    """The running app's :class:`Services`."""
    found: Services = current_app.extensions["ka"]
    return found
