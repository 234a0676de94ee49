"""A rollout: many hosts' installs in waves, stopped at the first host that fails.

The hosts go by ``install.wave`` (1 first; the order they were named within a wave).  The first host of
the first wave is the **canary**: it installs alone, and the rest wait for it to come back on its new
kernel.  Then each wave: its hosts one after another, or all at once (``parallel``).  A host that fails,
falls back to its kept kernel (the boot-once trial) or does not come back stops the rollout: every host
not started by then is left untouched (``not started``); installs already running in a parallel wave
finish (an install stopped midway is worse than one finished).  A stop signal (Ctrl-C, SIGTERM) does the
same, and the running installs stop where that is safe (ka/io/stopping.py).

Each host's install is :func:`ka.install.flow.install`, exactly as for one host, with its own log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ka.errors import KaError
from ka.fleet.infra import Infra
from ka.fleet.manifest import load_manifest
from ka.fleet.repo import RepoView
from ka.install.flow import install
from ka.install.installer import InstallError, InstallOptions, InstallResult
from ka.io import stopping
from ka.io.hostruns import WAITING, HostRun, Notes

INSTALLED, FELL_BACK, FAILED, NOT_STARTED = "installed", "fell back", "failed", "not started"
#: a host that ended well: installed and booted, installed with a reboot pending (--no-reboot), planned (--dry-run)
DONE = {"succeeded": INSTALLED, "pending-reboot": "pending reboot", "dry-run": "dry run"}
ENDED = (*DONE.values(), FELL_BACK, FAILED, NOT_STARTED)


@dataclass
class HostInstall(HostRun):
    """One host of a rollout: its wave, where it stands, how it ended (one of ENDED)."""

    wave: int = 1
    canary: bool = False
    result: InstallResult | None = None

    @property
    def build_host(self) -> str:
        """The live table's WHERE column: the host's wave (ka/cli/many.py)."""
        return f"wave {self.wave}" + (", canary" if self.canary else "")

    @property
    def backup(self) -> str | None:
        return self.result.backup if self.result else None

    def as_dict(self) -> dict[str, Any]:
        got = self.result.as_dict() if self.result else {"host": self.host}
        return {**got, "host": self.host, "wave": self.wave, "canary": self.canary, "outcome": self.state,
                "exit_code": self.exit_code, "error": self.error or None,
                "seconds": round(self.seconds(time.monotonic()), 3),
                # when it began and ended on one monotonic clock, to order the hosts of one rollout
                "began_s": _rounded(self.started), "ended_s": _rounded(self.ended)}


def _rounded(when: float | None) -> float | None:
    return None if when is None else round(when, 3)


Changed = Callable[[HostInstall], None]
Logs = Callable[[str], Callable[[str], None]]


def plan(view: RepoView, hosts: list[str]) -> list[HostInstall]:
    """The rollout's order: by ``install.wave``, then as named; the first host is the canary."""
    rows = sorted((HostInstall(h, wave=_wave(view, h)) for h in hosts), key=lambda r: r.wave)
    if rows:
        rows[0].canary = True
    return rows


def _wave(view: RepoView, host: str) -> int:
    spec = load_manifest(view, host).install
    return spec.wave if spec is not None else 1


def groups(rows: list[HostInstall], parallel: bool) -> Iterator[list[HostInstall]]:
    """What runs together: the canary alone, then each wave's hosts (all of them with ``parallel``, else one
    by one)."""
    if not rows:
        return
    yield rows[:1]
    rest = rows[1:]
    for wave in sorted({r.wave for r in rest}):
        members = [r for r in rest if r.wave == wave]
        if parallel:
            yield members
        else:
            yield from ([r] for r in members)


def roll_out(view: RepoView, rows: list[HostInstall], infra: Infra, opts: InstallOptions, *, parallel: bool,
             log_for: Logs, changed: Changed = lambda r: None) -> None:
    """Install on ``rows``' hosts in their order, stopping at the first that does not end installed; each one's
    outcome goes into its row (none raises)."""
    note = Notes(changed)
    for group in groups(rows, parallel):
        if stopping.asked() or any(r.state in (FELL_BACK, FAILED) for r in rows):
            break
        with ThreadPoolExecutor(max_workers=len(group), thread_name_prefix="ka-install") as pool:
            list(pool.map(lambda row: _one(view, row, infra, opts, log_for(row.host), note), group))
    for row in rows:
        if row.state == WAITING:
            note(row, state=NOT_STARTED)


def _one(view: RepoView, row: HostInstall, infra: Infra, opts: InstallOptions, write: Callable[[str], None],
         note: Notes) -> None:
    def line(text: str) -> None:
        write(text)
        note(row, last=text)
    note(row, started=time.monotonic(), state="package")
    try:
        result = install(view, row.host, infra, opts, log=line, phase=lambda name: note(row, state=name))
        note(row, result=result, state=DONE.get(result.state, INSTALLED), ended=time.monotonic())
    except KaError as exc:  # an InstallError, or a manifest that cannot be read
        got = exc.result if isinstance(exc, InstallError) else None
        fell = got is not None and got.fell_back is not None
        note(row, result=got, error=str(exc), exit_code=exc.exit_code, ended=time.monotonic(),
             state=FELL_BACK if fell else FAILED)

