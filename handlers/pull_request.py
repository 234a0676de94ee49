"""pull_request opened, reopened, synchronized → parity on the head commit."""

from __future__ import annotations

from bot.events import payload as field
from bot.events.delivery import Event, PayloadError
from bot.events.router import Decision, Requester, Router, RunParity

router = Router()


@router.register("pull_request", action="opened")
@router.register("pull_request", action="reopened")
@router.register("pull_request", action="synchronized")
def pull_request(event: Event) -> Decision:
    """Check the head commit; it is fetched through ``refs/pull/<n>/head``, which also serves forks."""
    p = event.payload
    number = field.number(p, "number") or field.number(p, "pull_request", "number")
    if number is None:
        raise PayloadError("no number")
    sha = field.sha(p, "pull_request", "head", "sha")
    return RunParity(commit=sha, ref=f"refs/pull/{number}/head", event_key=f"pr:{number}:{sha}",
                     requester=Requester("pull_request", field.text(p, "sender", "login"),
                                         field.text(p, "pull_request", "html_url"), number),
                     clone_url=field.text(p, "repository", "clone_url"))
