"""Size caps on what the repository may make kernel-agent read.

A pull request from a fork controls the manifests and patches the bot reads, so every
read is bounded: a manifest, one file of a series (or a canonical patch), and a host's
whole cumulative patch.  The defaults are far above a real fleet's (the largest sample
patch is 11 KB; a vendor BSP series is tens of MB) and can be raised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ka.errors import BadInput

KIB, MIB = 1024, 1024 * 1024
MANIFEST_MAX = 64 * KIB
_SIZE = re.compile(r"(\d+)([KMG]?)i?B?", re.I)
_UNITS = {"": 1, "K": KIB, "M": MIB, "G": 1024 * MIB}


@dataclass(frozen=True)
class Limits:
    """Caps in bytes."""

    manifest: int = MANIFEST_MAX
    file: int = 64 * MIB
    cumulative: int = 256 * MIB

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Limits:
        """Defaults, raised or lowered by ``KA_MAX_PATCH`` and ``KA_MAX_CUMULATIVE`` (e.g. ``512M``)."""
        return cls(file=parse_size(environ.get("KA_MAX_PATCH"), "KA_MAX_PATCH", cls.file),
                   cumulative=parse_size(environ.get("KA_MAX_CUMULATIVE"), "KA_MAX_CUMULATIVE", cls.cumulative))


def parse_size(text: str | None, name: str, default: int) -> int:
    """``123``, ``64K``, ``256M``, ``1G`` (binary units) as bytes; ``default`` when unset."""
    if text is None or text.strip() == "":
        return default
    m = _SIZE.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise BadInput(f"{name}={text!r}: not a size (bytes, or a number with K, M or G)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def human(size: int) -> str:
    """``65.0 KiB``-style size for messages."""
    for unit, factor in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor:
            return f"{size // factor} {unit}" if size % factor == 0 else f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


class TooLarge(BadInput):
    """A file, or a host's cumulative patch, is over its cap."""

    def __init__(self, where: str, size: int, limit: int, what: str, knob: str = "", subject: str = "") -> None:
        hint = f" (raise it with {knob})" if knob else ""
        subject = f"{subject} " if subject else ""
        super().__init__(f"{where}: {subject}is {human(size)}; {what} may hold at most {human(limit)}{hint}")
        self.where = where
