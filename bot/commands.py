"""The ``/ka`` comment grammar: one command table drives parsing, ``/ka help`` and permissions.

Pure: text in, commands out, no I/O (the homu, bors and Prow lesson).  A command is a line
that starts with ``/ka <verb> [args]``, or an inline ``[ka:<verb> args]`` tag anywhere in a
line.  The thread is the audit trail, so a command acts only where a reader of the rendered
comment sees it as written: the comment is read as CommonMark (markdown-it-py; Forgejo renders
with goldmark, CommonMark too) and only paragraph text counts, never code, quotes, HTML,
link reference definitions or tables, so quoting a command (as the bot's own replies do)
never runs it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt

MAX_COMMANDS = 10
MAX_BODY = 65536  # a comment longer than this is read up to here
MAX_HOSTS = 50

#: roles, weakest first; Forgejo's collaborator permission is one of these
ROLES = ("none", "read", "write", "admin", "owner")


@dataclass(frozen=True)
class Spec:
    """One verb: how it is written, who may run it, what it does."""

    verb: str
    args: str  # "" | "verb?" | "hosts*" | "hosts+" | "host" | "job"
    role: str  # "anyone", "write", or "admin" (admin, owner, or an operator of the host)
    help: str
    commit: bool = False  # takes @SHA
    flags: tuple[str, ...] = ()
    job: bool = False  # runs as a job (else the bot answers at once)

    @property
    def usage(self) -> str:
        words = {"": "", "verb?": " [VERB]", "hosts*": " [HOST…]", "hosts+": " HOST…|all", "host": " HOST",
                 "job": " JOB"}[self.args]
        return (f"/ka {self.verb}{words}" + "".join(f" [{f}]" for f in self.flags)
                + (" [@SHA]" if self.commit else ""))

    @property
    def who(self) -> str:
        return {"anyone": "anyone", "write": "write access",
                "admin": "admin or owner, or an operator of the host in fleet/infra.yaml"}[self.role]


COMMANDS: dict[str, Spec] = {s.verb: s for s in (
    Spec("help", "verb?", "anyone", "this table (or one verb's line)"),
    Spec("status", "hosts*", "write", "the fleet at a glance: latest parity on the default branch, last build, "
                                     "last install"),
    Spec("promote", "hosts+", "write", "cumulative patch, baseline check and parity of hosts, as a table",
         commit=True, job=True),
    Spec("build", "host", "write", "build the host's kernel package (ka-build); signed and published only when "
                                   "the commit is on the default branch", commit=True, job=True),
    Spec("install", "host", "admin", "back up, install the published package, reboot, wait for the new kernel "
                                     "(ka-install)", flags=("--no-reboot",), job=True),
    Spec("rollback", "host", "admin", "boot the host's previous kernel again (ka-install --rollback)", job=True),
    Spec("cancel", "job", "write", "stop a queued job (or a running one where it can stop safely)"),
    Spec("retry", "job", "write", "queue a new job with the same verb, host and commit", job=True),
)}

_LINE = re.compile(r"^ {0,3}/ka(?:\s+(.*))?$", re.I)
_TAG = re.compile(r"\[ka:([^\[\]]*)\]", re.I)
#: an HTML tag: closing (1), its name (2), self-closing (3); the name must end the word, so an
#: autolink (<https://…>) is not a tag
_TAG_HTML = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)(?=[\s/>])[^<>]*?(/?)>")
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                   "wbr"})
_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1)[\s\S])+?\1|`+")
_HOST = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_SHA = re.compile(r"@([0-9a-fA-F]{7,64})")
_JOB = re.compile(r"#?([0-9]{1,18})")


@dataclass(frozen=True)
class Command:
    """A command the grammar accepted; what it may do is decided later (permissions, hosts, commit)."""

    verb: str
    hosts: tuple[str, ...] = ()
    all_hosts: bool = False
    job: int | None = None
    commit: str | None = None
    flags: tuple[str, ...] = ()
    topic: str | None = None  # help VERB
    line: int = 0

    @property
    def spec(self) -> Spec:
        return COMMANDS[self.verb]

    @property
    def text(self) -> str:
        """The command written out canonically (what replies quote)."""
        parts = [f"/ka {self.verb}"]
        parts += ["all"] if self.all_hosts else list(self.hosts)
        parts += [f"{self.job}"] if self.job is not None else []
        parts += [self.topic] if self.topic else []
        parts += list(self.flags) + ([f"@{self.commit}"] if self.commit else [])
        return " ".join(parts)

    def as_dict(self) -> dict[str, object]:
        """JSON shape, for the job record."""
        return {"verb": self.verb, "hosts": list(self.hosts), "all_hosts": self.all_hosts, "job": self.job,
                "commit": self.commit, "flags": list(self.flags), "topic": self.topic, "line": self.line}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Command:
        return cls(verb=str(data["verb"]), hosts=tuple(data.get("hosts") or ()), all_hosts=bool(data.get("all_hosts")),
                   job=data.get("job"), commit=data.get("commit"), flags=tuple(data.get("flags") or ()),
                   topic=data.get("topic"), line=int(data.get("line") or 0))


@dataclass(frozen=True)
class Invalid:
    """Something written as a command that the grammar cannot accept; ``message`` says why."""

    written: str
    message: str
    line: int
    verb: str | None = None  # the closest verb, for "did you mean"


@dataclass
class Parsed:
    """Everything found in one comment."""

    items: list[Command | Invalid] = field(default_factory=list)
    capped: bool = False
    cut: bool = False  # the comment was longer than MAX_BODY: read up to its last whole line

    @property
    def commands(self) -> list[Command]:
        return [i for i in self.items if isinstance(i, Command)]


def parse_commands(body: str) -> Parsed:
    """Every command in a comment, in order, at most :data:`MAX_COMMANDS`."""
    parsed = Parsed()
    if len(body) > MAX_BODY:  # never half a line: "--no-reboot" cut off would mean a reboot
        body, parsed.cut = body[:MAX_BODY].rsplit("\n", 1)[0] if "\n" in body[:MAX_BODY] else "", True
    for number, line in _live_lines(body):
        for words in _candidates(line):
            if len(parsed.items) == MAX_COMMANDS:
                parsed.capped = True
                return parsed
            parsed.items.append(parse_one(words, number))
    return parsed


def _live_lines(body: str) -> list[tuple[int, str]]:
    """The lines a reader of the rendered thread sees as plain paragraph text, code spans blanked;
    numbered from 1.

    The comment is parsed as CommonMark (Forgejo renders with goldmark, CommonMark too): only
    paragraphs count, outside block quotes (a lazy continuation line is still quoted) and outside
    HTML elements (``<details>`` folds its content away); code blocks, HTML blocks such as
    ``<pre>``, link reference definitions (invisible once rendered) and tables are not
    paragraphs.  Code spans may run over a line break within a paragraph, so they are blanked
    paragraph by paragraph, never line by line.
    """
    text = _HTML_COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), body.replace("\r\n", "\n").replace("\r", "\n"))
    lines = text.split("\n")
    live: list[tuple[int, str]] = []
    quoted = html = 0
    for token in _MARKDOWN.parse(text):
        if token.type in ("blockquote_open", "blockquote_close"):
            quoted += 1 if token.type == "blockquote_open" else -1
        elif token.type == "html_block":
            html = _html_depth(token.content, html)
        elif token.type == "paragraph_open" and token.map and not quoted and not html:
            start, end = token.map
            live += _blank_spans([(n + 1, lines[n]) for n in range(start, min(end, len(lines)))])
    return live


def _html_depth(html: str, depth: int) -> int:
    """How many HTML elements are open after ``html``, starting from ``depth``."""
    for m in _TAG_HTML.finditer(html):
        name = m.group(2).lower()
        if name in _VOID or m.group(3):
            continue
        depth = max(0, depth - 1) if m.group(1) else depth + 1
    return depth


def _blank_spans(paragraph: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The paragraph's lines with every code span (also one that crosses a line break) and every
    inline HTML element (``<span hidden>…</span>``) blanked."""
    if not paragraph:
        return []
    joined = "\n".join(line for _, line in paragraph)
    blanked = _CODE_SPAN.sub(lambda m: _blank(m.group(0)), joined)
    blanked = _blank_inline_html(blanked)
    return [(number, line) for (number, _), line in zip(paragraph, blanked.split("\n"), strict=True)]


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def _blank_inline_html(text: str) -> str:
    """``text`` with everything from an HTML element's opening tag to its end blanked (to the
    paragraph's end when it is never closed)."""
    out, depth, start, done = [], 0, 0, 0
    for m in _TAG_HTML.finditer(text):
        if m.group(2).lower() in _VOID or m.group(3):
            continue
        if not m.group(1):
            if depth == 0:
                start = m.start()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                out += [text[done:start], _blank(text[start:m.end()])]
                done = m.end()
    if depth:
        out += [text[done:start], _blank(text[start:])]
        done = len(text)
    return "".join(out) + text[done:]


