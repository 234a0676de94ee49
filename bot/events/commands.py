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
from markdown_it.token import Token

MAX_COMMANDS = 10
MAX_BODY = 65536  # a comment longer than this is read up to here
MAX_HOSTS = 50

#: roles, weakest first; Forgejo's collaborator permission is one of these
ROLES = ("none", "read", "write", "admin", "owner")


@dataclass(frozen=True)
class Spec:
    """One verb: how it is written, who may run it, what it does."""

    verb: str
    args: str  # "" | "verb?" | "hosts*" | "hosts+" | "host" | "job" | "tag hosts*"
    role: str  # "anyone", "write", or "admin" (admin, owner, or an operator of the host)
    help: str
    commit: bool = False  # takes @SHA
    flags: tuple[str, ...] = ()
    job: bool = False  # runs as a job (else the bot answers at once)

    @property
    def usage(self) -> str:
        words = {"": "", "verb?": " [VERB]", "hosts*": " [HOST…]", "hosts+": " HOST…|all", "host": " HOST",
                 "job": " JOB", "tag hosts*": " TAG [HOST…]"}[self.args]
        return (f"/ka {self.verb}{words}" + "".join(f" [{f}]" for f in self.flags)
                + (" [@SHA]" if self.commit else ""))

    @property
    def who(self) -> str:
        return {"anyone": "anyone", "write": "write access",
                "admin": "admin or owner, or an operator of the hosts in fleet/infra.yaml"}[self.role]


COMMANDS: dict[str, Spec] = {s.verb: s for s in (
    Spec("help", "verb?", "anyone", "this table (or one verb's line)"),
    Spec("status", "hosts*", "write", "the fleet at a glance: latest parity on the default branch, last build, "
                                     "last install"),
    Spec("promote", "hosts+", "write", "cumulative patch, baseline check and parity of hosts, as a table",
         commit=True, job=True),
    Spec("build", "hosts+", "write", "build the hosts' kernel packages, several at once on the build hosts "
                                     "(ka-build); signed and published only when the commit is on the default "
                                     "branch", commit=True, job=True),
    Spec("install", "hosts+", "admin", "back up, install the published package, reboot, wait for the new kernel "
                                      "(ka-install); several hosts (or all) go in waves (install.wave), the first "
                                      "alone as the canary, and the rollout stops at the first host that fails",
         flags=("--no-reboot", "--parallel"), job=True),
    Spec("rollback", "host", "admin", "boot the host's previous kernel again (ka-install --rollback)", job=True),
    Spec("bump", "tag hosts*", "admin", "move hosts (all when none is named) to a new baseline where their "
                                         "patches still apply: a pull request with the manifests' change and a "
                                         "table per host (ka baseline bump)", job=True),
    Spec("cancel", "job", "write", "stop a queued job (or a running one where it can stop safely)"),
    Spec("retry", "job", "write", "queue a new job with the same verb, host and commit", job=True),
)}

