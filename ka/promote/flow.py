"""ka-promote: build, check and record each host's cumulative patch.

Work happens in three phases so that bad input changes nothing: every host
is planned (manifest, series, canonical read and validated) and every
baseline resolved first; then the apply checks run, in parallel; only then
are the outputs written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from ka.errors import (
    EXIT_ENVIRONMENT,
    BadInput,
    KaError,
    KernelTreeError,
    ManifestError,
    Problem,
    ReferenceUnavailable,
)
from ka.fleet.manifest import Manifest, load_manifest
from ka.fleet.repo import FILE, PathEscapes, RepoView
from ka.fleet.series import Series, resolve_series
from ka.io.outputs import Outputs
from ka.promote.baseline import ApplyFailure, KernelTree, check_applies
from ka.promote.cumulative import Cumulative, concatenate
from ka.promote.parity import UNSET, ParityResult, compare

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostPlan:
    """Everything promote needs for one host, read and validated."""

    manifest: Manifest
    series: list[Series]
    cumulative: Cumulative
    canonical: bytes | None


@dataclass
class PromoteResult:
    """The outcome of promoting one host."""

    host: str
    rev: str | None
    baseline: str
    b2sum: str
    bytes: int
    series: list[dict[str, object]]
    applies: bool | None = None
    baseline_commit: str | None = None
    failure: ApplyFailure | None = None
    parity: ParityResult = field(default_factory=lambda: ParityResult(UNSET))
    patch: str | None = None
    seconds: float = 0.0
    offsets: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check that ran failed."""
        return self.applies is not False and self.parity.state != "mismatch"

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of ``ka-promote --json``."""
        return {
            "host": self.host, "rev": self.rev, "baseline": self.baseline,
            "baseline_commit": self.baseline_commit, "b2sum": self.b2sum, "bytes": self.bytes,
            "patch": self.patch, "series": self.series, "applies": self.applies,
            "failure": self.failure.as_dict() if self.failure else None,
            "parity": self.parity.state, "parity_detail": self.parity.as_dict(),
            "offsets": self.offsets, "seconds": round(self.seconds, 3), "ok": self.ok,
        }


class RemoteFiles(Protocol):
    """Reads ``parity.canonical: HOST:PATH`` (ka/promote/canonical.py, over SFTP)."""

    def read(self, host: str, path: str) -> bytes | None:
        """The file's bytes; None when remote references are not read (ka-status)."""


class _NotRead:
    def read(self, host: str, path: str) -> bytes | None:
        return None


NOT_READ: RemoteFiles = _NotRead()


def plan_host(view: RepoView, host: str, remote: RemoteFiles = NOT_READ) -> HostPlan:
    """Read and validate one host's manifest, series and parity reference."""
    manifest = load_manifest(view, host)
    series = resolve_series(view, manifest)
    return HostPlan(manifest, series, concatenate(series), _canonical(view, manifest, remote))


def _canonical(view: RepoView, manifest: Manifest, remote: RemoteFiles) -> bytes | None:
    path = manifest.parity.canonical
    if path is None:
        return None
    if manifest.parity.remote is not None:
        return remote.read(*manifest.parity.remote)
    try:
        found = view.kind(path) == FILE
    except PathEscapes:
        found = False
    if not found:
        raise ManifestError([Problem(manifest.path, manifest.parity.canonical_line, "parity.canonical",
                                     f"{path} does not exist in the repository")])
    if not view.tracked(path):
        raise ManifestError([Problem(manifest.path, manifest.parity.canonical_line, "parity.canonical",
                                     f"{path} is not tracked by git; only committed files can be parity references")])
    return view.read(path)


def plan_hosts(view: RepoView, hosts: list[str], remote: RemoteFiles = NOT_READ) -> list[HostPlan]:
    """Plan every host; raise one error that lists the problems of all of them."""
    plans, problems, others = [], [], []
    for host in hosts:
        try:
            plans.append(plan_host(view, host, remote))
        except ManifestError as exc:
            problems.extend(exc.problems)
        except BadInput as exc:
            others.append(str(exc))
    if others:
        raise BadInput("\n".join(others + [str(p) for p in problems]))
    if problems:
        raise ManifestError(problems)
    return plans


def resolve_baselines(kernel: KernelTree | None, plans: list[HostPlan]) -> dict[str, str]:
    """Resolve every host's ``baseline.ref``: errors now, before any work."""
    if kernel is None:
        return {}
    cache: dict[str, str] = {}
    for p in plans:
        ref = p.manifest.baseline_ref
        if ref not in cache:
            cache[ref] = kernel.commit(ref, f"{p.manifest.path}: baseline.ref")
    return cache


def _promote_one(plan: HostPlan, kernel: KernelTree | None, commits: dict[str, str],
                rev: str | None) -> PromoteResult:
    """Check one planned host: baseline (when a kernel tree is given) and parity."""
    start = time.monotonic()
    m = plan.manifest
    result = PromoteResult(host=m.host, rev=rev, baseline=m.baseline_ref, b2sum=plan.cumulative.b2sum,
                           bytes=len(plan.cumulative.data), series=[s.as_dict() for s in plan.series])
    if kernel is not None:
        applied = check_applies(kernel, commits[m.baseline_ref], plan.series, plan.cumulative.data)
        result.applies, result.failure = applied.applies, applied.failure
        result.baseline_commit, result.offsets = applied.commit, applied.offsets
    result.parity = compare(plan.cumulative, m.parity.b2sum, plan.canonical, m.parity.canonical or "canonical")
    result.seconds = time.monotonic() - start
    return result


