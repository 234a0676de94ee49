"""What a publish answers, whichever repository took the packages (pacman's, apt's): where they are
now, or the error that says the repository did not take them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ka.errors import EXIT_ENVIRONMENT, KaError

Log = Callable[[str], None]


class PublishError(KaError):
    """The repository did not take the packages."""

    exit_code = EXIT_ENVIRONMENT


@dataclass(frozen=True)
class Published:
    """Where the packages now are."""

    host: str
    path: str
    database: str
    url: str
    entries: tuple[str, ...]  # <pkgname>-<pkgver>-<pkgrel>, as the database lists them
