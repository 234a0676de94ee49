"""ka-status --live: the fleet as it runs, asked over ssh, every host at once.

Per host: does it answer, which kernel runs, which package version pacman has installed, whether
that is the newest one the repository holds, whether the running kernel was built from what the
manifest would build now (the ``kernel-agent`` record ka-build puts beside the modules names
the cumulative patch and the config it was built from), and how the last install went (the
host's own install record).  Hosts are asked in parallel, each within ``timeout``: one host
that does not answer costs that host's row, not the table.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import posixpath
import time
from dataclasses import dataclass
from typing import Any

from ka.build.wanted import Wanted, wanted
from ka.errors import KaError
from ka.fleet.infra import Infra
from ka.fleet.installspec import InstallSpec
from ka.fleet.manifest import list_hosts, load_manifest
from ka.fleet.repo import RepoView
from ka.install.device import Device
from ka.io.ssh import SshSettings, connect
from ka.packages.pacmandb import Entry, database

TIMEOUT = 10.0


@dataclass
class LiveRow:
    """One host, as it answered."""

    host: str
    reachable: bool | None = None
    running: str | None = None
    installed: str | None = None
    newest: str | None = None
    is_newest: bool | None = None
    manifest: str | None = None  # the version the manifest at this commit would build
    matches: str | None = None  # yes, no (why), unknown (why)
    last_install: str | None = None
    last_install_at: str | None = None
    error: str | None = None
    seconds: float | None = None
    record: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)  # the running kernel's inputs

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "record"}


def live_status(view: RepoView, infra: Infra, ssh: SshSettings, hosts: list[str] | None = None,
                timeout: float = TIMEOUT) -> list[LiveRow]:
    """A row per host (default: every host of the fleet), each within ``timeout`` seconds."""
    names = hosts or list_hosts(view)
    specs = {h: _spec(view, h) for h in names}  # the repository is read here, the hosts in the threads
    quick = dataclasses.replace(ssh, connect_timeout=min(ssh.connect_timeout, timeout))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(names) + 1), thread_name_prefix="ka-live")
    try:
        repo = pool.submit(_newest, infra, quick)
        futures = {h: pool.submit(_ask, h, spec, quick) for h, spec in specs.items()}
        deadline = time.monotonic() + timeout
        newest: dict[str, Entry] = {}
        with contextlib.suppress(concurrent.futures.TimeoutError, KaError, OSError):
            newest = repo.result(timeout=max(0.0, deadline - time.monotonic()))
        rows = [_collect(h, f, deadline, timeout) for h, f in futures.items()]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a host that hangs is left to its own timeouts
    for row in rows:
        spec = specs[row.host]
        _judge(row, wanted(view, row.host), newest.get(spec.pkgbase) if isinstance(spec, InstallSpec) else None)
    return rows


def _spec(view: RepoView, host: str) -> InstallSpec | str:
    """The host's install settings, or why there are none."""
    try:
        spec = load_manifest(view, host).install
    except KaError as exc:
        return str(exc).splitlines()[0]
    return spec if spec is not None else "no install settings"


def _collect(host: str, future: concurrent.futures.Future[LiveRow], deadline: float, timeout: float) -> LiveRow:
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
        return LiveRow(host, reachable=False, error=f"no answer within {timeout:g}s", seconds=timeout)


def _newest(infra: Infra, ssh: SshSettings) -> dict[str, Entry]:
    if infra.repository is None:
        return {}
    with connect(ssh, infra.repository.ssh, infra.repository.role) as remote:
        return database(remote, infra.repository)


def _ask(host: str, spec: InstallSpec | str, ssh: SshSettings) -> LiveRow:
    row, start = LiveRow(host), time.monotonic()
    if isinstance(spec, str):
        row.error = spec
        return row
    try:
        with connect(ssh, spec.ssh, f"{spec.ssh} (install.ssh of fleet/{host}.yaml)") as remote:
            row.reachable = True
            device = Device(remote, spec)
            row.running = device.release()
            row.installed = device.installed(spec.kernel_package(row.running))
            record = device.record()
            row.record = _inputs(device, posixpath.join(spec.modules, row.running))
        last = record.get("last") or {}
        row.last_install, row.last_install_at = last.get("result"), last.get("at")
    except KaError as exc:
        row.reachable = row.reachable or False
        row.error = str(exc).splitlines()[0]
    except (OSError, EOFError) as exc:  # a local file (the ssh config, known_hosts) or a dropped connection
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the connection was lost"
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        row.reachable, row.error = row.reachable or False, f"{why}{where}"
    row.seconds = round(time.monotonic() - start, 2)
    return row


def _inputs(device: Device, folder: str) -> dict[str, str]:
    """The running kernel's ``kernel-agent`` record (what ka-build built it from)."""
    res = device.remote.run(["cat", "--", posixpath.join(folder, "kernel-agent")], timeout=30, check=False)
    return dict(ln.split("=", 1) for ln in res.output.splitlines() if "=" in ln) if res.ok else {}


def _judge(row: LiveRow, want: Wanted, entry: Entry | None) -> None:
    row.manifest = want.version
    row.newest = entry.version if entry else None
    row.is_newest = None if entry is None or row.installed is None else row.installed == entry.version
    if not row.reachable:
        row.matches = None
        return
    record = row.record
    if not record:
        row.matches = "unknown: the running kernel has no kernel-agent record (not built by ka-build)"
    elif want.error:
        row.matches = f"unknown: {want.error}"
    elif record.get("patch_b2sum") != want.patch_b2sum:
        row.matches = "no: the cumulative patch differs"
    elif record.get("config_b2sum") != want.config_b2sum:
        row.matches = "no: the config differs"
    elif want.version and record.get("version") != want.version:
        row.matches = f"no: it is {record.get('version')}, the manifest builds {want.version}"
    else:
        row.matches = "yes"