def _candidates(line: str) -> list[str]:
    """The command texts of a line: the line itself after ``/ka``, and every ``[ka:…]`` tag in it."""
    found = []
    if m := _LINE.match(line):
        found.append(_TAG.sub(" ", m.group(1) or ""))  # a tag in a /ka line is a command of its own, below
    found += [m.group(1) for m in _TAG.finditer(line)]
    return found


def parse_one(words: str, line: int = 0) -> Command | Invalid:
    """One command's words (after ``/ka`` or ``ka:``) against the table."""
    tokens = words.split()
    written = f"/ka {' '.join(tokens[:8])}" + (" …" if len(tokens) > 8 else "")
    if not tokens:
        return Command("help", line=line)  # a bare "/ka" asks what the bot can do
    if len(tokens) > MAX_HOSTS + 4:
        return Invalid(written, f"too many words: at most {MAX_HOSTS} hosts in one command (or `all`)", line)
    verb = tokens[0].lower()
    spec = COMMANDS.get(verb)
    if spec is None:
        close = difflib.get_close_matches(verb[:40], COMMANDS, n=1, cutoff=0.5)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        return Invalid(written, f"unknown command `{_code(verb[:40])}`{hint}", line, close[0] if close else None)
    return _arguments(spec, tokens[1:], written, line)


