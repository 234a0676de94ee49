"""The bot end to end: a real ``ka-bot serve`` (gunicorn + worker), the fake Forgejo, real git repositories."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support import PROJECT
from tests.support.botkit import (
    REPO,
    SECRET,
    BotProcess,
    all_samples,
    commit_and_push,
    delivery,
    fleet_forge_repo,
    pr_payload,
    push_payload,
    sample,
    wait_for,
)
from tests.support.botkit import SAMPLE_DECISIONS as EXPECTED
from tests.support.fakeforgejo import FakeForgejo
from tests.support.fleet import AMPERE, fleet_files, manifest
from tests.support.kernel import SmallKernel, git

PUBLIC = "http://bot.example"


@dataclass
class Setup:
    fake: FakeForgejo
    bot: BotProcess
    work: Path
    bare: Path

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD").decode().strip()

    def push(self, sha: str | None = None, **kw: str) -> requests.Response:
        return self.bot.send(delivery("push-forgejo-12", push_payload(sha or self.head(), str(self.bare), **kw)))


def _start(tmp_path: Path, k: SmallKernel, hosts: dict[str, str], **env: str) -> Setup:
    fake = FakeForgejo(repo=REPO).start()
    work, bare = fleet_forge_repo(tmp_path, hosts, fleet_files(k))
    bot = BotProcess(tmp_path / "state", {
        "KA_FORGEJO_URL": fake.url, "KA_FORGEJO_TOKEN": fake.token, "KA_WEBHOOK_SECRET": SECRET,
        "KA_REPO": REPO, "KA_KERNEL_TREE": str(k.bare), "KA_PUBLIC_URL": PUBLIC, "KA_REPO_URL": str(bare),
        **env}).start()
    return Setup(fake, bot, work, bare)


@pytest.fixture
def setup(tmp_path: Path, small_kernel: SmallKernel) -> Iterator[Setup]:
    s = _start(tmp_path, small_kernel, {"ampere": AMPERE, "ohm": manifest(["soc/base"])})
    yield s
    s.bot.stop()
    s.fake.stop()
    assert s.fake.violations == []


def _final(fake: FakeForgejo, sha: str, hosts: list[str]) -> dict[str, dict]:
    def done() -> bool:
        latest = fake.latest(sha)
        return all(latest.get(f"ka/parity/{h}", {}).get("state") not in (None, "pending") for h in hosts)
    wait_for(done, what=f"final statuses for {hosts}")
    return fake.latest(sha)


def test_push_gives_pending_then_final_for_every_host(setup: Setup) -> None:
    sha = setup.head()
    res = setup.push(sha)
    assert res.status_code == 202, res.text
    job = res.json()["jobs"][0]
    assert setup.bot.wait_job(job)["state"] == "succeeded"
    latest = _final(setup.fake, sha, ["ampere", "ohm"])
    for host in ("ampere", "ohm"):
        states = [s["state"] for s in setup.fake.statuses(sha) if s["context"] == f"ka/parity/{host}"]
        assert states == ["pending", "success"]
        status = latest[f"ka/parity/{host}"]
        assert status["target_url"] == f"{PUBLIC}/jobs/{job}#host-{host}"
        assert status["description"].startswith(f"job {job}: ")
        assert " on v6.12.0: applies, parity unset" in status["description"]
    b2 = setup.bot.hosts(job)["ampere"]["detail"]["b2sum"]
    assert latest["ka/parity/ampere"]["description"].split(": ", 1)[1].startswith(b2[:12])


def test_pr_head_failing_for_one_host(setup: Setup) -> None:
    (setup.work / "fleet/ohm.yaml").write_text(manifest(["soc/base", "module/bad"]))
    git(setup.work, "checkout", "-q", "-b", "topic")
    sha = commit_and_push(setup.work, setup.bare, "ohm: try the goodix rework", ref="topic")
    git(setup.bare, "update-ref", "refs/pull/7/head", sha)  # what Forgejo keeps for every PR
    res = setup.bot.send(delivery("pull_request-synchronized-gitea-1.22", pr_payload(7, sha, str(setup.bare))))
    assert res.status_code == 202
    latest = _final(setup.fake, sha, ["ampere", "ohm"])
    assert latest["ka/parity/ampere"]["state"] == "success"
    assert latest["ka/parity/ohm"]["state"] == "failure"
    assert "does not apply: patches/module/bad.patch (context-mismatch)" in latest["ka/parity/ohm"]["description"]


def test_hosts_added_and_invalid_at_the_commit(setup: Setup) -> None:
    (setup.work / "fleet/volt.yaml").write_text(manifest(["soc/base"]))
    (setup.work / "fleet/watt.yaml").write_text(manifest(["soc/base"], ref="v5.4"))
    (setup.work / "fleet/ohm.yaml").write_text(manifest(["soc/nope"]))
    (setup.work / "fleet/ampere.yaml").unlink()
    sha = commit_and_push(setup.work, setup.bare, "add volt and watt, break ohm, retire ampere")
    setup.push(sha)
    latest = _final(setup.fake, sha, ["ohm", "volt", "watt"])
    assert latest["ka/parity/volt"]["state"] == "success"
    assert latest["ka/parity/watt"]["state"] == "error"
    assert ":fleet/watt.yaml: baseline.ref: 'v5.4' is not a tag or commit" in latest["ka/parity/watt"][
        "description"]
    assert latest["ka/parity/ohm"]["state"] == "error"
    assert "invalid at this commit" in latest["ka/parity/ohm"]["description"]
    assert "series 'soc/nope' does not exist" in latest["ka/parity/ohm"]["description"]
    assert "ka/parity/ampere" not in latest


def test_replay_creates_no_second_job_or_status(setup: Setup) -> None:
    sha = setup.head()
    payload = push_payload(sha, str(setup.bare))
    first = setup.bot.send(delivery("push-forgejo-12", payload))
    setup.bot.wait_job(first.json()["jobs"][0])
    _final(setup.fake, sha, ["ampere", "ohm"])
    before = len(setup.fake.statuses(sha))
    replay = setup.bot.send(delivery("push-forgejo-12", payload))  # Forgejo's Replay: same body, new id
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert requests.get(setup.bot.url + "/jobs?format=json", timeout=5).json()["jobs"][0]["id"] == \
        first.json()["jobs"][0]
    wait_for(lambda: requests.get(setup.bot.url + "/healthz", timeout=5).json()["outbox_backlog"] == 0,
             what="empty outbox")
    assert len(setup.fake.statuses(sha)) == before == 4


@pytest.mark.parametrize("rewrite", [False, True])
def test_every_shared_payload_is_handled_or_ignored(setup: Setup, rewrite: bool) -> None:
    jobs = []
    for name in all_samples():
        payload = sample(name)["payload"]
        if rewrite:
            payload["repository"]["full_name"] = REPO
        res = setup.bot.send(delivery(name, payload, secret=SECRET, keep_body=not rewrite))
        assert res.status_code in (200, 202), (name, res.status_code, res.text)
        body = res.json()
        assert body["outcome"] in ("queued", "ignored", "ping", "duplicate") and body["reason"], (name, body)
        if not rewrite:
            assert body["outcome"] == "ignored" and "this bot serves fleet/kernel-agent" in body["reason"]
        jobs += body.get("jobs", [])
    for job in set(jobs):  # commits of the samples do not exist here: each job must still end visibly
        record = setup.bot.wait_job(job)
        assert record["state"] == "failed" and "cannot fetch" in record["error"]
        sha = record["commit_sha"]
        wait_for(lambda sha=sha: setup.fake.latest(sha).get("ka/parity", {}).get("state") == "error",
                 what=f"error status for job {job}")
    assert len(set(jobs)) == (sum(v == "parity" for v in EXPECTED.values()) if rewrite else 0)


def test_forgejo_down_while_reporting(setup: Setup) -> None:
    setup.fake.down()
    sha = setup.head()
    job = setup.push(sha).json()["jobs"][0]
    assert setup.bot.wait_job(job)["state"] == "succeeded"
    metrics = requests.get(setup.bot.url + "/metrics", timeout=5).text
    assert "ka_bot_outbox_backlog 4.0" in metrics
    setup.fake.up()
    latest = _final(setup.fake, sha, ["ampere", "ohm"])
    assert {s["state"] for s in latest.values()} == {"success"}
    assert [s["state"] for s in setup.fake.statuses(sha)] == ["pending", "pending", "success", "success"]


def test_sigkill_mid_job_then_restart_reports_interrupted(tmp_path: Path, small_kernel: SmallKernel) -> None:
    hosts = {f"h{n:03d}": AMPERE for n in range(400)}
    s = _start(tmp_path, small_kernel, hosts, KA_WORKERS="1")
    try:
        sha = s.head()
        job = s.push(sha).json()["jobs"][0]
        wait_for(lambda: sum(h["state"] != "pending" for h in s.bot.hosts(job).values()) >= 5,
                 what="the first hosts checked", timeout=60)
        s.bot.kill()
        assert s.bot.job_from_db(job)["state"] == "running"  # really killed mid-job
        s.bot.start()
        latest = _final(s.fake, sha, sorted(hosts))
        assert s.bot.job(job)["state"] == "interrupted"
        states = {x["state"] for x in latest.values()}
        assert states <= {"success", "error"} and "error" in states
        interrupted = [x for x in latest.values() if x["state"] == "error"]
        assert all(f"job {job} interrupted: interrupted by a bot restart" in x["description"] for x in interrupted)
    finally:
        s.bot.stop()
        s.fake.stop()
    assert s.fake.violations == []


def test_fifty_deliveries_at_once(setup: Setup) -> None:
    shas = [commit_and_push(setup.work, setup.bare, f"change {n}") for n in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(lambda sha: setup.push(sha), shas))
    assert [r.status_code for r in replies] == [202] * 50
    metrics = requests.get(setup.bot.url + "/metrics", timeout=5).text
    assert 'ka_bot_deliveries_total{event="push",outcome="queued"} 50.0' in metrics
    for r in replies:
        assert setup.bot.wait_job(r.json()["jobs"][0], timeout=120)["state"] == "succeeded"
    for sha in shas:
        _final(setup.fake, sha, ["ampere", "ohm"])


def test_pages_escape_user_content(setup: Setup) -> None:
    res = setup.bot.send(delivery("push-forgejo-12", push_payload(setup.head(), str(setup.bare),
                                                                   who="<script>alert(1)</script>")))
    job = res.json()["jobs"][0]
    setup.bot.wait_job(job)
    for path in ("/jobs", f"/jobs/{job}"):
        page = requests.get(setup.bot.url + path, timeout=5).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    page = requests.get(f"{setup.bot.url}/jobs/{job}", timeout=5).text
    assert 'id="host-ampere"' in page and "status ka/parity/ampere = success" in page
    payload = push_payload(commit_and_push(setup.work, setup.bare, "another"), str(setup.bare))
    payload["compare_url"] = "javascript:alert(1)"
    other = setup.bot.send(delivery("push-forgejo-12", payload)).json()["jobs"][0]
    assert other != job
    page = requests.get(f"{setup.bot.url}/jobs/{other}", timeout=5).text
    assert 'href="javascript:' not in page and "push by maintainer" in page
    assert requests.get(setup.bot.url + "/jobs/999", timeout=5).status_code == 404


def test_body_size_cap_and_bad_signature(setup: Setup) -> None:
    d = delivery("push-forgejo-12", push_payload(setup.head(), str(setup.bare)))
    assert setup.bot.send(delivery("push-forgejo-12", push_payload(setup.head(), "/x"), secret="wrong")).status_code \
        == 401
    big = requests.post(setup.bot.url + "/webhook", data=b"x" * (6 * 1024 * 1024), headers=d.headers, timeout=10)
    assert big.status_code == 413
    assert 'ka_bot_deliveries_total' not in requests.get(setup.bot.url + "/metrics", timeout=5).text.split(
        "# TYPE ka_bot_deliveries_total counter")[1].split("#")[0]


def test_refuses_to_start_without_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KA_")}
    res = subprocess.run([sys.executable, "-m", "bot", "serve", "--state-dir", str(tmp_path / "s")],
                         env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "no webhook secret" in res.stderr


def test_a_busy_port_is_named_with_the_way_to_choose_another(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KA_")}, "KA_WEBHOOK_SECRET": "s" * 32,
           "KA_REPO": "o/r", "KA_REPO_URL": str(tmp_path)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "bot", "serve", "--state-dir", str(tmp_path / "s"),
                              "--port", str(port)], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 3, res.stderr
    assert f"127.0.0.1:{port} is in use" in res.stderr and "--port N" in res.stderr and "KA_PORT=N" in res.stderr
    assert "exited" not in res.stderr and not (tmp_path / "s").exists()  # refused before anything was made


def _ppid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_local_clone_url_from_a_delivery_is_refused(tmp_path: Path, small_kernel: SmallKernel) -> None:
    s = _start(tmp_path, small_kernel, {"ampere": AMPERE}, KA_REPO_URL="")
    try:
        sha = s.head()
        job = s.push(sha).json()["jobs"][0]
        record = s.bot.wait_job(job)
        assert record["state"] == "failed" and "is not a remote URL; set KA_REPO_URL" in record["error"]
        wait_for(lambda: s.fake.latest(sha).get("ka/parity", {}).get("state") == "error", what="error status")
    finally:
        s.bot.stop()
        s.fake.stop()


def test_worker_death_stops_serve_with_an_error(setup: Setup) -> None:
    assert setup.bot.proc is not None
    children = [p for p in Path("/proc").glob("[0-9]*") if _ppid(p) == setup.bot.proc.pid
                and b"worker" in (p / "cmdline").read_bytes().split(b"\0")]
    assert len(children) == 1
    os.kill(int(children[0].name), 9)
    assert setup.bot.proc.wait(timeout=30) == 3
    assert "worker exited (killed by signal 9); stopping the bot" in setup.bot.log()


def test_deliver_command_runs_the_whole_flow(setup: Setup) -> None:
    sha = setup.head()
    sample_file = PROJECT / "tests/samples/forgejo/payloads/push-forgejo-12.json"
    deliver = [sys.executable, "-m", "bot", "deliver", str(sample_file), "--url", setup.bot.url + "/webhook"]
    res = subprocess.run([*deliver, "--repo", REPO, "--commit", sha], env={**os.environ, "KA_WEBHOOK_SECRET": SECRET},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.startswith("202 "), res.stdout + res.stderr
    latest = _final(setup.fake, sha, ["ampere", "ohm"])
    assert {s["state"] for s in latest.values()} == {"success"}
    wrong = subprocess.run([*deliver, "--secret", "not-the-secret"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 1 and wrong.stdout.startswith("401 ")
