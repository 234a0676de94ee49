"""Sample deliveries made to describe one real repository, for ``ka-bot deliver`` in local mode.

The recorded Forgejo deliveries speak of their own forge (``http://localhost:3000/example/…``),
its default branch and its commits.  A bot in local mode has no forge: what ``deliver`` sends it
must describe the repository the bot fetches from (``KA_REPO_URL``), or its pages show a branch
that flips between the sample's and the real one, links to a host that does not exist, and
commits that are not the job's.  So the repository's name, clone URL, default branch and head
are this repository's, and every other link into the sample's forge is removed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from bot.mirror import git_credentials, redact
from ka.errors import BadInput
from ka.io.runner import run


def head_of(repo_url: str) -> tuple[str, str]:
    """The default branch of the repository at ``repo_url`` and its head commit."""
    bare, env = git_credentials(repo_url)  # a token in the URL goes to git by its environment, not its arguments
    res = run(["git", "ls-remote", "--symref", "--", bare, "HEAD"], env=env, check=False, timeout=60)
    if not res.ok:
        raise BadInput(f"--repo-url {redact(repo_url)}: not a git repository that can be read: "
                       f"{res.err().strip()[:200]}")
    lines = res.text().splitlines()
    symref = next((ln.split()[1] for ln in lines if ln.startswith("ref: ")), "refs/heads/main")
    sha = next((ln.split()[0] for ln in lines if not ln.startswith("ref: ") and ln.endswith("\tHEAD")), "")
    if not sha:
        raise BadInput(f"--repo-url {redact(repo_url)}: its HEAD names no commit (an empty repository?)")
    return symref.removeprefix("refs/heads/"), sha


def describe(payload: dict[str, Any], full_name: str, repo_url: str, commit: str | None = None,
             ref: str | None = None) -> dict[str, Any]:
    """``payload`` about the repository at ``repo_url`` (named ``full_name`` to the bot) and ``commit`` on ``ref``
    (default: its default branch's head); no link into the sample's forge is left."""
    branch, head = head_of(repo_url)
    sample = payload.get("repository") or {}
    origin = _origin(str(sample.get("html_url") or sample.get("clone_url") or ""))
    payload = _unlinked(payload, origin) if origin else payload
    owner, _, name = full_name.partition("/")
    repo = payload.setdefault("repository", {})
    repo.update(full_name=full_name, name=name, clone_url=repo_url, html_url="", ssh_url="", default_branch=branch)
    if isinstance(repo.get("owner"), dict):
        repo["owner"].update(login=owner, username=owner)
    if "after" in payload:  # a push: of the default branch's head, unless a commit is named
        payload.update(after=commit or head, before="0" * 40, ref=ref or f"refs/heads/{branch}", commits=[],
                       head_commit=None)
    elif isinstance(payload.get("pull_request"), dict):
        pull = payload["pull_request"]
        pull.setdefault("base", {})["ref"] = branch
        if commit:
            pull.setdefault("head", {})["sha"] = commit
    return payload


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""


def _unlinked(value: Any, origin: str) -> Any:
    """``value`` with every string that links into ``origin`` emptied."""
    if isinstance(value, dict):
        return {k: _unlinked(v, origin) for k, v in value.items()}
    if isinstance(value, list):
        return [_unlinked(v, origin) for v in value]
    if isinstance(value, str) and (value == origin or value.startswith(origin + "/")):
        return ""
    return value