def _arguments(spec: Spec, rest: list[str], written: str, line: int) -> Command | Invalid:
    commit = next((m.group(1).lower() for t in rest if (m := _SHA.fullmatch(t))), None)
    flags = tuple(t for t in rest if t in spec.flags)
    if any(_SHA.fullmatch(t) for t in rest) and not spec.commit:
        return Invalid(written, f"`{spec.verb}` takes no @SHA; usage: `{spec.usage}`", line, spec.verb)
    words = [t for t in rest if not _SHA.fullmatch(t) and t not in spec.flags]
    if any(t.startswith("-") for t in words):
        bad = next(t for t in words if t.startswith("-"))
        return Invalid(written, f"`{_code(bad[:40])}` is not an option of `{spec.verb}`; usage: `{spec.usage}`",
                       line, spec.verb)
    base = Command(spec.verb, commit=commit, flags=flags, line=line)
    return _shape(spec, words, base, written)


def _shape(spec: Spec, words: list[str], base: Command, written: str) -> Command | Invalid:
    usage = f"usage: `{spec.usage}`"

    def invalid(message: str) -> Invalid:
        return Invalid(written, f"{message}; {usage}", base.line, spec.verb)

    if spec.args == "":
        return base if not words else invalid(f"`{spec.verb}` takes no arguments")
    if spec.args == "verb?":
        if len(words) > 1 or (words and words[0].lower() not in COMMANDS):
            return invalid(f"`{_code(' '.join(words)[:40])}` is not a command")
        return _with(base, topic=words[0].lower() if words else None)
    if spec.args == "job":
        m = _JOB.fullmatch(words[0]) if len(words) == 1 else None
        return _with(base, job=int(m.group(1))) if m else invalid(f"`{spec.verb}` takes one job number")
    hosts = [w for w in words if w.lower() != "all"]
    bad = [h for h in hosts if not _HOST.fullmatch(h)]
    if bad:
        return invalid(f"`{_code(bad[0][:64])}` is not a host name")
    if spec.args == "host":
        return _with(base, hosts=tuple(hosts)) if len(words) == 1 and hosts else invalid(
            f"`{spec.verb}` takes one host")
    wants_all = len(hosts) != len(words)
    if wants_all and (hosts or spec.args != "hosts+"):
        return invalid("`all` stands alone")
    if spec.args == "hosts+" and not words:
        return invalid(f"`{spec.verb}` needs hosts, or `all`")
    return _with(base, hosts=tuple(dict.fromkeys(hosts)), all_hosts=wants_all)


def _with(base: Command, **changes: object) -> Command:
    return Command(**{**base.__dict__, **changes})


def _code(text: str) -> str:
    """Text safe inside a markdown code span: no backticks, no line breaks."""
    return text.replace("`", "'").replace("\n", " ")


def help_table(topic: str | None = None) -> str:
    """The ``/ka help`` reply: the table itself, so the help can never disagree with the parser."""
    specs = [COMMANDS[topic]] if topic else list(COMMANDS.values())
    rows = [f"| `{_cell(s.usage)}` | {s.help} | {s.who} |" for s in specs]
    return "\n".join(["| command | does | who may run it |", "|---|---|---|", *rows])


def _cell(text: str) -> str:
    """A pipe inside a table cell ends the cell, even in a code span, unless escaped."""
    return text.replace("|", "\\|")


def allowed(spec: Spec, role: str, operator: bool = False) -> bool:
    """Whether a commenter with ``role`` (named an operator of the host, or not) may run ``spec``.

    An operator is a login in ``fleet/infra.yaml``; it counts only with at least read access,
    since the login is the identity and a deleted account's name can be registered by anyone.
    """
    if spec.role == "anyone":
        return True
    rank = ROLES.index(role) if role in ROLES else 0
    if spec.role == "write":
        return rank >= ROLES.index("write")
    return rank >= ROLES.index("admin") or (operator and rank >= ROLES.index("read"))