_LINE = re.compile(r"^ {0,3}/ka(?:\s+(.*))?$", re.I)
_TAG = re.compile(r"\[ka:([^\[\]]*)\]", re.I)
_BR = re.compile(r"<br\s*/?>", re.I)
_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)  # the whole of an HTML block or tag that is a comment
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1)[\s\S])+?\1|`+")
_HOST = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_SHA = re.compile(r"@([0-9a-fA-F]{7,64})")
_JOB = re.compile(r"#?([0-9]{1,18})")
_TAG_NAME = re.compile(r"v?[0-9][A-Za-z0-9._+-]{0,60}")  # a kernel release tag: v6.12.118, v6.13-rc3


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
    to: str | None = None  # bump TAG

    @property
    def spec(self) -> Spec:
        return COMMANDS[self.verb]

    @property
    def text(self) -> str:
        """The command written out canonically (what replies quote)."""
        parts = [f"/ka {self.verb}"] + ([self.to] if self.to else [])
        parts += ["all"] if self.all_hosts else list(self.hosts)
        parts += [f"{self.job}"] if self.job is not None else []
        parts += [self.topic] if self.topic else []
        parts += list(self.flags) + ([f"@{self.commit}"] if self.commit else [])
        return " ".join(parts)

    def as_dict(self) -> dict[str, object]:
        """JSON shape, for the job record."""
        return {"verb": self.verb, "hosts": list(self.hosts), "all_hosts": self.all_hosts, "job": self.job,
                "commit": self.commit, "flags": list(self.flags), "topic": self.topic, "line": self.line,
                "to": self.to}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Command:
        return cls(verb=str(data["verb"]), hosts=tuple(data.get("hosts") or ()), all_hosts=bool(data.get("all_hosts")),
                   job=data.get("job"), commit=data.get("commit"), flags=tuple(data.get("flags") or ()),
                   topic=data.get("topic"), line=int(data.get("line") or 0), to=data.get("to"))


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
    for number, words in _live_commands(body):
        if len(parsed.items) == MAX_COMMANDS:
            parsed.capped = True
            return parsed
        parsed.items.append(parse_one(words, number))
    return parsed


def _live_commands(body: str) -> list[tuple[int, str]]:
    """The commands a reader of the rendered thread sees as written: (line number from 1, words).

    The comment is parsed as CommonMark (Forgejo renders with goldmark, CommonMark too).  Only
    paragraphs count, outside block quotes (a lazy continuation line is still quoted); code,
    link reference definitions (invisible once rendered), tables, headings, image text and
    struck-out text never do.  HTML can hide what follows it (``<details>``, ``<span hidden>``,
    an element left open), and the bot cannot tell what a browser will show: after any HTML but
    a comment or ``<br>``, nothing more in the comment is a command.  A command found in a source
    line must also be in the paragraph's visible text, character for character.
    """
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    found: list[tuple[int, str]] = []
    quoted, paragraph = 0, False
    for token in _MARKDOWN.parse(text):
        if token.type in ("blockquote_open", "blockquote_close"):
            quoted += 1 if token.type == "blockquote_open" else -1
        elif token.type in ("paragraph_open", "paragraph_close"):
            paragraph = token.type == "paragraph_open"
        elif token.type == "html_block" and not _HTML_COMMENT.fullmatch(token.content.strip()):
            break
        elif token.type == "inline" and paragraph and not quoted and token.map:
            visible, hides = _visible(token.children or [])
            start, end = token.map
            raw = _blank_spans([(n + 1, lines[n]) for n in range(start, min(end, len(lines)))])
            found += [(n, words) for n, line, marked in raw for words in _candidates(line, marked, visible)]
            if hides:
                break
    return found


def _visible(children: list[Token]) -> tuple[list[str], bool]:
    """A paragraph's text as a browser shows it, line by line (code spans as an unprintable mark), and
    whether HTML in it may hide what follows (the text then ends there)."""
    out: list[str] = []
    struck = 0
    for child in children:
        if child.type in ("s_open", "s_close"):
            struck += 1 if child.type == "s_open" else -1
        elif child.type in ("softbreak", "hardbreak"):
            out.append("\n")
        elif child.type == "html_inline":
            if _BR.fullmatch(child.content):
                out.append("\n")
            elif not _HTML_COMMENT.fullmatch(child.content):
                return "".join(out).split("\n"), True
        elif struck:
            continue
        elif child.type in ("text", "text_special"):
            out.append(child.content)
        elif child.type == "code_inline":
            out.append("\x00")
    return "".join(out).split("\n"), False


def _blank_spans(paragraph: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """The paragraph's source lines with every code span (also one that crosses a line break) blanked, and
    with each code span as the one mark :func:`_visible` puts for it."""
    if not paragraph:
        return []
    joined = "\n".join(line for _, line in paragraph)
    blanked = _CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), joined).split("\n")
    marked = _CODE_SPAN.sub(lambda m: "\x00" + "\n" * m.group(0).count("\n"), joined).split("\n")
    return [(number, line, mark) for (number, _), line, mark in zip(paragraph, blanked, marked, strict=True)]


def _candidates(line: str, marked: str, visible: list[str]) -> list[str]:
    """The command texts of a source line that the reader sees: the line itself after ``/ka`` when it is a
    visible line as it stands, and every ``[ka:…]`` tag in it that is in a visible line."""
    found = []
    if (m := _LINE.match(line)) and marked.strip() in (v.strip() for v in visible):
        found.append(_TAG.sub(" ", m.group(1) or ""))  # a tag in a /ka line is a command of its own, below
    found += [m.group(1) for m in _TAG.finditer(line) if any(m.group(0) in v for v in visible)]
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
    if spec.args == "tag hosts*":
        if not words or not _TAG_NAME.fullmatch(words[0]) or ".." in words[0]:
            return invalid(f"`{spec.verb}` needs the new baseline's tag first (v6.12.118)")
        base, words = _with(base, to=words[0]), words[1:]
        if any(w.lower() == "all" for w in words):
            return invalid("name hosts, or none for every host")
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


def allowed(spec: Spec, role: str, operator: bool = False, collaborator: bool = False) -> bool:
    """Whether a commenter with ``role`` may run ``spec``; ``operator``: named an operator of the host in
    ``fleet/infra.yaml``; ``collaborator``: added to the repository as a collaborator.

    A login is the identity, and the name of a deleted or renamed account can be registered by
    anyone; on a public repository every account has read.  So an operator counts only with
    write access, or as a collaborator with at least read.
    """
    if spec.role == "anyone":
        return True
    rank = ROLES.index(role) if role in ROLES else 0
    if spec.role == "write":
        return rank >= ROLES.index("write")
    known = rank >= ROLES.index("write") or (collaborator and rank >= ROLES.index("read"))
    return rank >= ROLES.index("admin") or (operator and known)
