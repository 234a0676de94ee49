"""Helpers for bot tests: deliveries built from the shared samples, a real bot process, a fleet repo."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bot.cli import go_json
from bot.config import Config
from bot.events.delivery import sign
from bot.jobs.intake import Reply, receive
from bot.store import Store
from handlers import router
from tests.support.fakeforgejo import FakeForgejo
from tests.support.kernel import SmallKernel, git, write_fleet

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "forgejo" / "payloads"
SECRET = "kernel-agent-test-secret"
REPO = "fleet/kernel-agent"
PUBLIC = "http://bot.example"


def sample(name: str) -> dict[str, Any]:
    """One shared delivery file (event, headers, payload, raw_body, secret)."""
    return json.loads((SAMPLES / f"{name}.json").read_text())


def all_samples() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.json"))


@dataclass
class Delivery:
    """A delivery ready to send: body bytes and headers, signed as Forgejo signs."""

    body: bytes
    headers: dict[str, str]

    @property
    def id(self) -> str:
        return self.headers["X-Forgejo-Delivery"]


INTAKE = Config(repo=REPO, webhook_secret=SECRET)  # the settings intake runs with in-process tests


def send(store: Store, d: Delivery, config: Config = INTAKE) -> Reply:
    """Hand a delivery to intake in this process, as the web app does."""
    return receive(store, router, config, d.headers, d.body)


def delivery(name: str, payload: dict[str, Any] | None = None, secret: str | None = SECRET,
             delivery_id: str | None = None, keep_body: bool = False) -> Delivery:
    """The sample ``name``; with ``payload`` the body is that payload, serialised as Go does."""
    data = sample(name)
    body = data["raw_body"].encode() if keep_body or payload is None else go_json(payload)
    headers = {k: v for k, v in data["headers"].items()
               if not k.lower().endswith(("signature", "signature-256", "delivery", "content-length"))}
    did = delivery_id or str(uuid.uuid4())
    headers.update({"X-Forgejo-Delivery": did, "X-Gitea-Delivery": did, "Content-Type": "application/json"})
    if secret is not None:
        headers.update(sign(secret.encode(), body))
    return Delivery(body, headers)


def push_payload(sha: str, clone_url: str, ref: str = "refs/heads/main", who: str = "maintainer") -> dict[str, Any]:
    """A Forgejo 12 push, rewritten to our repository and commit."""
    p = sample("push-forgejo-12")["payload"]
    p.update({"ref": ref, "after": sha, "before": "0" * 40})
    p["repository"].update({"full_name": REPO, "clone_url": clone_url})
    p["pusher"]["login"] = who
    return p


def pr_payload(number: int, sha: str, clone_url: str, action: str = "synchronized") -> dict[str, Any]:
    """A Forgejo 12 pull request, rewritten to our repository and head commit."""
    p = sample("pull_request-opened-forgejo-12")["payload"]
    p.update({"action": action, "number": number})
    p["pull_request"]["number"] = number
    p["pull_request"]["head"]["sha"] = sha
    p["repository"].update({"full_name": REPO, "clone_url": clone_url})
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: process groups started by tests and not yet stopped; the session's end kills what is left
STARTED: set[int] = set()


def kill_group(pgid: int) -> None:
    """SIGKILL a process group that a test started (it may be gone already)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    STARTED.discard(pgid)


