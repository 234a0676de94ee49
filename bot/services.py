"""The bot's parts, built once from the config and handed to the web app and the worker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huey import SqliteHuey
from huey.storage import SqliteStorage

from bot.config import Config
from bot.forge import Forge, ForgejoClient, LocalForge
from bot.store import Store


class WakeupStorage(SqliteStorage):
    """huey's SQLite storage without an fsync per commit.

    The ``jobs`` table is the durable record of work; huey's queue only wakes the worker,
    and whatever it loses in a power cut the worker's start-up and sweep re-queue.
    """

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


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


def make_services(config: Config) -> Services:
    """Open the state directory (created if needed) and connect the parts."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "jobs").mkdir(exist_ok=True)
    store = Store(config.state_dir / "ka-bot.db")
    if config.local_mode:
        forge: Forge = LocalForge()
    else:
        assert config.forgejo_url and config.forgejo_token and config.repo
        forge = ForgejoClient(config.forgejo_url, config.forgejo_token, config.repo)
    huey = SqliteHuey("ka-bot", filename=str(config.state_dir / "queue.db"), results=False, utc=True,
                      storage_class=WakeupStorage)
    return Services(config=config, store=store, forge=forge, huey=huey)
