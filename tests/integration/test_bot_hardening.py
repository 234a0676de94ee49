"""Hostile and unlucky input against a real ``ka-bot serve``: each defect of the hardening issue, end to end.

A fork's pull request controls the manifests and patches the bot reads; slow clients,
full disks, hanging remotes and abrupt restarts happen.  Every test here failed before
the fix it stands for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from bot.events.delivery import sign
from tests.support.botkit import (
    SECRET,
    BotProcess,
    Rig,
    commit_and_push,
    delivery,
    free_port,
    kill_group,
    push_payload,
    wait_for,
)
from tests.support.db import sql
from tests.support.fleet import AMPERE, BOMB, manifest


def worker_pid(bot: BotProcess) -> int:
    """The pid of the bot's job worker (a child of serve)."""
    assert bot.proc is not None
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == bot.proc.pid and b"worker" in (proc / "cmdline").read_bytes().split(b"\0"):
                return int(proc.name)
    raise AssertionError("no worker process")


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


# --- 1: the alias bomb -----------------------------------------------------------------------

def test_alias_bomb_in_a_pushed_manifest_is_that_hosts_error(rig: Callable[..., Rig]) -> None:
    r = rig({"ampere": AMPERE, "ohm": manifest(["soc/base"])})
    warm = r.push(r.head()).json()["jobs"][0]  # load every module the worker needs first
    r.bot.wait_job(warm)
    pid = worker_pid(r.bot)
    before = vm_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
    (r.work / "fleet/bomb.yaml").write_text(BOMB)
    sha = commit_and_push(r.work, r.bare, "a fork's manifest")
    start = time.monotonic()
    job = r.push(sha).json()["jobs"][0]
    latest = r.final(sha, ["ampere", "bomb", "ohm"], timeout=30)
    assert time.monotonic() - start < 10
    assert latest["ka/parity/bomb"]["state"] == "error"
    assert "anchors (&a) and aliases are not allowed in a manifest" in latest["ka/parity/bomb"]["description"]
    assert latest["ka/parity/ampere"]["state"] == latest["ka/parity/ohm"]["state"] == "success"
    assert (vm_kib(pid, "VmHWM") - before) < 30 * 1024  # flat: not the gigabytes of an expanded bomb
    page = requests.get(f"{r.bot.url}/jobs/{job}?format=json", timeout=10)
    assert len(page.content) < 64 * 1024


# --- 4: a host file name that is not UTF-8 ------------------------------------------------------

def test_a_host_file_name_that_is_not_utf8_is_that_hosts_error(rig: Callable[..., Rig]) -> None:
    r = rig({"ampere": AMPERE, "ohm": manifest(["soc/base"])})
    (r.work / "fleet" / os.fsdecode(b"bad\xff.yaml")).write_text(manifest(["soc/base"]))
    (r.work / "fleet/Upper.yaml").write_text(manifest(["soc/base"]))
    sha = commit_and_push(r.work, r.bare, "odd names")
    job = r.push(sha).json()["jobs"][0]
    latest = r.final(sha, ["ampere", "ohm", "bad\\xff", "Upper"])
    assert latest["ka/parity/bad\\xff"]["state"] == latest["ka/parity/Upper"]["state"] == "error"
    assert "fleet/bad\\xff.yaml: file name: 'bad\\xff' is not a host name" in latest["ka/parity/bad\\xff"][
        "description"]
    assert latest["ka/parity/ampere"]["state"] == latest["ka/parity/ohm"]["state"] == "success"
    ended = r.bot.wait_job(job)
    assert (ended["state"], ended["error"]) == ("failed", "2 of 4 hosts failed")  # the hosts', not a crash
    for path in (f"/jobs/{job}", f"/jobs/{job}?format=json", "/jobs", "/jobs?format=json"):
        assert requests.get(r.bot.url + path, timeout=10).status_code == 200, path


