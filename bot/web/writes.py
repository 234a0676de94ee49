"""A job's forge writes as its page shows them: a comment as the forge renders it, a status with its fields.

The comment's Markdown is rendered as CommonMark with GFM tables (what Forgejo renders), raw HTML
off, so a body can carry no markup of its own onto the page; the one HTML element the bot's own
replies use, ``<details><summary>…</summary>`` around a log's last lines, is given back when it
stands alone in its paragraph and pairs up, with no attribute.
Links keep markdown-it's check (no ``javascript:`` or ``data:`` targets).
"""

from __future__ import annotations

import json
import re
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

_MD = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])  # Forgejo's GFM tables
_OPEN = re.compile(r"<p>&lt;details&gt;&lt;summary&gt;([^&<]*)&lt;/summary&gt;</p>")
_CLOSE = "<p>&lt;/details&gt;</p>"


def comment_html(body: str) -> Markup:
    """A comment body rendered as the forge would, safe to put in a page."""
    html = _MD.render(body)
    # a paragraph that is exactly an opening <details><summary>, or exactly its end: the bot's own folding;
    # given back only when they pair up in order, so that no body can leave an element open on the page
    if _paired(html):
        html = _OPEN.sub(r"<details><summary>\1</summary>", html).replace(_CLOSE, "</details>")
    # markdown-it escaped every raw tag of the body; only the pairs above are given back
    return Markup(html)  # noqa: S704


def _paired(html: str) -> bool:
    """Every opening paragraph closed after it, at the same level of the page (not across a quote or list)."""
    marks = sorted([(m.start(), 1) for m in _OPEN.finditer(html)]
                   + [(m.start(), -1) for m in re.finditer(re.escape(_CLOSE), html)])
    depth = 0
    for i, (at, step) in enumerate(marks):
        depth += step
        if depth < 0 or depth > 1:
            return False
        if step < 0 and re.search(r"</?(blockquote|ul|ol|li|table)\b", html[marks[i - 1][0]:at]):
            return False
    return depth == 0


def shown(row: Any) -> dict[str, Any]:
    """What the job page shows of one outbox row: its kind, the rendered comment or the status's fields."""
    try:
        body = json.loads(row["body"] or "{}")
    except ValueError:
        body = {}
    out = {"id": row["id"], "summary": row["summary"], "state": row["state"], "attempts": row["attempts"],
           "last_error": row["last_error"], "kind": "other"}
    if isinstance(body, dict) and isinstance(body.get("body"), str):
        out.update(kind="comment", html=comment_html(body["body"]))
    elif isinstance(body, dict) and "context" in body:
        out.update(kind="status", status={k: str(body.get(k) or "") for k in
                                          ("context", "state", "description", "target_url")})
    return out
