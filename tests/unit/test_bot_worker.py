"""The worker's ends of jobs, in process on a real store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.config import Config
from bot.forge import client as forge
from bot.jobs.endings import end_job
from bot.jobs.worker import JobLog, execute, hosts_failed
from bot.services import make_services
from bot.store import HostResult
from tests.support.db import sql


def test_a_job_whose_hosts_all_ended_posts_no_fleet_wide_error(tmp_path: Path) -> None:
    """The job object from the claim still says 0 hosts; what counts is the database at the end."""
    services = make_services(Config(state_dir=tmp_path / "state", insecure=True))
    store = services.store
    with store.tx() as db:
        job_id = int(db.execute("INSERT INTO jobs (verb, commit_sha, state, created_at) VALUES "
                                "('parity', ?, 'queued', ?)", ("a" * 40, time.time())).lastrowid or 0)
    claimed = store.claim(job_id)
    assert claimed is not None and claimed.host_count == 0
    store.set_hosts(job_id, ["ampere"], [])
    store.record_host(job_id, HostResult("ampere", "success", "ok", {}),
                      forge.status("o/r", "a" * 40, "success", "ka/parity/ampere", "ok", "u"))
    end_job(services, claimed, "failed", "OSError: No space left on device (recording the result)")
    contexts = [str(r["body"]) for r in sql(store, "SELECT body FROM outbox")]
    assert not any('"ka/parity"' in c for c in contexts), contexts
    assert store.job(job_id).state == "failed"  # type: ignore[union-attr]


@pytest.mark.parametrize(("result", "error"), [
    ({"hosts": 3, "states": {"success": 3}}, ""),
    ({"hosts": 3, "states": {"success": 1, "failure": 1, "error": 1}}, "2 of 3 hosts failed"),
    ({"hosts": 3, "states": {"error": 3}}, "3 of 3 hosts failed"),
    ({"states": {"failure": 1, "skipped": 2}}, "1 of 3 hosts failed, 2 not started"),  # a rollout that stopped
    ({"states": {"success": 1, "skipped": 1}}, "0 of 2 hosts failed, 1 not started"),  # stopped by a signal
    ({"hosts": 0, "states": {}}, ""),
    ({"artifacts": []}, ""),  # a build: no hosts' states, its own success or exception
])
def test_a_job_succeeds_only_when_every_host_does(result: dict[str, object], error: str) -> None:
    assert hosts_failed(result) == error


def test_a_job_that_crashes_says_so_in_public_and_keeps_the_stack_for_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    services = make_services(Config(state_dir=state, insecure=True))
    with services.store.tx() as db:
        ids = [int(db.execute("INSERT INTO jobs (verb, commit_sha, clone_url, state, created_at, requester) "
                              "VALUES (?, ?, ?, 'queued', ?, '{}')", (verb, "a" * 40, url, time.time())).lastrowid or 0)
               for verb, url in (("parity", str(state / "nowhere")), ("frob", "https://forge.example/x.git"))]
    explained, crashed = (execute(services, i) for i in ids)
    assert explained is not None and crashed is not None
    # a failure the tool explains: its words, with the bot's folder named by its setting, and no class name
    assert explained.error == ("the delivery's clone URL '$KA_STATE_DIR/nowhere' is not a remote URL; "
                               "set KA_REPO_URL to fetch from a local path")
    assert crashed.error == "an internal error in the bot (its log has the traceback)"
    logs = "".join((services.log_dir / f"{i}.log").read_text() for i in ids)
    assert str(state) not in logs and "Traceback" not in logs and "Error" not in logs
    assert "RuntimeError: job 2: no such verb 'frob'" in caplog.text and "Traceback" in caplog.text
    writes = " ".join(str(r["body"]) for r in sql(services.store, "SELECT body FROM outbox"))
    assert str(state) not in writes and "RuntimeError" not in writes


def test_a_traceback_a_tool_prints_line_by_line_shows_only_its_last_line(tmp_path: Path) -> None:
    services = make_services(Config(state_dir=tmp_path / "state", insecure=True))
    log = JobLog(services, 7)
    for line in ("== makepkg", "Traceback (most recent call last):", '  File "/usr/lib/x.py", line 3, in <module>',
                 "    main()", "ValueError: bad", "==> Finished"):
        log(line)
    shown = [ln.split(" ", 1)[1] for ln in (services.log_dir / "7.log").read_text().splitlines()]
    assert shown == ["== makepkg", "ValueError: bad", "==> Finished"]