def test_text_that_is_not_unicode_is_refused_or_escaped(rig: Callable[..., Rig]) -> None:
    """A manifest (or a delivery) may carry a lone surrogate escape; nothing may store it raw."""
    r = rig({"ampere": AMPERE, "ohm": manifest(["soc/base"]), "zeta": manifest(["soc/base"])})
    (r.work / "fleet/bad.yaml").write_text(manifest(["soc/base", '"driver/\\udcff"']))
    sha = commit_and_push(r.work, r.bare, "a fork's manifest with an escape")
    job = r.push(sha).json()["jobs"][0]
    latest = r.final(sha, ["ampere", "bad", "ohm", "zeta"])
    assert latest["ka/parity/bad"]["state"] == "error" and "\\udcff" in latest["ka/parity/bad"]["description"]
    assert {latest[f"ka/parity/{h}"]["state"] for h in ("ampere", "ohm", "zeta")} == {"success"}
    ended = r.bot.wait_job(job)
    assert (ended["state"], ended["error"]) == ("failed", "1 of 4 hosts failed")
    assert requests.get(f"{r.bot.url}/jobs/{job}", timeout=10).status_code == 200
    body = b'{"ref": "refs/heads/main", "repository": {"full_name": "fleet/kernel-agent\\udcff"}}'
    res = requests.post(r.bot.url + "/webhook", data=body, headers=_signed_headers(body), timeout=10)
    assert res.status_code == 400 and "not Unicode" in res.json()["error"]


# --- 6: memory bounded by one host's patch, not by the fleet ---------------------------------------

BIG_MIB = 16


def _big_patch() -> bytes:
    line = b"+" + b"x" * 62 + b"\n"
    count = BIG_MIB * 1024 * 1024 // len(line)
    return (b"diff --git a/drivers/big.c b/drivers/big.c\nnew file mode 100644\n--- /dev/null\n"
            b"+++ b/drivers/big.c\n" + f"@@ -0,0 +1,{count} @@\n".encode() + line * count)


def test_memory_is_bounded_by_a_hosts_patch_not_the_fleet(rig: Callable[..., Rig]) -> None:
    hosts = {f"h{n:02d}": manifest(["soc/base", "module/big"]) for n in range(12)}
    r = rig({"ampere": AMPERE}, KA_CHECK_WORKERS="1")
    r.bot.wait_job(r.push(r.head()).json()["jobs"][0])
    for host, text in hosts.items():
        (r.work / f"fleet/{host}.yaml").write_text(text)
    (r.work / "patches/module/big.patch").write_bytes(_big_patch())
    sha = commit_and_push(r.work, r.bare, "twelve hosts share a 16 MiB patch")
    pid = worker_pid(r.bot)
    before = vm_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    job = r.push(sha).json()["jobs"][0]
    assert r.bot.wait_job(job, timeout=120)["state"] == "succeeded"
    latest = r.final(sha, sorted(hosts))
    assert {latest[f"ka/parity/{h}"]["state"] for h in hosts} == {"success"}
    grown = (vm_kib(pid, "VmHWM") - before) / 1024
    # one host at a time holds its patch about three times (git's output being read, the file,
    # the concatenation): far under the 12 × 2 × 16 MiB that holding every host at once took
    assert grown < 5 * BIG_MIB, f"worker peak grew by {grown:.0f} MiB"


# --- 5: a full disk during a job ---------------------------------------------------------------

