"""The forge behind a small interface (gidgethub's ``abc.GitHubAPI``): Forgejo over HTTP, or local.

Writes are described as :class:`Write` values so that the outbox can store them and send
them later; :meth:`Forge.send` performs one.  Reads (permission, pull request) happen at once.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import requests

from bot.mirror import git_credentials, redact
from ka.errors import KaError
from ka.io.runner import run

log = logging.getLogger(__name__)
DESCRIPTION_MAX = 140  # Forgejo stores any length; keep what the forge UI shows readable


@dataclass(frozen=True)
class Write:
    """One write to the forge API, storable in the outbox."""

    method: str
    path: str
    body: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


class ForgeError(KaError):
    """The forge refused or could not be reached; ``status`` is its HTTP answer when it gave one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Transient(ForgeError):
    """Worth retrying: connection refused, timeout, 5xx, 429."""


class Permanent(ForgeError):
    """Retrying will not help: a 4xx with the forge's message."""


class Forge(Protocol):
    """What the bot needs from a forge."""

    def send(self, write: Write) -> dict[str, Any]:
        """Perform one write; raise :class:`Transient` or :class:`Permanent`."""

    def permission(self, user: str) -> str:
        """The user's permission on the repository: none, read, write, admin or owner."""

    def collaborator(self, user: str) -> bool:
        """Whether the user was added to the repository as a collaborator (any permission)."""

    def pull(self, number: int) -> dict[str, Any]:
        """A pull request (``head.sha``, ``head.repo.full_name``, ``base.repo.full_name``, ``state``)."""

    def default_branch(self) -> tuple[str, str]:
        """The repository's default branch and the commit at its head."""

    def me(self) -> str:
        """The login of the bot's own account."""

    def comments(self, number: int) -> list[dict[str, Any]]:
        """The comments of an issue or pull request (``id``, ``body``, ``user.login``)."""


def _repo_path(repo: str) -> str:
    owner, name = repo.split("/", 1)
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def status(repo: str, sha: str, state: str, context: str, description: str, target_url: str) -> Write:
    """Create a commit status (its description one line: the forge shows it as one)."""
    description = " ".join(description.split())
    short = description if len(description) <= DESCRIPTION_MAX else description[: DESCRIPTION_MAX - 1] + "…"
    return Write("POST", f"{_repo_path(repo)}/statuses/{sha}",
                 {"state": state, "context": context, "description": short, "target_url": target_url},
                 summary=f"status {context} = {state} on {sha[:12]}: {short}")


def comment(repo: str, number: int, body: str) -> Write:
    """Create a comment on an issue or pull request."""
    return Write("POST", f"{_repo_path(repo)}/issues/{number}/comments", {"body": body},
                 summary=f"comment on #{number}")


def edit_comment(repo: str, comment_id: int, body: str) -> Write:
    """Replace the body of a comment."""
    return Write("PATCH", f"{_repo_path(repo)}/issues/comments/{comment_id}", {"body": body},
                 summary=f"edit comment {comment_id}")


def reaction(repo: str, comment_id: int, content: str) -> Write:
    """Add a reaction to a comment."""
    return Write("POST", f"{_repo_path(repo)}/issues/comments/{comment_id}/reactions", {"content": content},
                 summary=f"react {content} to comment {comment_id}")


def pull_request(repo: str, head: str, base: str, title: str, body: str) -> Write:
    """Open a pull request of branch ``head`` against ``base``."""
    return Write("POST", f"{_repo_path(repo)}/pulls", {"head": head, "base": base, "title": title, "body": body},
                 summary=f"pull request {head} -> {base}: {title}")


READ_RETRIES = (0.5, 2.0)  # pauses before a read's second and third try: a busy forge, a restarting proxy


