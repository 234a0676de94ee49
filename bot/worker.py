"""The worker: runs jobs from the durable queue (huey on SQLite) and flushes the outbox.

Jobs are claimed in our own ``jobs`` table (queued → running) before they run, so a task
that huey delivers twice runs once, and jobs that change a host wait while another one
runs for that host.  After a crash, :func:`recover` marks the jobs that were running as
interrupted, tells the forge, and re-queues the jobs that were waiting.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from huey import crontab

from bot import forge, mirror, outbox, owner
from bot.config import Config
from bot.parity import CONTEXT, LOCAL_REPO, ParityRun, job_url
from bot.services import Services
from bot.store import Job, StateError

log = logging.getLogger(__name__)
BUSY_RETRY = 5.0
DISPATCH_INTERVAL = 0.1
FINISH_RETRY_MAX = 30.0


@dataclass
class Tasks:
    """The huey tasks, registered on one huey instance."""

    run_job: Any
    flush_outbox: Any


class _Pending:
    """What this worker has scheduled already, so retries never pile up into chains."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flush_at: float | None = None
        self.waiting: set[int] = set()

    def want_flush(self, delay: float) -> bool:
        """True when a flush ``delay`` seconds from now should be scheduled (none is due sooner)."""
        at = time.time() + delay
        with self.lock:
            if self.flush_at is not None and time.time() < self.flush_at <= at + 0.05:
                return False
            self.flush_at = at
            return True


def build_tasks(services: Services) -> Tasks:
    """Register the tasks (the web app only enqueues them; the worker runs them)."""
    huey = services.huey
    pending = _Pending()
    housekeeping = SimpleNamespace(last=0.0)

    @huey.task(name="flush_outbox")
    def flush_outbox() -> None:
        delay = outbox.flush(services.store, services.forge)
        if delay is not None and pending.want_flush(max(0.2, delay)):
            flush_outbox.schedule(delay=max(0.2, delay))

    @huey.task(name="run_job")
    def run_job(job_id: int) -> None:
        with pending.lock:
            pending.waiting.discard(job_id)
        ran = execute(services, job_id, kick=flush_outbox)
        if ran is None and _waiting(services, job_id):
            with pending.lock:
                again = job_id not in pending.waiting
                pending.waiting.add(job_id)
            if again:
                run_job.schedule((job_id,), delay=BUSY_RETRY)
        flush_outbox()

    @huey.periodic_task(crontab(minute="*"), name="sweep")
    def sweep() -> None:
        """Safety net: flush the outbox and re-queue jobs whose task was lost; prune old delivery bodies."""
        flush_outbox()
        for job in services.store.jobs_in("queued"):
            with pending.lock:
                known = job.id in pending.waiting
            if not known and time.time() - job.created_at > 60:
                run_job(job.id)
        prune(services)
        if time.time() - housekeeping.last > 3600:
            housekeeping.last = time.time()
            tidy_mirror(services)

    return Tasks(run_job=run_job, flush_outbox=flush_outbox)


def prune(services: Services, now: float | None = None) -> int:
    """Drop delivery bodies older than the retention (the records stay, for the pages and metrics)."""
    days = services.config.delivery_retention_days
    if days <= 0:
        return 0
    dropped = services.store.prune_bodies((now or time.time()) - days * 86400)
    if dropped:
        log.info("dropped the bodies of %d deliveries older than %g days", dropped, days)
    return dropped


def tidy_mirror(services: Services, now: float | None = None) -> int:
    """Unpin the commits of jobs that ended over a day ago, and let git tidy the mirror."""
    since = (now or time.time()) - 86400
    keep = {r[0] for r in services.store.query(
        "SELECT commit_sha FROM jobs WHERE commit_sha IS NOT NULL AND (state IN ('queued', 'running') "
        "OR finished_at > ?)", since)}
    try:
        return mirror.maintain(services.config.state_dir / "mirror.git", keep)
    except Exception:  # housekeeping: the next hour tries again
        log.exception("could not tidy the mirror")
        return 0


class WorkerBusy(StateError):
    """Another worker runs on this state folder and did not stop in time."""


def hold_worker_lock(state_dir: Path, wait: float = 60.0) -> IO[str]:
    """Become the one worker of ``state_dir``: wait for the previous one to exit, then hold the lock.

    After a ``kill -9`` of ``serve`` and an immediate restart the old worker can still be
    ending; recovering while it lives would leave its job ``running`` for good.  The lock is
    released by the kernel when its holder dies, however it dies.
    """
    fh = open(state_dir / "worker.lock", "a+")  # noqa: SIM115 - held for the life of the process
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                fh.close()
                raise WorkerBusy(f"{state_dir}/worker.lock: another worker ({holder}) still runs on this state "
                                 f"folder after {wait:.0f}s; stop it first (one worker per state folder)") from None
            time.sleep(0.2)
    fh.seek(0)
    fh.truncate()
    fh.write(owner.me(thread=False) + "\n")
    fh.flush()
    return fh


