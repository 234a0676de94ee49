"""pull_request opened, reopened, synchronized → parity on the head commit."""

from __future__ import annotations

from bot.events import Event, PayloadError
from bot.router import Decision, Requester, Router, RunParity, get
from handlers.push import SHA

router = Router()


@router.register("pull_request", action="opened")
@router.register("pull_request", action="reopened")
@router.register("pull_request", action="synchronized")
def pull_request(event: Event) -> Decision:
    """Check the head commit; it is fetched through ``refs/pull/<n>/head``, which also serves forks."""
    p = event.payload
    number = p.get("number") or get(p, "pull_request", "number")
    sha = get(p, "pull_request", "head", "sha")
    if not isinstance(number, int) or not isinstance(sha, str) or not SHA.match(sha):
        raise PayloadError("pull_request: no number or head sha")
    url = get(p, "pull_request", "html_url")
    return RunParity(commit=sha, ref=f"refs/pull/{number}/head", event_key=f"pr:{number}:{sha}",
                     requester=Requester("pull_request", get(p, "sender", "login"),
                                         url if isinstance(url, str) else None, number),
                     clone_url=get(p, "repository", "clone_url"))
