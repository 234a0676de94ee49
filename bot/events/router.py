"""Handlers registered by (event, action), composed from per-feature routers (gidgethub's Router)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.events.delivery import Event


@dataclass(frozen=True)
class Requester:
    """Who or what asked for a job, with a link back to it."""

    kind: str
    who: str | None = None
    url: str | None = None
    number: int | None = None


@dataclass(frozen=True)
class RunParity:
    """Decision: check every host at ``commit``."""

    commit: str
    ref: str
    event_key: str
    requester: Requester
    clone_url: str | None = None


@dataclass(frozen=True)
class RunCommands:
    """Decision: act on the commands of a new comment (once, by comment id)."""

    comment_id: int
    number: int
    is_pull: bool
    author: str
    url: str | None
    items: list[dict[str, Any]]
    capped: bool
    clone_url: str | None = None
    cut: bool = False

    @property
    def event_key(self) -> str:
        return f"comment:{self.comment_id}"


@dataclass(frozen=True)
class Ignore:
    """Decision: nothing to do, for this reason."""

    reason: str
    ping: bool = False


Decision = RunParity | RunCommands | Ignore
Handler = Callable[[Event], Decision]


class Router:
    """Maps (event, action) to handlers; ``action=None`` matches every action."""

    def __init__(self, *others: Router) -> None:
        self._table: dict[tuple[str, str | None], list[Handler]] = {}
        for other in others:
            for key, handlers in other._table.items():
                self._table.setdefault(key, []).extend(handlers)

    def register(self, event: str, action: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: call the function for ``event`` (and ``action``)."""
        def wrap(func: Handler) -> Handler:
            self._table.setdefault((event, action), []).append(func)
            return func
        return wrap

    def dispatch(self, event: Event) -> list[Decision]:
        """Every handler's decision for ``event``; an :class:`Ignore` when none is registered."""
        handlers = self._table.get((event.name, event.action), []) + (
            self._table.get((event.name, None), []) if event.action is not None else [])
        if not handlers:
            what = event.name + (f" {event.action}" if event.action else "")
            return [Ignore(f"{what}: not handled by this bot")]
        return [h(event) for h in handlers]

    def events(self) -> list[tuple[str, str | None]]:
        """The registered (event, action) pairs, for documentation and tests."""
        return sorted(self._table, key=lambda k: (k[0], k[1] or ""))


def get(data: Any, *keys: str) -> Any:
    """``data[k1][k2]…`` or None when any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data
