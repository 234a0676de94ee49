"""Many hosts' builds at once: each goes to the first build host with a free slot (ka/build/slots.py).

One thread a host, at most as many as the build hosts have slots; each runs :func:`ka.build.flow.build` as a
single build would, with its own log, and its outcome is kept apart: one host's failure stops no other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ka.build.flow import BuildOptions, BuildResult, build
from ka.errors import KaError
from ka.fleet.infra import Infra
from ka.fleet.repo import RepoView
from ka.io.hostruns import HostRun, Notes
from ka.promote.baseline import KernelTree

BUILT, FAILED = "built", "failed"


@dataclass
class HostBuild(HostRun):
    """One host's build among many: where it stands, and how it ended (built, failed)."""

    result: BuildResult | None = None

    @property
    def build_host(self) -> str:
        return (self.result.build_host if self.result else None) or ""

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
    note = Notes(changed)

    def one(hb: HostBuild) -> None:
        write = log_for(hb.host)

        def line(text: str) -> None:
            write(text)
            note(hb, last=text)
        note(hb, started=time.monotonic(), state="promote", result=BuildResult(hb.host, view.rev))
        try:
            build(view, hb.host, infra, kernel, opts, log=line, phase=lambda name: note(hb, state=name),
                  into=hb.result)
            note(hb, state=BUILT, ended=time.monotonic())
        except KaError as exc:
            note(hb, state=FAILED, ended=time.monotonic(), error=str(exc), exit_code=exc.exit_code)

    with ThreadPoolExecutor(max_workers=max(1, min(len(builds), slots)), thread_name_prefix="ka-build") as pool:
        list(pool.map(one, builds))