class ForgejoClient:
    """Forgejo (or Gitea) REST API: one session, timeouts, token header."""

    def __init__(self, base_url: str, token: str, repo: str, timeout: tuple[float, float] = (5.0, 30.0)) -> None:
        self.api = base_url.rstrip("/") + "/api/v1"
        self.repo = repo
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"token {token}", "Accept": "application/json",
                                     "User-Agent": "kernel-agent-bot"})

    def __repr__(self) -> str:  # never show the token
        return f"ForgejoClient({self.api!r}, repo={self.repo!r})"

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request; a read that fails transiently is asked again twice (writes go through the outbox)."""
        for pause in READ_RETRIES if method == "GET" else ():
            try:
                return self._once(method, path, body)
            except Transient as exc:
                if exc.status == 401:
                    raise
                log.info("%s; asking again in %gs", exc, pause)
                time.sleep(pause)
        return self._once(method, path, body)

    def _once(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        try:
            res = self.session.request(method, self.api + path, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise Transient(f"{method} {path}: forge unreachable: {type(exc).__name__}") from None
        if res.status_code >= 500 or res.status_code in (401, 429):
            # 401: the token was revoked or rotated; writes wait for a good one instead of being dropped
            raise Transient(f"{method} {path}: HTTP {res.status_code}: {_message(res)}", res.status_code)
        if res.status_code >= 400:
            raise Permanent(f"{method} {path}: HTTP {res.status_code}: {_message(res)}", res.status_code)
        try:
            return res.json() if res.content else {}
        except ValueError:  # it landed; a proxy may have rewritten the answer
            return {}

    def send(self, write: Write) -> dict[str, Any]:
        data = self._request(write.method, write.path, write.body)
        return data if isinstance(data, dict) else {}

    def permission(self, user: str) -> str:
        data = self._request("GET", f"{_repo_path(self.repo)}/collaborators/{quote(user, safe='')}/permission")
        return str(data.get("permission", "none"))

    def collaborator(self, user: str) -> bool:
        try:  # 204 for a collaborator, 404 for anyone else
            self._request("GET", f"{_repo_path(self.repo)}/collaborators/{quote(user, safe='')}")
        except Permanent as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def pull(self, number: int) -> dict[str, Any]:
        data = self._request("GET", f"{_repo_path(self.repo)}/pulls/{number}")
        return data if isinstance(data, dict) else {}

    def default_branch(self) -> tuple[str, str]:
        repo = self._request("GET", _repo_path(self.repo))
        branch = str(repo.get("default_branch") or "main")
        data = self._request("GET", f"{_repo_path(self.repo)}/branches/{quote(branch, safe='')}")
        commit = data.get("commit") if isinstance(data, dict) else None
        sha = commit.get("id") if isinstance(commit, dict) else None
        if not isinstance(sha, str):
            raise Permanent(f"branch {branch}: the forge named no commit")
        return branch, sha

    def me(self) -> str:
        return str(self._request("GET", "/user").get("login", ""))

    def comments(self, number: int) -> list[dict[str, Any]]:
        data = self._request("GET", f"{_repo_path(self.repo)}/issues/{number}/comments")
        return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []


def _message(res: requests.Response) -> str:
    try:
        data = res.json()
    except ValueError:
        return res.text[:200]
    return str(data.get("message", data))[:300] if isinstance(data, dict) else str(data)[:300]


class LocalForge:
    """No forge configured: writes are only recorded (the outbox keeps them, the job pages show them).

    What the bot would ask the forge comes from the repository it fetches from (``KA_REPO_URL``):
    its ``HEAD`` is the default branch, ``refs/pull/<n>/head`` a pull request's head; and
    permissions from a table in the configuration (``KA_LOCAL_PERMISSIONS``, default everyone
    ``write``).
    """

    LOGIN = "ka-bot"

    def __init__(self, repo_url: str | None = None, permissions: dict[str, str] | None = None) -> None:
        self.repo_url = repo_url
        self.permissions = permissions if permissions is not None else {"*": "write"}
        self._ids = itertools.count(1)

    def send(self, write: Write) -> dict[str, Any]:
        log.info("local mode: recorded %s", write.summary)
        return {"recorded": True, "id": next(self._ids)}

    def permission(self, user: str) -> str:
        return self.permissions.get(user, self.permissions.get("*", "none"))

    def collaborator(self, user: str) -> bool:
        return user in self.permissions  # named in KA_LOCAL_PERMISSIONS, not only by "*"

    def pull(self, number: int) -> dict[str, Any]:
        out = self._ls_remote_ref(f"refs/pull/{number}/head")
        if not out:
            raise Permanent(f"local mode: no pull request {number} "
                            f"(no refs/pull/{number}/head in {redact(self.repo_url or '')})")
        return {"number": number, "state": "open", "head": {"sha": out, "ref": f"refs/pull/{number}/head"}}

    def _ls_remote_ref(self, ref: str) -> str:
        if not self.repo_url:
            raise Permanent("local mode: set KA_REPO_URL to the repository the bot fetches from")
        bare, env = git_credentials(self.repo_url)
        res = run(["git", "ls-remote", "--", bare, ref], env=env, check=False, timeout=60)
        if not res.ok:
            raise Permanent(f"local mode: cannot read {redact(self.repo_url)}: {res.err().strip()[:200]}")
        return res.text().split("\t", 1)[0].strip()

    def default_branch(self) -> tuple[str, str]:
        if not self.repo_url:
            raise Permanent("local mode: set KA_REPO_URL to the repository the bot fetches from")
        bare, env = git_credentials(self.repo_url)
        res = run(["git", "ls-remote", "--symref", "--", bare, "HEAD"], env=env, check=False, timeout=60)
        symref = next((ln.split()[1] for ln in res.text().splitlines() if ln.startswith("ref: ")), "refs/heads/main")
        branch = symref.removeprefix("refs/heads/")
        sha = self._ls_remote_ref(f"refs/heads/{branch}")
        if not sha:
            raise Permanent(f"local mode: {redact(self.repo_url)} has no branch {branch}")
        return branch, sha

    def me(self) -> str:
        return self.LOGIN

    def comments(self, number: int) -> list[dict[str, Any]]:
        return []
