"""The worker: runs jobs from the durable queue (huey on SQLite) and flushes the outbox.

Jobs are claimed in our own ``jobs`` table (queued → running) before they run, so a task
that huey delivers twice runs once, and jobs that change a host wait while another one
runs for that host.  After a crash, :func:`recover` marks the jobs that were running as
interrupted, tells the forge, and re-queues the jobs that were waiting.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from huey import crontab

from bot import forge, outbox
from bot.parity import CONTEXT, LOCAL_REPO, ParityRun, job_url
from bot.services import Services
from bot.store import Job

log = logging.getLogger(__name__)
BUSY_RETRY = 5.0
DISPATCH_INTERVAL = 0.1


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
        """Safety net: flush the outbox and re-queue jobs whose task was lost."""
        flush_outbox()
        for job in services.store.jobs_in("queued"):
            with pending.lock:
                known = job.id in pending.waiting
            if not known and time.time() - job.created_at > 60:
                run_job(job.id)

    return Tasks(run_job=run_job, flush_outbox=flush_outbox)


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
    """Appends timestamped lines to a job's log file."""

    def __init__(self, services: Services, job_id: int) -> None:
        self.path = services.log_dir / f"{job_id}.log"

    def __call__(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def _poster(services: Services, job_id: int) -> Callable[[forge.Write], None]:
    def post(write: forge.Write) -> None:
        outbox.add(services.store, job_id, write)
    return post


def execute(services: Services, job_id: int, kick: Callable[[], None] = lambda: None) -> Job | None:
    """Claim and run one job; None when it was not claimable (done already, or its host is busy).

    The job's error boundary: whatever breaks, the job ends in a final state with a visible status.
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
        _quietly(log_line, "".join(traceback.format_exception(exc)).rstrip())
        _quietly(_report_failure, services, job, error)
    finally:
        services.store.finish(job_id, state, error or None)
    return services.store.job(job_id)


def _quietly(func: Callable[..., Any], *args: Any) -> None:
    """Run a reporting step whose own failure must not hide the job's."""
    try:
        func(*args)
    except Exception:
        log.exception("while reporting a failed job")


def _run_verb(services: Services, job: Job, log_line: Callable[[str], None],
              kick: Callable[[], None]) -> dict[str, Any]:
    if job.verb != "parity":
        raise RuntimeError(f"verb {job.verb!r} is not built yet")
    run = ParityRun(services.config, job, _poster(services, job.id), log_line,
                    lambda partial: services.store.set_result(job.id, partial), kick)
    return run.run(lambda hosts: services.store.set_hosts(job.id, hosts))


def _report_failure(services: Services, job: Job, reason: str, state_word: str = "failed") -> None:
    """Error statuses for the hosts of a job that did not finish (or one fleet-wide status)."""
    current = services.store.job(job.id) or job
    done = set(current.result)
    hosts: list[str | None] = [h for h in current.hosts if h not in done]
    if not current.hosts:
        hosts = [None]  # it died before listing the hosts: one fleet-wide status says so
    repo = services.config.repo or LOCAL_REPO
    post = _poster(services, job.id)
    for host in hosts:
        context = CONTEXT.format(host=host) if host else "ka/parity"
        assert job.commit_sha is not None
        post(forge.status(repo, job.commit_sha, "error", context, f"job {job.id} {state_word}: {reason}",
                          job_url(services.config, job.id, host)))


def recover(services: Services) -> list[int]:
    """At worker start: report interrupted jobs, re-queue waiting ones; return the interrupted ids."""
    interrupted = services.store.interrupt_running()
    for job in interrupted:
        JobLog(services, job.id)("interrupted: the bot stopped while this job ran")
        _report_failure(services, job, "interrupted by a bot restart; push again to re-check", "interrupted")
        log.warning("job %s was interrupted by a restart", job.id)
    return [j.id for j in interrupted]