@dataclass
class BotProcess:
    """A real ``ka-bot serve`` (gunicorn + worker) in its own process group."""

    state_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()
    cwd: str | None = None  # a service starts in "/" (systemd's default), a test's bot where the test runs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """What starts this bot (a subclass may start it otherwise: as a unit's ExecStart, say)."""
        return [sys.executable, "-m", "bot", "serve", "--port", str(self.port), "--state-dir", str(self.state_dir),
                *self.args]

    def environment(self) -> dict[str, str]:
        """Its environment: this process's, with the bot's settings over it."""
        return {**os.environ, **self.env}

    def start(self, deadline: float = 60) -> BotProcess:
        """Start the bot and wait for its first answer; whatever goes wrong, nothing is left running."""
        log = open(self.state_dir.parent / f"bot-{self.port}.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(self.command(), env=self.environment(), stdout=log, stderr=log, cwd=self.cwd,
                                     start_new_session=True)
        STARTED.add(self.proc.pid)
        try:
            wait_until(self._answers, deadline, "the bot's first answer on /healthz")
        except BaseException:
            self.kill()
            raise AssertionError(f"bot did not start: {self.log()}") from None
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"bot exited with {self.proc.returncode}: {self.log()}")
        try:  # under load the first answer can take seconds: a slow answer is not a failure
            return requests.get(self.url + "/healthz", timeout=5).ok
        except requests.RequestException:
            return False

    def log(self) -> str:
        return (self.state_dir.parent / f"bot-{self.port}.log").read_text(errors="replace")[-5000:]

    def send(self, d: Delivery) -> requests.Response:
        return requests.post(self.url + "/webhook", data=d.body, headers=d.headers, timeout=10)

    def job(self, job_id: int) -> dict[str, Any]:
        return requests.get(f"{self.url}/jobs/{job_id}?format=json", timeout=10).json()

    def hosts(self, job_id: int) -> dict[str, dict[str, Any]]:
        """The job's per-host results, by host (every page of them)."""
        found: dict[str, dict[str, Any]] = {}
        while True:
            page = requests.get(f"{self.url}/jobs/{job_id}?format=json&hosts_offset={len(found)}&hosts_limit=2000",
                                timeout=10).json()["hosts"]
            found.update((h["host"], h) for h in page)
            if len(page) < 2000:
                return found

    def job_from_db(self, job_id: int) -> dict[str, Any]:
        """The job record read straight from the database (works while the bot is down)."""
        from bot.store import Store

        job = Store(self.state_dir / "ka-bot.db").job(job_id)
        assert job is not None
        return job.__dict__

    def wait_job(self, job_id: int, timeout: float = 60) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def done() -> bool:
            found.update(self.job(job_id))
            return found["state"] not in ("queued", "running")
        try:
            wait_until(done, timeout, f"job {job_id} to finish")
        except AssertionError:
            raise AssertionError(f"job {job_id} did not finish: {found}\n{self.log()}") from None
        return found

    def kill(self) -> None:
        """SIGKILL the whole process tree, as a power cut or the OOM killer would."""
        assert self.proc is not None
        kill_group(self.proc.pid)
        self.proc.wait()

    def stop(self) -> None:
        """Stop it as systemd would (SIGTERM), then make sure nothing of its group is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        self.kill()  # gunicorn's or the worker's children may outlive serve itself


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; a slow or failing poll is retried until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass  # a busy bot answering slowly: ask again
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> None:
    wait_until(predicate, timeout, what)


def fleet_forge_repo(root: Path, hosts: dict[str, str], files: dict[str, bytes | str]) -> tuple[Path, Path]:
    """A work tree with the fleet committed, and a bare 'forge' clone of it to fetch from."""
    work = write_fleet(root / "fleet-work", hosts, files)
    bare = root / "forge.git"
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    return work, bare


def commit_and_push(work: Path, bare: Path, message: str, ref: str = "main") -> str:
    git(work, "add", "-A")
    git(work, "commit", "-qm", message, "--allow-empty")
    git(work, "push", "-q", str(bare), f"HEAD:refs/heads/{ref}")
    return git(work, "rev-parse", "HEAD").decode().strip()


class Rig:
    """The fake Forgejo, a fleet repository with a bare 'forge' copy, and a bot."""

    def __init__(self, tmp_path: Path, k: SmallKernel, hosts: dict[str, str], files: dict[str, bytes | str],
                 state_dir: Path | None = None, **env: str) -> None:
        self.fake = FakeForgejo(repo=REPO).start()
        self.work, self.bare = fleet_forge_repo(tmp_path, hosts, files)
        self.fake.branches["main"] = self.head()
        self.env = {"KA_FORGEJO_URL": self.fake.url, "KA_FORGEJO_TOKEN": self.fake.token, "KA_WEBHOOK_SECRET": SECRET,
                    "KA_REPO": REPO, "KA_KERNEL_TREE": str(k.bare), "KA_PUBLIC_URL": PUBLIC,
                    "KA_REPO_URL": str(self.bare), "KA_LIVE_INTERVAL": "0", **env}
        self.state_dir = state_dir or tmp_path / "state"
        self.bots = [BotProcess(self.state_dir, self.env)]

    @property
    def bot(self) -> BotProcess:
        return self.bots[-1]

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD").decode().strip()

    def push(self, sha: str, clone_url: str | None = None) -> requests.Response:
        return self.bot.send(delivery("push-forgejo-12", push_payload(sha, clone_url or str(self.bare))))

    def final(self, sha: str, hosts: list[str], timeout: float = 60) -> dict[str, dict]:
        def done() -> bool:
            latest = self.fake.latest(sha)
            return all(latest.get(f"ka/parity/{h}", {}).get("state") not in (None, "pending") for h in hosts)
        wait_for(done, timeout, f"final statuses for {len(hosts)} hosts")
        return self.fake.latest(sha)

    def close(self) -> None:
        for bot in self.bots:
            bot.stop()
        self.fake.stop()


# what the bot decides for each recorded delivery (tests/samples/forgejo/payloads)
SAMPLE_DECISIONS = {
    "create-branch-gitea-1.16": "ignored",
    "create-tag-forgejo-15-synthesized": "ignored",
    "delete-branch-gitea-1.16": "ignored",
    "issue_comment-created-issue-gitea-1.16": "ignored",
    "issue_comment-created-pr-forgejo-15-synthesized": "ignored",
    "issue_comment-created-pr-gitea-1.16": "ignored",
    "issue_comment-created-pr-legacy": "ignored",
    "issue_comment-edited-issue-legacy": "ignored",
    "pull_request-closed-merged-gitea-com": "ignored",
    "pull_request-opened-forgejo-12": "parity",
    "pull_request-opened-fork-forgejo-11-nosecret": "parity",
    "pull_request-opened-fork-forgejo-12": "parity",
    "pull_request-opened-fork-gitea-1.16": "parity",
    "pull_request-reopened-forgejo-codeberg": "parity",
    "pull_request-review-approved-gitea-com": "ignored",
    "pull_request-synchronized-gitea-1.22": "parity",
    "push-forgejo-12": "parity",
    "push-gitea-1.16": "parity",
    "push-multi-gitea-1.22": "parity",
    "push-new-branch-codeberg-gitea-1.16": "parity",
    "push-signed-gitea-legacy": "parity",
    "push-tag-forgejo-12": "ignored",
    "push-test-delivery-forgejo-15-synthesized": "ping",
}
