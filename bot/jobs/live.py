"""The fleet as it runs, for the bot: ``/ka status`` asks every host (ka/status/live.py), and the fleet
page shows the last answers.  Settings and hosts come from the default branch's head; the answers
are kept in the database (``kv`` key ``live_status``), host by host, with when they were asked."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from bot import mirror
from bot.public import scrub_tree
from bot.services import Services
from ka.fleet.infra import load_infra
from ka.fleet.repo import GitTree
from ka.status.cells import LIVE_HEAD, live_cells
from ka.status.live import live_status

KEY = "live_status"
log = logging.getLogger(__name__)
_ASKING = threading.Lock()


def refresh(services: Services, hosts: list[str] | None = None, clone_url: str | None = None) -> list[dict[str, Any]]:
    """Ask ``hosts`` (default: the fleet) now; store and return their rows (each with ``asked_at``)."""
    config = services.config
    branch, head = services.forge.default_branch()
    mirror_dir = mirror.fetch_commit(config, clone_url, f"refs/heads/{branch}", head)
    view = GitTree(mirror_dir, head, config.limits)
    now = time.time()
    rows = [scrub_tree(services.scrub, {**r.as_dict(), "asked_at": now, "commit": head})  # a public table
            for r in live_status(view, load_infra(view), config.ssh, hosts, timeout=config.live_timeout)]
    known = {r["host"]: r for r in stored(services)}
    known.update({r["host"]: r for r in rows})
    services.store.put(KEY, json.dumps(sorted(known.values(), key=lambda r: r["host"])))
    return rows


def stored(services: Services) -> list[dict[str, Any]]:
    """The last answers of every host asked so far."""
    try:
        rows = json.loads(services.store.get(KEY) or "[]")
    except ValueError:
        return []
    return [r for r in rows if isinstance(r, dict) and "host" in r] if isinstance(rows, list) else []


class _Row:
    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)

    def __getattr__(self, name: str) -> Any:
        return None


def cells(row: dict[str, Any]) -> list[str]:
    """A stored row as the table's text cells (the same as ``ka status --live`` prints)."""
    return live_cells(_Row(row))


HEAD = LIVE_HEAD


def refresh_when_due(services: Services) -> bool:
    """Ask the fleet again in a thread of its own when the oldest answer is older than ``live_interval``."""
    interval = services.config.live_interval
    rows = stored(services)
    if interval <= 0 or (rows and min(float(r.get("asked_at") or 0) for r in rows) > time.time() - interval):
        return False
    if not _ASKING.acquire(blocking=False):
        return False

    def ask() -> None:
        try:
            refresh(services)
        except Exception:  # the next sweep tries again
            log.exception("could not ask the fleet")
        finally:
            _ASKING.release()
    threading.Thread(target=ask, name="ka-live", daemon=True).start()
    return True
