"""The worker: runs jobs from the durable queue (huey on SQLite) and flushes the outbox.

Jobs are claimed in our own ``jobs`` table (queued → running) before they run, so a task
that huey delivers twice runs once, and jobs that change a host wait while another one
runs for that host.  After a crash, :func:`recover` marks the jobs that were running as
interrupted, tells the forge, and re-queues the jobs that were waiting.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from huey import crontab

from bot import mirror, owner, public
from bot.forge import outbox
from bot.forge.summary import Summaries
from bot.jobs import live
from bot.jobs.accept import Acceptor
from bot.jobs.build import run_build
from bot.jobs.bump import run_bump
from bot.jobs.endings import end_job
from bot.jobs.install import run_install
from bot.jobs.parity import ParityRun
from bot.jobs.trusted import default_head
from bot.services import Services
from bot.store import Job, StateError
from ka.errors import KaError

log = logging.getLogger(__name__)
BUSY_RETRY = 5.0
DISPATCH_INTERVAL = 0.1
#: comments acted on at once (each may wait on the forge or a fetch; none waits behind a build)
COMMAND_LANES = 4


class Flusher:
    """The outbox's own thread: it sends as soon as it is kicked, and retries when the forge says so.

    Not a huey task: a job that holds every worker thread (a long build) must not hold back the
    statuses, acknowledgements and replies of everything else.
    """

    IDLE = 5.0  # a look at the outbox even unkicked: writes other processes queue (the intake's reactions)

    def __init__(self, services: Services) -> None:
        self.services = services
        self.summaries = Summaries(services.store, services.config, services.forge)
        self.event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ka-outbox", daemon=True)

    def start(self) -> Flusher:
        self.thread.start()
        return self

    def kick(self) -> None:
        """Send what is due now."""
        self.event.set()

    def _run(self) -> None:
        delay: float | None = 0.0
        while True:
            self.event.wait(timeout=self.IDLE if delay is None else min(delay, self.IDLE))
            self.event.clear()
            try:
                delay = outbox.flush(self.services.store, self.services.forge, self.summaries)
            except Exception:  # a locked or full database: try again in a while
                log.exception("outbox flush: will try again")
                delay = 2.0


@dataclass
class Tasks:
    """The huey task that runs jobs, the lane of comments' commands, and the outbox's flusher."""

    run_job: Any
    flusher: Flusher
    commands: ThreadPoolExecutor

    def start(self, job_id: int, verb: str) -> None:
        """Hand a queued job to its lane: a comment's commands never wait behind builds and checks."""
        if verb == "commands":
            self.commands.submit(self._commands, job_id)
        else:
            self.run_job(job_id)

    def _commands(self, job_id: int) -> None:
        try:
            execute(self.flusher.services, job_id, kick=self.flusher.kick)
        except Exception:  # execute() ends the job whatever happens; this only keeps the lane alive
            log.exception("commands job %s", job_id)
        self.flusher.kick()


