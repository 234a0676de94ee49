"""What the bot may say in public: a failure's reason in words, with no stack and no internal path.

Everything a job says reaches the forge (comments, commit statuses) or a page anyone may read
(the job page and its log).  A failure the verb explains (a :class:`~ka.errors.KaError`) is
said as its message; anything else is a bug, said as "an internal error" while its traceback
goes to the bot's own log.  The folders of the bot's machine (its state, its kernel tree, its
install, the home of the account it runs as) are written as the setting that names them, and a
Python traceback that slipped into a text (a tool that printed one) is cut to its last line.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ka.errors import KaError

_BOT_ROOT = Path(__file__).resolve().parent.parent
_TRACE_LINE = re.compile(r'^\s+(File ".*", line \d+.*|\S.*)$')


def reason(exc: BaseException) -> str:
    """A failure's reason as the forge and the pages show it: its message when kernel-agent explains it,
    the operating system's words for a system error, else "an internal error" (the log has the rest)."""
    if isinstance(exc, KaError):
        return str(exc)
    if isinstance(exc, sqlite3.Error):  # SQLite's messages name no file: "database or disk is full"
        return f"the bot's database: {exc}"
    if isinstance(exc, OSError) and exc.errno:
        return f"the bot's machine: {os.strerror(exc.errno)} (its log says where)"
    return "an internal error in the bot (its log has the traceback)"


@dataclass(frozen=True)
class Scrubber:
    """Rewrites the bot machine's folders as the settings that name them; cuts tracebacks."""

    places: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, state_dir: Path, kernel_tree: Path | None = None) -> Scrubber:
        """The places of a bot with this state folder and kernel tree; longest first, so that a
        folder inside another is named by the inner one, and a setting before the home folder it may be
        (the service user's home is its state folder)."""
        named = {str(state_dir): "$KA_STATE_DIR", str(_BOT_ROOT): "<ka-bot>"}
        if sys.prefix != sys.base_prefix:  # a virtual environment; without one the prefix is /usr, the host's own
            named[sys.prefix] = "<ka-bot>"
        if kernel_tree is not None:
            named[str(kernel_tree)] = "$KA_KERNEL_TREE"
        home = os.path.expanduser("~")
        if home not in ("/", ""):
            named.setdefault(home, "~")
        for path in list(named):  # the same folder as a resolved path (a symlinked /var, a venv's prefix)
            named.setdefault(os.path.realpath(path), named[path])
        places = ((p.rstrip("/"), n) for p, n in named.items() if p.startswith("/") and p.rstrip("/"))
        return cls(tuple(sorted(places, key=lambda x: -len(x[0]))))

    def __call__(self, text: str) -> str:
        """``text`` with no internal folder and no Python traceback."""
        if "Traceback (most recent call last):" in text:
            text = _cut_tracebacks(text)
        for path, name in self.places:
            if path in text:  # the whole folder: not inside a longer path, not the start of a longer name
                text = re.sub(r"(?<![\w./~$<-])" + re.escape(path) + r"(?![\w-]|\.\w)", name, text)
        return text


@lru_cache(maxsize=8)
def scrubber(state_dir: Path, kernel_tree: Path | None) -> Scrubber:
    """The scrubber of a bot's settings (built once per process)."""
    return Scrubber.of(state_dir, kernel_tree)


def scrub_tree(scrub: Scrubber, value: Any) -> Any:
    """A job's JSON result with every string scrubbed (it is shown on the public job page)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_tree(scrub, v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_tree(scrub, v) for v in value]
    return value


def _cut_tracebacks(text: str) -> str:
    """Each traceback block reduced to its last line (the exception), which the caller scrubs further."""
    out: list[str] = []
    inside = False
    for line in text.split("\n"):
        if "Traceback (most recent call last):" in line:
            inside = True
            continue
        if inside and _TRACE_LINE.match(line):
            continue
        inside = False
        out.append(line)
    return "\n".join(out)
