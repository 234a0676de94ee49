"""Helpers for bot tests: deliveries built from the shared samples, a real bot process, a fleet repo."""

from __future__ import annotations

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
from kernel import git, write_fleet

from bot.cli import go_json
from bot.events import sign

SAMPLES = Path(__file__).parent / "samples" / "forgejo" / "payloads"
SECRET = "kernel-agent-test-secret"
REPO = "fleet/kernel-agent"


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


@dataclass
class BotProcess:
    """A real ``ka-bot serve`` (gunicorn + worker) in its own process group."""

    state_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BotProcess:
        log = open(self.state_dir.parent / f"bot-{self.port}.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--port", str(self.port), "--state-dir", str(self.state_dir)],
            env={**os.environ, **self.env}, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"bot did not start: {self.log()}")

    def log(self) -> str:
        return (self.state_dir.parent / f"bot-{self.port}.log").read_text(errors="replace")[-5000:]

    def send(self, d: Delivery) -> requests.Response:
        return requests.post(self.url + "/webhook", data=d.body, headers=d.headers, timeout=10)

    def job(self, job_id: int) -> dict[str, Any]:
        return requests.get(f"{self.url}/jobs/{job_id}?format=json", timeout=5).json()

    def job_from_db(self, job_id: int) -> dict[str, Any]:
        """The job record read straight from the database (works while the bot is down)."""
        from bot.store import Store

        job = Store(self.state_dir / "ka-bot.db").job(job_id)
        assert job is not None
        return job.__dict__

    def wait_job(self, job_id: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.job(job_id)
            if data["state"] not in ("queued", "running"):
                return data
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish: {self.job(job_id)}\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the whole process tree, as a power cut or the OOM killer would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


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