def build_tasks(services: Services) -> Tasks:
    """Register the tasks (the web app only enqueues them; the worker runs them)."""
    huey = services.huey
    waiting: set[int] = set()  # jobs this worker re-tries already (a busy host), so retries never pile up
    lock = threading.Lock()
    housekeeping = SimpleNamespace(last=0.0)
    flusher = Flusher(services)

    @huey.task(name="run_job")
    def run_job(job_id: int) -> None:
        with lock:
            waiting.discard(job_id)
        ran = execute(services, job_id, kick=flusher.kick)
        if ran is None and _waiting(services, job_id):
            with lock:
                again = job_id not in waiting
                waiting.add(job_id)
            if again:
                run_job.schedule((job_id,), delay=BUSY_RETRY)
        flusher.kick()

    @huey.periodic_task(crontab(minute="*"), name="sweep")
    def sweep() -> None:
        """Safety net: flush the outbox and re-queue jobs whose task was lost; prune; tidy the mirror."""
        flusher.kick()
        for job in services.store.jobs_in("queued"):
            with lock:
                known = job.id in waiting
            if not known and time.time() - job.created_at > 60:
                tasks.start(job.id, job.verb)
        prune(services)
        live.refresh_when_due(services)
        if time.time() - housekeeping.last > 3600:
            housekeeping.last = time.time()
            tidy_mirror(services)

    tasks = Tasks(run_job=run_job, flusher=flusher,
                  commands=ThreadPoolExecutor(max_workers=COMMAND_LANES, thread_name_prefix="ka-commands"))
    return tasks


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
    keep = services.store.commits_in_use(since)
    try:
        return mirror.maintain(services.config.state_dir / "mirror.git", keep, now)
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
    last, written = 0, 0
    while True:
        try:
            for job_id, verb in services.store.queued_after(last):
                tasks.start(job_id, verb)
                last = job_id
            newest = services.store.newest_write()
            if newest > written:  # the web app queued a write (a reaction to a command): send it now
                written = newest
                tasks.flusher.kick()
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
        self.scrub = services.scrub  # the job log is a public page: the bot's folders are named as settings
        self.failed = False
        self.tracing = False  # inside a Python traceback a tool printed, line by line: only its last line shows

    def __call__(self, line: str) -> None:
        if "Traceback (most recent call last):" in line:
            self.tracing = True
            return
        if self.tracing and line[:1].isspace():
            return
        self.tracing = False
        try:
            with open(self.path, "a", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {self.scrub(line)}\n")
        except OSError as exc:
            if not self.failed:
                log.warning("job log %s: %s; later lines are dropped", self.path, exc)
            self.failed = True


class JobCancelled(Exception):
    """The job stopped where it could, because someone asked (``/ka cancel``)."""




def execute(services: Services, job_id: int, kick: Callable[[], None] = lambda: None) -> Job | None:
    """Claim and run one job; None when it was not claimable (done already, or its host is busy).

    The job's error boundary: whatever breaks, the job ends in a final state, every host it
    covers gets a final status, and a command that asked for it gets its terminal reply, as
    soon as the database takes writes again.
    """
    job = services.store.claim(job_id)
    if job is None:
        return None
    log_line = JobLog(services, job_id)
    state, error = "failed", "internal error"
    try:
        log_line(f"job {job.id} {job.verb} on {job.commit_sha or '-'} started")
        result = _run_verb(services, job, log_line, kick)
        services.store.set_result(job_id, public.scrub_tree(services.scrub, result))
        error = hosts_failed(result)  # the job ran to its end, but it succeeded only if every host did
        state = "failed" if error else "succeeded"
        log_line(f"job {job.id} {state}" + (f": {error}" if error else ""))
    except JobCancelled as exc:
        state, error = "cancelled", str(exc)
        log_line(f"job {job.id} {error}")
    except KaError as exc:  # a failure the verb explains in words: the job's log ends with them, not our stack
        error = services.scrub(public.reason(exc))
        log.info("job %s failed: %s: %s", job_id, type(exc).__name__, exc)
        log_line(f"job {job.id} failed: {error}")
    except Exception as exc:  # a bug: its traceback goes to the bot's own log, not to a page anyone may read
        error = services.scrub(public.reason(exc))
        log.exception("job %s failed", job_id)
        log_line(f"job {job.id} failed: {error}")
    finally:
        end_job(services, job, state, error or None)
    return services.store.job(job_id)


def hosts_failed(result: dict[str, Any]) -> str:
    """``"2 of 3 hosts failed"`` when a job's hosts did not all end in success; ``""`` when they did (or the
    job has no hosts).  A job whose hosts failed is told apart from one that crashed by this wording."""
    states = result.get("states")
    if not isinstance(states, dict):
        return ""
    bad = sum(n for s, n in states.items() if s not in ("success", "skipped"))
    skipped = states.get("skipped", 0)  # a rollout's hosts after the one that failed
    if not bad and not skipped:
        return ""
    return f"{bad} of {sum(states.values())} hosts failed" + (f", {skipped} not started" if skipped else "")


def _run_verb(services: Services, job: Job, log_line: Callable[[str], None],
              kick: Callable[[], None]) -> dict[str, Any]:
    if job.verb == "commands":
        return Acceptor(services, job, log_line).run()
    if job.verb == "build":
        return run_build(services, job, log_line, kick)
    if job.verb in ("install", "rollback"):
        return run_install(services, job, log_line, kick)
    if job.verb == "bump":
        return run_bump(services, job, log_line, kick)
    if job.verb != "parity":
        raise RuntimeError(f"job {job.id}: no such verb {job.verb!r}")

    def stop() -> None:
        reason = services.store.cancel_reason(job.id)
        if reason:
            raise JobCancelled(reason)
    return ParityRun(services.config, services.store, job, log_line, lambda: default_head(services, job.clone_url),
                     kick, stop).run()


def recover(services: Services) -> list[int]:
    """At worker start: end the jobs whose worker is gone as interrupted, with their statuses and replies."""
    interrupted = []
    for job in services.store.dead_running():
        JobLog(services, job.id)("interrupted: the bot stopped while this job ran")
        end_job(services, job, "interrupted", "interrupted by a bot restart")
        log.warning("job %s was interrupted by a restart", job.id)
        interrupted.append(job.id)
    return interrupted