def dispatch(services: Services, tasks: Tasks, stop: threading.Event, interval: float = DISPATCH_INTERVAL) -> None:
    """Hand new queued jobs to huey.

    The web app only writes the job row (one SQLite transaction per delivery, the cheapest
    durable intake); this loop in the worker notices new rows within ``interval``.
    """
    last = 0
    while True:
        try:
            for row in services.store.query("SELECT id FROM jobs WHERE state = 'queued' AND id > ? ORDER BY id",
                                            last):
                tasks.run_job(row[0])
                last = row[0]
        except Exception:  # a locked database or a full disk must not end the loop for good
            log.exception("dispatcher: will try again")
        if stop.wait(interval):
            return


def start_dispatcher(services: Services, tasks: Tasks) -> threading.Event:
    """Run :func:`dispatch` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=dispatch, args=(services, tasks, stop), name="ka-dispatch", daemon=True).start()
    return stop


def _waiting(services: Services, job_id: int) -> bool:
    job = services.store.job(job_id)
    return job is not None and job.state == "queued"


class JobLog:
    """Appends timestamped lines to a job's log file.

    Best effort: a log line that cannot be written (a full disk) is not a reason for the job to fail.
    """

    def __init__(self, services: Services, job_id: int) -> None:
        self.path = services.log_dir / f"{job_id}.log"
        self.failed = False

    def __call__(self, line: str) -> None:
        try:
            with open(self.path, "a", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        except OSError as exc:
            if not self.failed:
                log.warning("job log %s: %s; later lines are dropped", self.path, exc)
            self.failed = True


def execute(services: Services, job_id: int, kick: Callable[[], None] = lambda: None) -> Job | None:
    """Claim and run one job; None when it was not claimable (done already, or its host is busy).

    The job's error boundary: whatever breaks, the job ends in a final state, and every host
    it covers gets a final status, as soon as the database takes writes again.
    """
    job = services.store.claim(job_id)
    if job is None:
        return None
    log_line = JobLog(services, job_id)
    state, error = "failed", "internal error"
    try:
        log_line(f"job {job.id} {job.verb} on {job.commit_sha} started")
        result = _run_verb(services, job, log_line, kick)
        services.store.set_result(job_id, result)
        state, error = "succeeded", ""
        log_line(f"job {job.id} succeeded")
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.exception("job %s failed", job_id)
        log_line("".join(traceback.format_exception(exc)).rstrip())
    finally:
        end_job(services, job, state, error or None, "failed")
    return services.store.job(job_id)


def end_job(services: Services, job: Job, state: str, error: str | None, word: str,
            was: str = "running", retry: float = FINISH_RETRY_MAX) -> None:
    """Finish ``job``, retrying until the database takes the write (a full disk, a locked file).

    A job that cannot be finished would stay ``running`` with its hosts ``pending`` for good;
    waiting here until space returns is the only way to keep the promise that every job ends.
    """
    delay = 0.5

    def statuses(pending: list[str], host_count: int) -> list[forge.Write]:
        return ending_statuses(services.config, job, pending, host_count, word,
                               error or "ended without a result for this host")
    writes_for: Callable[[list[str], int], list[forge.Write]] | None = statuses
    while True:
        try:
            services.store.finish(job.id, state, error, writes_for, was=was)
            return
        except (sqlite3.Error, OSError) as exc:
            log.error("job %s: cannot record its end (%s); retrying in %.0fs", job.id, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, retry)
        except Exception:  # a bug in what the end says must not keep the job running: end it plainly
            log.exception("job %s: cannot compose its end; ending it without", job.id)
            writes_for = None


def ending_statuses(config: Config, job: Job, pending: list[str], host_count: int, word: str,
                    reason: str) -> list[forge.Write]:
    """Error statuses for the hosts a job did not finish, or one fleet-wide status when it listed none."""
    if job.verb != "parity" or job.commit_sha is None:
        return []
    targets: list[str | None] = list(pending) if pending or host_count else [None]
    repo = config.repo or LOCAL_REPO
    return [forge.status(repo, job.commit_sha, "error", CONTEXT.format(host=h) if h else "ka/parity",
                         f"job {job.id} {word}: {reason}", job_url(config, job.id, h)) for h in targets]


def _run_verb(services: Services, job: Job, log_line: Callable[[str], None],
              kick: Callable[[], None]) -> dict[str, Any]:
    if job.verb != "parity":
        raise RuntimeError(f"verb {job.verb!r} is not built yet")
    return ParityRun(services.config, services.store, job, log_line, kick).run()


def recover(services: Services) -> list[int]:
    """At worker start: end the jobs whose worker is gone as interrupted, with their statuses."""
    interrupted = []
    for job in services.store.dead_running():
        JobLog(services, job.id)("interrupted: the bot stopped while this job ran")
        current = services.store.job(job.id) or job
        end_job(services, current, "interrupted", "interrupted by a bot restart; push again to re-check",
                "interrupted")
        log.warning("job %s was interrupted by a restart", job.id)
        interrupted.append(job.id)
    return interrupted