def promote_many(plans: list[HostPlan], kernel: KernelTree | None, rev: str | None,
                 on_done: Callable[[PromoteResult], None] | None = None,
                 workers: int | None = None) -> list[PromoteResult]:
    """Promote hosts already planned (the CLI, ka-build): every baseline resolved first, so that a missing
    one is an error before any work; then :func:`promote_each`.  Results come back in plan order."""
    resolve_baselines(kernel, plans)
    results: dict[str, PromoteResult] = {}
    failed: list[str] = []

    def done(result: PromoteResult) -> None:
        results[result.host] = result
        if on_done:
            on_done(result)

    hosts = [p.manifest.host for p in plans]
    promote_each(None, hosts, kernel, rev, done, lambda host, why: failed.append(f"{host}: {why}"),
                 workers=workers or max(1, min(len(plans), os.cpu_count() or 2, 4)),
                 planned={p.manifest.host: p for p in plans})
    if failed:
        raise KaError("\n".join(failed))
    return [results[h] for h in hosts]


class _Baselines:
    """``baseline.ref`` → commit, resolved once per ref for all threads; a missing ref is remembered too."""

    def __init__(self, kernel: KernelTree | None) -> None:
        self.kernel = kernel
        self.lock = threading.Lock()
        self.found: dict[str, str | KaError] = {}

    def commits(self, manifest: Manifest) -> dict[str, str]:
        if self.kernel is None:
            return {}
        ref = manifest.baseline_ref
        with self.lock:
            if ref not in self.found:
                try:
                    self.found[ref] = self.kernel.commit(ref, "baseline.ref")
                except KaError as exc:
                    self.found[ref] = exc
        hit = self.found[ref]
        if isinstance(hit, KaError):
            raise KernelTreeError(f"kernel tree lacks the baseline: {manifest.path}: {hit}")
        return {ref: hit}


def promote_each(view: RepoView | None, hosts: list[str], kernel: KernelTree | None, rev: str | None,
                 on_result: Callable[[PromoteResult], None], on_error: Callable[[str, str], None],
                 workers: int = 2, before_each: Callable[[], None] = lambda: None,
                 remote: RemoteFiles = NOT_READ, planned: dict[str, HostPlan] | None = None) -> None:
    """Plan and check host by host, handing each outcome on and letting its patch go: the one way hosts
    are promoted (:func:`promote_many` hands it hosts it planned already, ``planned``; then ``view`` is unused).

    This is promote for a fleet read from an untrusted commit (the bot): peak memory is
    bounded by ``workers`` hosts' patches however many hosts include them, and a host whose
    input is broken gets ``on_error(host, message)`` while the others go on.  An exception
    from a callback (the bot cannot record; ``before_each`` says the job was cancelled) stops
    the run and is raised.
    """
    baselines = _Baselines(kernel)
    stop = threading.Event()

    def one(host: str) -> None:
        if stop.is_set():
            return
        try:
            before_each()
        except BaseException:
            stop.set()
            raise
        outcome = _check_host(view, host, kernel, baselines, rev, remote, (planned or {}).get(host))
        try:
            if isinstance(outcome, str):
                on_error(host, outcome)
            else:
                on_result(outcome)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for future in [pool.submit(one, h) for h in hosts]:
            future.result()


def _check_host(view: RepoView | None, host: str, kernel: KernelTree | None, baselines: _Baselines,
                rev: str | None, remote: RemoteFiles, plan: HostPlan | None) -> PromoteResult | str:
    """A host's result, or the message that says why it could not be checked (a message others may read)."""
    try:
        if plan is None:
            assert view is not None, "promote_each needs a view or the hosts' plans"
            plan = plan_host(view, host, remote)
        return _promote_one(plan, kernel, baselines.commits(plan.manifest), rev)
    except KernelTreeError as exc:
        return str(exc)
    except ReferenceUnavailable as exc:  # which host, which path, what error: the operator's log, not the world's
        log.warning("%s: %s", host, exc)
        return f"{exc.public} (the bot's log says why)"
    except KaError as exc:
        if exc.exit_code == EXIT_ENVIRONMENT:  # ssh to a parity reference's host, say: not the commit's fault
            return str(exc).splitlines()[0]
        return f"invalid at this commit: {str(exc).splitlines()[0]}"
    except Exception as exc:  # one host's broken tree must not take the others down
        return f"cannot read at this commit: {type(exc).__name__}: {exc}"


def stage_outputs(outputs: Outputs, plan: HostPlan, result: PromoteResult, patch_path: Path) -> None:
    """Queue the patch, its ``.b2sum`` (b2sum format) and the ``.json`` record; :meth:`Outputs.commit` writes them."""
    result.patch = str(patch_path)
    outputs.add(patch_path, plan.cumulative.data)
    outputs.add(patch_path.with_name(patch_path.name + ".b2sum"), f"{result.b2sum}  {patch_path.name}\n".encode())
    record = {**result.as_dict(), "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "description": plan.manifest.description,
              "patches": sum(len(s.patches) for s in plan.series)}
    outputs.add(patch_path.with_name(patch_path.name + ".json"),
                (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def default_patch_path(out_dir: Path, host: str) -> Path:
    """``<out>/<host>/<host>-cumulative.patch``."""
    return out_dir / host / f"{host}-cumulative.patch"

