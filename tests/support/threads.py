"""A pull request's thread as the tests drive it: comment deliveries in, the bot's replies out."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.botkit import REPO, Rig, commit_and_push, delivery, sample, wait_for
from tests.support.fleet import manifest
from tests.support.kernel import git

PR = 7


def comment_payload(body: str, number: int, who: str, pull: bool, comment_id: int | None = None,
                    action: str = "created") -> dict[str, Any]:
    """A recorded Forgejo comment delivery, rewritten to our repository, thread, author and text."""
    p = sample("issue_comment-created-pr-forgejo-15-synthesized" if pull else
               "issue_comment-created-issue-gitea-1.16")["payload"]
    p["action"] = action
    p["repository"]["full_name"] = REPO
    p["issue"]["number"] = number
    p["comment"].update(id=comment_id or uuid.uuid4().int % 10**9, body=body,
                        html_url=f"https://forge.example/{REPO}/issues/{number}#issuecomment-1")
    p["comment"]["user"]["login"] = p["sender"]["login"] = who
    p["is_pull"] = pull
    if not pull:
        p["issue"]["pull_request"] = None
    return p


def say(r: Rig, body: str, who: str = "writer", number: int = PR, pull: bool = True, **kw: Any) -> dict[str, Any]:
    """Post a comment delivery; the JSON answer, with the comment id used."""
    payload = comment_payload(body, number, who, pull, **kw)
    name = "issue_comment-created-pr-forgejo-15-synthesized" if pull else "issue_comment-created-issue-gitea-1.16"
    res = r.bot.send(delivery(name, payload))
    assert res.status_code in (200, 202), res.text
    return {**res.json(), "comment_id": payload["comment"]["id"]}


def open_pr(r: Rig, number: int = PR, fork: str | None = None) -> str:
    """A pull request whose head is a new commit (refs/pull/N/head in the bare 'forge' repository)."""
    git(r.work, "checkout", "-q", "-B", f"topic{number}")
    sha = commit_and_push(r.work, r.bare, f"pull request {number}", ref=f"topic{number}")
    git(r.bare, "update-ref", f"refs/pull/{number}/head", sha)
    base = {"repo": {"full_name": REPO}}
    r.fake.pulls[number] = {"number": number, "state": "open", "base": base,
                            "head": {"sha": sha, "ref": f"topic{number}", "repo": {"full_name": fork or REPO}}}
    return sha


def replies(r: Rig, number: int = PR) -> list[str]:
    return [c["body"] for c in r.fake.comments(number)]


def wait_replies(r: Rig, count: int, number: int = PR, what: str = "replies") -> list[str]:
    wait_for(lambda: len(replies(r, number)) >= count, 90, f"{count} {what} on #{number}")
    return replies(r, number)


def slow_fleet(count: int) -> tuple[dict[str, str], dict[str, bytes | str]]:
    """Hosts that each take a while to check (a 4 MiB patch each), so a job runs long enough to act on."""
    line = b"+" + b"x" * 62 + b"\n"
    lines = 4 * 1024 * 1024 // len(line)
    big = (b"diff --git a/drivers/big.c b/drivers/big.c\nnew file mode 100644\n--- /dev/null\n+++ b/drivers/big.c\n"
           + f"@@ -0,0 +1,{lines} @@\n".encode() + line * lines)
    return ({f"h{n:04d}": manifest(["soc/base", "module/big"]) for n in range(count)},
            {"patches/module/big.patch": big})