def _fill(folder: Path) -> Path:
    """Fill ``folder``'s file system; unbuffered, so that closing the file has nothing left to fail on."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_a_full_disk_mid_job_still_ends_every_job_and_host(rig: Callable[..., Rig], tmpfs: Callable[..., Path]
                                                            ) -> None:
    state = tmpfs(size="96m")
    hosts = {f"h{n:03d}": AMPERE for n in range(300)}
    r = rig(hosts, start=False, KA_WORKERS="1", KA_CHECK_WORKERS="1")
    r.bots = [BotProcess(state / "state", r.env)]
    r.bot.start()
    sha = r.head()
    job = r.push(sha).json()["jobs"][0]
    wait_for(lambda: sum(h["state"] != "pending" for h in r.bot.hosts(job).values()) >= 5, what="first hosts")
    filler = _fill(state)
    time.sleep(3)  # the job hits the full disk and cannot even record its end
    assert r.bot.job(job)["state"] == "running"
    filler.unlink()
    record = r.bot.wait_job(job, timeout=90)
    assert record["state"] == "failed" and "full" in record["error"]
    latest = r.final(sha, sorted(hosts), timeout=90)
    states = {x["state"] for x in latest.values()}
    assert states <= {"success", "error"} and "error" in states and "success" in states
    failed = [x for x in latest.values() if x["state"] == "error"]
    assert all(f"job {job} failed: " in x["description"] for x in failed)


# --- 9: kill -9 of serve and an immediate restart ------------------------------------------------

def test_restart_right_after_kill_9_of_serve_interrupts_the_old_job(rig: Callable[..., Rig]) -> None:
    hosts = {f"h{n:03d}": AMPERE for n in range(400)}
    r = rig(hosts, KA_WORKERS="1", KA_CHECK_WORKERS="1")
    sha = r.head()
    job = r.push(sha).json()["jobs"][0]
    wait_for(lambda: sum(h["state"] != "pending" for h in r.bot.hosts(job).values()) >= 5, what="first hosts")
    old = r.bot
    assert old.proc is not None
    os.kill(old.proc.pid, signal.SIGKILL)  # serve alone: its children learn of it through the kernel
    old.proc.wait()
    r.bots.append(BotProcess(r.state_dir, r.env))
    r.bot.start()
    assert r.bot.wait_job(job, timeout=60)["state"] == "interrupted"
    latest = r.final(sha, sorted(hosts))
    assert {x["state"] for x in latest.values()} <= {"success", "error"}
    kill_group(old.proc.pid)


# --- 10: a hanging fetch -------------------------------------------------------------------

class StallingServer:
    """An HTTP server that answers with headers and then never sends another byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n"
                         b"Content-Length: 100000\r\n\r\n001e# service=git-upload-pack\n")

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    procs: list[subprocess.Popen[bytes]] = []

    def serve(bare: Path) -> str:
        port = free_port()
        proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
                                 f"--port={port}", f"--base-path={bare.parent}", str(bare.parent)],
                                stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        url = f"git://127.0.0.1:{port}/{bare.name}"
        wait_for(lambda: subprocess.run(["git", "ls-remote", url], capture_output=True).returncode == 0,
                 30, "git daemon")
        return url

    yield serve
    for p in procs:  # git daemon runs git-daemon as a child: the whole group goes
        kill_group(p.pid)
        p.wait()


def test_a_hanging_remote_does_not_hold_up_other_commits(rig: Callable[..., Rig],
                                                         git_daemon: Callable[[Path], str]) -> None:
    r = rig({"ampere": AMPERE}, KA_REPO_URL="", KA_FETCH_IDLE_TIMEOUT="5", KA_WORKERS="2")
    stall = StallingServer()
    try:
        good_url = git_daemon(r.bare)
        # a commit only the hanging remote could have: its job can end only through the idle timeout
        hanging = r.push("b" * 40, f"http://127.0.0.1:{stall.port}/fleet.git").json()["jobs"][0]
        wait_for(lambda: r.bot.job(hanging)["state"] == "running", what="the hanging fetch to start")
        other = commit_and_push(r.work, r.bare, "another commit")
        start = time.monotonic()
        job = r.push(other, good_url).json()["jobs"][0]
        assert r.bot.wait_job(job, timeout=60)["state"] == "succeeded"
        assert time.monotonic() - start < 15  # not after the hanging fetch's deadline
        record = r.bot.wait_job(hanging, timeout=60)
        assert record["state"] == "failed" and "cannot fetch bbbbbbbbbbbb" in record["error"], record["error"]
    finally:
        stall.close()


