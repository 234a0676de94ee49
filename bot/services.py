"""The bot's parts, built once from the config and handed to the web app and the worker."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from huey import SqliteHuey
from huey.storage import SqliteStorage

from bot.config import Config
from bot.forge.client import Forge, ForgejoClient, LocalForge
from bot.public import Scrubber, scrubber
from bot.store import StateError, Store

log = logging.getLogger(__name__)


class WakeupStorage(SqliteStorage):
    """huey's SQLite storage without an fsync per commit.

    The ``jobs`` table is the durable record of work; huey's queue only wakes the worker,
    and whatever it loses in a power cut the worker's start-up and sweep re-queue.
    """

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


def prepare_state_dir(config: Config) -> Path:
    """The state folder and its job log folder, created when missing; :class:`StateError` when it cannot be."""
    try:
        (config.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"{config.state_dir}: cannot use the state folder: {exc.strerror or exc} "
                         "(KA_STATE_DIR; it must be writable by the bot's user)") from None
    return config.state_dir


def _set_aside_if_damaged(path: Path) -> None:
    if not path.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
            ok = [r[0] for r in db.execute("PRAGMA quick_check(1)")] == ["ok"]
    except sqlite3.DatabaseError as exc:  # "locked" or "busy" is a queue in use, not a damaged one
        ok = not any(word in str(exc) for word in ("not a database", "malformed", "corrupt"))
    if not ok:
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{path}{suffix}").exists():
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        log.warning("%s was damaged; set aside as %s (queued jobs are re-queued from the jobs table)", path, aside)


@dataclass
class Services:
    """Config, state, forge and queue."""

    config: Config
    store: Store
    forge: Forge
    huey: SqliteHuey

    @property
    def log_dir(self) -> Path:
        return self.config.state_dir / "jobs"

    @property
    def scrub(self) -> Scrubber:
        """Rewrites this bot's folders as settings in what goes public (:mod:`bot.public`)."""
        return scrubber(self.config.state_dir, self.config.kernel_tree)


def make_services(config: Config, check: bool = False) -> Services:
    """Open the state directory (created if needed) and connect the parts.

    With ``check`` (at the start of ``serve`` and ``worker``) both databases get SQLite's
    ``quick_check``: a damaged job database stops the bot with recovery steps, a damaged
    queue is set aside, since the jobs table holds everything the queue would re-learn.
    """
    prepare_state_dir(config)
    store = Store(config.state_dir / "ka-bot.db", check=check)
    if check:
        _set_aside_if_damaged(config.state_dir / "queue.db")
    if config.local_mode:
        forge: Forge = LocalForge(config.repo_url, config.permission_table)
    else:
        assert config.forgejo_url and config.forgejo_token and config.repo
        forge = ForgejoClient(config.forgejo_url, config.forgejo_token, config.repo,
                              timeout=(5.0, config.forge_timeout))
    huey = SqliteHuey("ka-bot", filename=str(config.state_dir / "queue.db"), results=False, utc=True,
                      storage_class=WakeupStorage)
    return Services(config=config, store=store, forge=forge, huey=huey)
