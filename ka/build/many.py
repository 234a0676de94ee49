"""Many hosts' builds at once: each goes to the first build host with a free slot (ka/build/slots.py).

One thread a host, at most as many as the build hosts have slots; each runs :func:`ka.build.flow.build` as a
single build would, with its own log, and its outcome is kept apart: one host's failure stops no other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ka.build.flow import BuildOptions, BuildResult, build
from ka.errors import EXIT_OK, KaError
from ka.fleet.infra import Infra
from ka.fleet.repo import RepoView
from ka.promote.baseline import KernelTree

WAITING, BUILT, FAILED = "waiting", "built", "failed"


@dataclass
class HostBuild:
    """One host's build among many: where it stands, and how it ended."""

    host: str
    state: str = WAITING  # waiting, a phase's name while it runs, built, failed
    started: float | None = None
    ended: float | None = None
    last: str = ""  # its last log line
    result: BuildResult | None = None
    error: str = ""
    exit_code: int = EXIT_OK

    @property
    def build_host(self) -> str:
        return (self.result.build_host if self.result else None) or ""

    def seconds(self, now: float) -> float:
        """How long it has run (or ran)."""
        return 0.0 if self.started is None else (self.ended or now) - self.started

    def as_dict(self) -> dict[str, Any]:
        got = self.result.as_dict() if self.result else {"host": self.host}
        return {**got, "ok": self.state == BUILT, "exit_code": self.exit_code, "error": self.error or None,
                "seconds": round(self.seconds(time.monotonic()), 3)}


Changed = Callable[[HostBuild], None]  # a host's state changed (one call at a time)
Logs = Callable[[str], Callable[[str], None]]  # a host's log: where its lines go


def build_many(view: RepoView, builds: list[HostBuild], infra: Infra, kernel: KernelTree | None,
               opts: BuildOptions, *, log_for: Logs, changed: Changed = lambda b: None) -> None:
    """Build each of ``builds``' hosts, several at once; each one's outcome goes into it (none raises)."""
    slots = sum(b.max_builds for b in (infra.build_hosts if opts.trusted else infra.pull_request_build_hosts))
    lock = threading.Lock()  # changed() sees one host's change at a time

    def one(hb: HostBuild) -> None:
        write = log_for(hb.host)

        def note(**what: Any) -> None:
            with lock:
                for key, value in what.items():
                    setattr(hb, key, value)
                if "state" in what:  # a new output line is no change (a terminal's table redraws by itself)
                    changed(hb)

        def line(text: str) -> None:
            write(text)
            note(last=text)
        note(started=time.monotonic(), state="promote", result=BuildResult(hb.host, view.rev))
        try:
            build(view, hb.host, infra, kernel, opts, log=line, phase=lambda name: note(state=name), into=hb.result)
            note(state=BUILT, ended=time.monotonic())
        except KaError as exc:
            note(state=FAILED, ended=time.monotonic(), error=str(exc), exit_code=exc.exit_code)

    with ThreadPoolExecutor(max_workers=max(1, min(len(builds), slots)), thread_name_prefix="ka-build") as pool:
        list(pool.map(one, builds))


def worst(builds: list[HostBuild]) -> int:
    """The exit code of many builds: the worst of theirs (0 when every one was built)."""
    return max((b.exit_code for b in builds), default=EXIT_OK)