# --- 11, 12: malformed input answers 4xx with a reason -----------------------------------------

def _raw(bot: BotProcess, request: bytes, wait: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", bot.port), timeout=wait) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(TimeoutError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def _signed_headers(body: bytes, **extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Forgejo-Event": "push", "X-Forgejo-Delivery": str(time.time()),
            **sign(SECRET.encode(), body), **extra}


def test_malformed_deliveries_are_4xx_with_a_reason(rig: Callable[..., Rig]) -> None:
    r = rig({"ampere": AMPERE})
    deep = b'{"repository": {"full_name": "fleet/kernel-agent"}, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    res = requests.post(r.bot.url + "/webhook", data=deep, headers=_signed_headers(deep), timeout=10)
    assert res.status_code == 400 and "nested deeper" in res.json()["error"]
    for bad in ({"x": 1}, ["git://x"], 7):
        payload = push_payload(r.head(), "https://forge.example/fleet.git")
        payload["repository"]["clone_url"] = bad
        res = r.bot.send(delivery("push-forgejo-12", payload))
        assert res.status_code == 400 and "repository.clone_url must be a line of text" in res.json()["error"]
    payload = push_payload(r.head() + "\n", str(r.bare))
    res = r.bot.send(delivery("push-forgejo-12", payload))
    assert res.status_code == 400 and res.json()["error"] == "push: after is not a commit id"
    assert requests.get(r.bot.url + "/jobs/" + "9" * 30, timeout=10).status_code == 404
    assert requests.get(r.bot.url + "/jobs?before=" + "9" * 30, timeout=10).status_code == 404
    assert requests.get(r.bot.url + "/jobs?limit=x", timeout=10).status_code == 400
    assert requests.get(r.bot.url + "/jobs?limit=0", timeout=10).status_code == 400
    assert requests.get(r.bot.url + "/jobs?format=json&limit=0", timeout=10).status_code == 400


