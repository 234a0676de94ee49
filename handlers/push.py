"""push → parity on the pushed commit; tags, deletions and test deliveries are not work."""

from __future__ import annotations

import re

from bot.events import Event, PayloadError
from bot.router import Decision, Ignore, Requester, Router, RunParity, get

router = Router()
SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def _sha(value: object, name: str) -> str:
    if not isinstance(value, str) or not SHA.match(value):
        raise PayloadError(f"push: {name} is not a commit id")
    return value


@router.register("push")
def push(event: Event) -> Decision:
    """A branch push: parity on ``after``."""
    p = event.payload
    ref = p.get("ref")
    if not isinstance(ref, str):
        raise PayloadError("push: no ref")
    after = _sha(p.get("after"), "after")
    if ref.startswith("refs/tags/"):
        return Ignore(f"tag push {ref}: tags are not checked")
    if not ref.startswith("refs/heads/"):
        return Ignore(f"push to {ref}: not a branch")
    if set(after) == {"0"}:
        return Ignore(f"{ref} deleted: nothing to check")
    if p.get("before") == after:
        return Ignore(f"test delivery for {ref} (before == after): pong", ping=True)
    who = get(p, "pusher", "login") or get(p, "sender", "login")
    url = p.get("compare_url") or get(p, "head_commit", "url")
    return RunParity(commit=after, ref=ref, event_key=f"push:{ref}:{after}",
                     requester=Requester("push", who, url if isinstance(url, str) else None),
                     clone_url=get(p, "repository", "clone_url"))
