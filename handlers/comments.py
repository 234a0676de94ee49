"""issue_comment created → the /ka commands in it; edits, deletions and the bot's own comments do nothing."""

from __future__ import annotations

from bot.events import payload as field
from bot.events.commands import Command, parse_commands
from bot.events.delivery import Event, PayloadError
from bot.events.router import Decision, Ignore, Router, RunCommands, get

router = Router()


@router.register("issue_comment", action="created")
def comment(event: Event) -> Decision:
    """Parse the comment (pure); who may run what, on which commit, is decided by the worker."""
    p = event.payload
    comment_id = field.number(p, "comment", "id")
    number = field.number(p, "issue", "number")
    author = field.text(p, "comment", "user", "login", limit=100) or field.text(p, "sender", "login", limit=100)
    body = get(p, "comment", "body")
    if comment_id is None or number is None or not author or not isinstance(body, str):
        raise PayloadError("no comment id, issue number, author or body")
    parsed = parse_commands(body)
    if not parsed.items:
        return Ignore("comment without /ka commands")
    is_pull = p.get("is_pull") is True or get(p, "issue", "pull_request") is not None or \
        event.type == "pull_request_comment"
    items = [i.as_dict() if isinstance(i, Command) else {"invalid": i.message, "written": i.written, "line": i.line,
                                                          "closest": i.verb} for i in parsed.items]
    return RunCommands(comment_id=comment_id, number=number, is_pull=is_pull, author=author,
                       url=field.text(p, "comment", "html_url"), items=items, capped=parsed.capped, cut=parsed.cut,
                       clone_url=field.text(p, "repository", "clone_url"))


@router.register("issue_comment", action="edited")
@router.register("issue_comment", action="deleted")
def changed(event: Event) -> Decision:
    """Only new comments act: an edit must not run a command twice, nor a deletion undo one."""
    return Ignore(f"comment {event.action}: commands act only in new comments")