def test_bad_chunked_bodies(rig: Callable[..., Rig]) -> None:
    r = rig({"ampere": AMPERE}, KA_MAX_BODY="100000")
    head = (b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Forgejo-Event: push\r\n"
            b"X-Forgejo-Signature: 00\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    answer = _raw(r.bot, head + b"zz\r\nabc\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    big = b"".join(b"%x\r\n%s\r\n" % (50000, b"x" * 50000) for _ in range(3)) + b"0\r\n\r\n"
    answer = _raw(r.bot, head + big)
    assert answer.startswith(b"HTTP/1.1 413") and b"over the 100000-byte limit" in answer, answer[:300]


# --- 2: slow clients ---------------------------------------------------------------------------

def test_fifty_slow_clients_do_not_stop_intake(rig: Callable[..., Rig]) -> None:
    r = rig({"ampere": AMPERE}, KA_BODY_TIMEOUT="4")
    slow = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", r.bot.port), timeout=30)
        s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-Forgejo-Event: push\r\nContent-Length: 1000\r\n\r\n{")
        slow.append(s)
    try:
        time.sleep(0.5)
        for n in range(10):  # each within Forgejo's 5 s, or Forgejo gives up and the delivery is lost
            sha = commit_and_push(r.work, r.bare, f"while slow clients hang on {n}")
            assert r.push(sha).status_code == 202
        answers = [s.recv(200) for s in slow]  # the deadline frees their threads
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:3]
    finally:
        for s in slow:
            s.close()


def test_clients_that_send_their_headers_slowly_do_not_stop_intake(rig: Callable[..., Rig]) -> None:
    """More slow clients than the bot has threads, each sending a header line a second."""
    r = rig({"ampere": AMPERE}, KA_BODY_TIMEOUT="3")
    stop = threading.Event()
    socks = [socket.create_connection(("127.0.0.1", r.bot.port), timeout=30) for _ in range(80)]

    def trickle() -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(b"POST /webhook HTTP/1.1\r\n")
        for n in range(60):
            if stop.wait(1):
                return
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(f"X-Slow-{n}: x\r\n".encode())
    threading.Thread(target=trickle, daemon=True).start()
    try:
        time.sleep(4)  # past the deadline of the first wave: their threads are free again
        for n in range(5):
            sha = commit_and_push(r.work, r.bare, f"while headers trickle in {n}")
            assert r.push(sha).status_code == 202
    finally:
        stop.set()
        for s in socks:
            s.close()


# --- 13: start-up errors -------------------------------------------------------------------------

def _worker(state: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KA_")}, "KA_WEBHOOK_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "bot", "worker", "--state-dir", str(state)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_start_up_errors_are_clear_and_exit_3(tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    res = _worker(tmpfs(readonly=True) / "state")
    assert res.returncode == 3 and "cannot use the state folder: Read-only file system" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "ka-bot.db").write_bytes(b"not a database, and not empty either" * 200)
    res = _worker(corrupt)
    assert res.returncode == 3 and "the database is damaged" in res.stderr and ".recover" in res.stderr
    newer = tmp_path / "newer"
    newer.mkdir()
    with contextlib.closing(sqlite3.connect(newer / "ka-bot.db")) as db:
        db.execute("PRAGMA user_version = 99")
    res = _worker(newer)
    assert res.returncode == 3 and "schema 99, newer than this bot's" in res.stderr


def test_a_damaged_page_is_found_by_quick_check(tmp_path: Path) -> None:
    from bot.store import Store

    state = tmp_path / "state"
    store = Store(state / "ka-bot.db")
    with store.tx() as db:
        db.executemany("INSERT INTO deliveries VALUES (?, 'push', NULL, NULL, 0, 'ignored', '', ?)",
                       [(str(n), b"x" * 500) for n in range(2000)])
    sql(store, "PRAGMA wal_checkpoint(TRUNCATE)")
    del store
    data = bytearray((state / "ka-bot.db").read_bytes())
    page = 4096
    data[page * 20:page * 21] = b"\xa5" * page  # one b-tree page in the middle, scribbled over
    (state / "ka-bot.db").write_bytes(bytes(data))
    res = _worker(state)
    assert res.returncode == 3 and "the database is damaged" in res.stderr, res.stderr


# --- 14, 17: bounded pages, metrics labels ------------------------------------------------------------

def test_job_list_is_paginated(rig: Callable[..., Rig]) -> None:
    r = rig({"ampere": AMPERE})
    from bot.store import Store

    store = Store(r.state_dir / "ka-bot.db")
    with store.tx() as db:
        db.executemany("INSERT INTO jobs (verb, state, created_at, result) VALUES ('parity', 'failed', 0, ?)",
                       [('{"big": "' + "x" * 10000 + '"}',) for _ in range(120)])
    first = requests.get(r.bot.url + "/jobs?format=json", timeout=10).json()
    assert len(first["jobs"]) == 50 and first["older"] == first["jobs"][-1]["id"]
    rest = requests.get(f"{r.bot.url}/jobs?format=json&before={first['older']}&limit=1000", timeout=10).json()
    assert len(rest["jobs"]) == 70 and rest["older"] is None
    assert "older jobs" in requests.get(r.bot.url + "/jobs", timeout=10).text


def test_an_unknown_event_name_is_counted_as_other(rig: Callable[..., Rig]) -> None:
    r = rig({"ampere": AMPERE})
    body = b'{"repository": {"full_name": "fleet/kernel-agent"}}'
    for name in ("made_up_one", "made_up_two"):
        res = requests.post(r.bot.url + "/webhook", data=body, timeout=10,
                            headers=_signed_headers(body, **{"X-Forgejo-Event": name}))
        assert res.status_code == 200
    metrics = requests.get(r.bot.url + "/metrics", timeout=10).text
    assert 'ka_bot_deliveries_total{event="other",outcome="ignored"} 2.0' in metrics
    assert "made_up" not in metrics
