"""push → parity on the pushed commit; tags, deletions and test deliveries are not work."""

from __future__ import annotations

from bot.events import payload as field
from bot.events.delivery import Event, PayloadError
from bot.events.payload import BRANCH_REF
from bot.events.router import Decision, Ignore, Requester, Router, RunParity

router = Router()


@router.register("push")
def push(event: Event) -> Decision:
    """A branch push: parity on ``after``."""
    p = event.payload
    ref = field.text(p, "ref", limit=255)
    if ref is None:
        raise PayloadError("no ref")
    after = field.sha(p, "after")
    if ref.startswith("refs/tags/"):
        return Ignore(f"tag push {ref}: tags are not checked")
    if not ref.startswith("refs/heads/"):
        return Ignore(f"push to {ref}: not a branch")
    if set(after) == {"0"}:
        return Ignore(f"{ref} deleted: nothing to check")
    if not BRANCH_REF.fullmatch(ref):
        raise PayloadError(f"{ref!r} is not a branch name git would accept")
    if p.get("before") == after:
        return Ignore(f"test delivery for {ref} (before == after): pong", ping=True)
    who = field.text(p, "pusher", "login") or field.text(p, "sender", "login")
    url = field.text(p, "compare_url") or field.text(p, "head_commit", "url")
    return RunParity(commit=after, ref=ref, event_key=f"push:{ref}:{after}", requester=Requester("push", who, url),
                     clone_url=field.text(p, "repository", "clone_url"))
