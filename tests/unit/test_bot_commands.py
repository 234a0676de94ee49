"""The /ka comment grammar: a table of comments and what the parser must find in them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.events.commands import COMMANDS, MAX_BODY, MAX_COMMANDS, Command, Invalid, allowed, help_table, parse_commands
from tests.support import docs
from tests.support.fuzz import examples


def C(verb: str, *hosts: str, **kw: object) -> Command:
    return Command(verb, hosts=hosts, **kw)  # type: ignore[arg-type]


# (comment body, what the parser finds: commands without their line numbers, or ("invalid", fragment))
CASES = [
    ("/ka build ampere", [C("build", "ampere")]),
    ("/ka build ampere fresnel", [C("build", "ampere", "fresnel")]),
    ("/ka build all", [Command("build", all_hosts=True)]),
    ("/ka promote ampere ohm", [C("promote", "ampere", "ohm")]),
    ("/ka promote all", [C("promote", all_hosts=True)]),
    ("/ka promote ampere @0123abc", [C("promote", "ampere", commit="0123abc")]),
    ("/ka promote all @ABCDEF1234", [C("promote", all_hosts=True, commit="abcdef1234")]),
    ("/ka status", [C("status")]),
    ("/ka status ampere fresnel", [C("status", "ampere", "fresnel")]),
    ("/ka help", [C("help")]),
    ("/ka help build", [C("help", topic="build")]),
    ("/ka", [C("help")]),
    ("/ka install ampere --no-reboot", [C("install", "ampere", flags=("--no-reboot",))]),
    ("/ka rollback ohm", [C("rollback", "ohm")]),
    ("/ka cancel 12", [C("cancel", job=12)]),
    ("/ka retry #7", [C("retry", job=7)]),
    ("/KA Build ampere", [C("build", "ampere")]),
    ("   /ka build ampere", [C("build", "ampere")]),
    ("/ka build ampere\r\n/ka build ohm\r\n", [C("build", "ampere"), C("build", "ohm")]),
    ("/ka build\u00a0ampere", [C("build", "ampere")]),  # a no-break space is still a space
    ("Looks good. [ka:build ampere] thanks", [C("build", "ampere")]),
    ("[ka:promote all] and [ka:status]", [C("promote", all_hosts=True), C("status")]),
    ("/ka status [ka:build ampere]", [C("status"), C("build", "ampere")]),
    ("first line\n/ka build ampere\nlast line", [C("build", "ampere")]),
    ("/ka promote ampere ampere", [C("promote", "ampere")]),  # a host named twice is checked once
    # never a command
    ("please /ka build ampere", []),
    ("/kaboom", []),
    ("`/ka build ampere`", []),
    ("see `[ka:build ampere]` for how", []),
    ("> /ka build ampere", []),
    ("  > /ka build ampere", []),
    ("```\n/ka build ampere\n```", []),
    ("~~~~\n/ka build ampere\n~~~~", []),
    ("```sh\n/ka build ampere\n", []),  # an unclosed fence runs to the end
    ("````\n```\n/ka build ampere\n````", []),  # a shorter fence does not close a longer one
    ("text\n\n    /ka build ampere", []),  # indented code block
    ("\t/ka build ampere", []),
    ("<!-- /ka build ampere -->", []),
    ("<!--\n/ka build ampere\n-->\n/ka build ohm", [C("build", "ohm")]),
    ("<!-- unclosed\n/ka build ampere", []),
    ("``/ka `build` ampere``", []),
    ("a paragraph\n    /ka build ampere", []),  # not code, but a paragraph's continuation: rendered mid-line
    ("Run `x\n/ka promote all`", []),  # a code span over a line break (found in review)
    ("`open\n\n/ka build ampere", [C("build", "ampere")]),  # a span never crosses a paragraph
    # what the rendered thread does not show as written (CommonMark, as Forgejo renders it)
    ("> a quote\n/ka build ampere", []),  # a lazy continuation: still inside the quote
    ("[ka:install ampere]: https://example.org/x", []),  # a link reference definition: invisible
    ("<pre>\n/ka build ampere\n</pre>", []),
    ("<details>\n<summary>more</summary>\n\n/ka build ampere\n\n</details>", []),  # folded away
    # after any HTML but a comment or <br>, nothing acts: the bot cannot tell what a browser hides
    ("<details><summary>s</summary>\n\n[ka:install ampere]\n\n</details>\n\n/ka build ohm", []),
    ("<div>\n\n/ka build ampere\n\n</div>", []),
    ("Thanks! <details>\n\n/ka build ampere", []),  # found in review: an inline element left open
    ("<details>\n\n</span>\n\n/ka build ampere", []),
    ("<details/>\n\n/ka build ampere", []),
    ('<details title="a<b">\n\n/ka build ampere', []),
    ("`<!--`\n\n<details>\n\n`-->`\n\n/ka build ampere", []),  # no comment: two code spans
    ("![[ka:build ampere]](https://example.org/1x1.png)", []),  # an image's text
    ('[docs](https://example.org "[ka:build ampere]")', []),  # a link's title
    ("[docs](<https://example.org/[ka:build ampere]>)", []),  # a link's destination
    ("![logo\n/ka build ampere\n](https://example.org/a.png)", []),
    ("~~/ka build ampere~~ [ka:build ohm] ~~[ka:status]~~", [C("build", "ohm")]),  # struck out
    ("[see [ka:build ampere]](https://example.org)", [C("build", "ampere")]),  # a link's text is shown
    ("/ka build &#97;mpere", []),  # shown as written only when written as shown
    ("<!-- a note -->\n\n/ka build ampere", [C("build", "ampere")]),  # a comment hides only itself
    ("looks good <span hidden>[ka:install ampere]</span> thanks", []),
    ("see <https://example.org/x>\n/ka build ampere", [C("build", "ampere")]),  # an autolink is no element
    ("a <br> b\n/ka build ampere", [C("build", "ampere")]),  # a void element closes itself
    ("- a list item\n\n/ka build ampere", [C("build", "ampere")]),
    ("| a |\n|---|\n| [ka:build ampere] |", []),  # a table cell is not a paragraph
    # invalid: replied to, never run
    ("/ka biuld ampere", [("invalid", "unknown command `biuld`; did you mean `build`?")]),
    ("/ka frobnicate", [("invalid", "unknown command `frobnicate`")]),
    ("/ka build", [("invalid", "`build` needs hosts, or `all`; usage: `/ka build HOST…|all [@SHA]`")]),
    ("/ka build ampere all", [("invalid", "`all` stands alone")]),
    ("/ka build Ampere", [("invalid", "`Ampere` is not a host name")]),
    ("/ka build ../etc", [("invalid", "`../etc` is not a host name")]),
    ("/ka promote", [("invalid", "`promote` needs hosts, or `all`")]),
    ("/ka promote all ampere", [("invalid", "`all` stands alone")]),
    ("/ka status all", [("invalid", "`all` stands alone")]),
    ("/ka install ampere --force", [("invalid", "`--force` is not an option of `install`")]),
    ("/ka rollback ampere @abcdef1", [("invalid", "`rollback` takes no @SHA")]),
    ("/ka cancel twelve", [("invalid", "`cancel` takes one job number")]),
    ("/ka cancel 1 2", [("invalid", "`cancel` takes one job number")]),
    ("/ka help me", [("invalid", "`me` is not a command")]),
    ("/ka build `rm -rf /`", [("invalid", "`build` needs hosts, or `all`")]),  # code is no host
    ("/ka promote " + " ".join(f"h{n}" for n in range(60)), [("invalid", "at most 50 hosts")]),
    ("/ka b\u00fcild ampere", [("invalid", "unknown command `b\u00fcild`")]),
    # bump: the new baseline's tag first, then hosts or none for all
    ("/ka bump v6.12.118", [Command("bump", to="v6.12.118")]),
    ("/ka bump v6.12.118 ampere ohm", [Command("bump", hosts=("ampere", "ohm"), to="v6.12.118")]),
    ("/ka bump", [("invalid", "`bump` needs the new baseline's tag first (v6.12.118); usage: `/ka bump TAG [HOST…]`")]),
    ("/ka bump ampere", [("invalid", "`bump` needs the new baseline's tag first")]),
    ("/ka bump v6..12", [("invalid", "`bump` needs the new baseline's tag first")]),
    ("/ka bump v6.12.118 all", [("invalid", "name hosts, or none for every host")]),
    ("/ka bump v6.12.118 @abcdef1", [("invalid", "`bump` takes no @SHA")]),
]


def _found(body: str) -> list[object]:
    out: list[object] = []
    for item in parse_commands(body).items:
        if isinstance(item, Invalid):
            out.append(("invalid", item.message))
        else:
            out.append(Command(**{**item.__dict__, "line": 0}))
    return out


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_grammar(body: str, expected: list[object]) -> None:
    found = _found(body)
    assert len(found) == len(expected), found
    for got, want in zip(found, expected, strict=True):
        if isinstance(want, tuple):
            assert isinstance(got, tuple) and want[1] in got[1], (got, want)
        else:
            assert got == want


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_commands_carry_their_line() -> None:
    parsed = parse_commands("hello\r\n\r\n/ka build ampere\n[ka:status]")
    assert [i.line for i in parsed.items] == [3, 4]


def test_more_than_the_cap_is_cut_and_says_so() -> None:
    parsed = parse_commands("\n".join(f"/ka build h{n}" for n in range(MAX_COMMANDS + 5)))
    assert len(parsed.items) == MAX_COMMANDS and parsed.capped


def test_a_very_long_comment_is_read_up_to_its_cap() -> None:
    parsed = parse_commands("x" * 1_000_000 + "\n/ka build ampere")
    assert parsed.items == [] and not parsed.capped and parsed.cut


def test_a_line_across_the_cap_is_not_read_in_half() -> None:
    """Found in review: "--no-reboot" cut off would have turned into an install with a reboot."""
    head = "x" * (MAX_BODY - 20) + "\n"
    parsed = parse_commands(head + "/ka install ampere --no-reboot\n")
    assert parsed.items == [] and parsed.cut
    parsed = parse_commands("/ka install ampere --no-reboot\n" + head)
    assert [c.flags for c in parsed.commands] == [("--no-reboot",)]


def test_canonical_text_quotes_only_parsed_words() -> None:
    (cmd,) = parse_commands("/ka install  ampere   --no-reboot").commands
    assert cmd.text == "/ka install ampere --no-reboot"
    assert Command.from_dict(cmd.as_dict()) == cmd


def test_help_is_the_table() -> None:
    table = help_table()
    for spec in COMMANDS.values():
        usage = spec.usage.replace("|", "\\|")
        assert f"| `{usage}` | {spec.help} | {spec.who} |" in table
    assert help_table("build").count("\n") == 2
    assert "`/ka promote HOST…\\|all [@SHA]`" in table  # a pipe would end the table's cell




@pytest.mark.parametrize(("verb", "role", "operator", "ok"), [
    ("help", "none", False, True),
    ("status", "read", False, False),
    ("status", "write", False, True),
    ("promote", "owner", False, True),
    ("build", "read", False, False),
    ("install", "write", False, False),
    ("install", "write", True, True),
    ("install", "none", True, False),  # an operator's login that has no access (deleted, or taken by another)
    ("rollback", "none", True, False),
    ("install", "read", True, False),  # read alone: every account has it on a public repository
    ("install", "admin", False, True),
    ("rollback", "owner", False, True),
    ("retry", "none", True, False),
    ("cancel", "write", False, True),
])
def test_permissions_come_from_the_table(verb: str, role: str, operator: bool, ok: bool) -> None:
    assert allowed(COMMANDS[verb], role, operator) is ok


@pytest.mark.parametrize(("role", "operator", "collaborator", "ok"), [
    ("read", True, True, True),  # added as a collaborator, with read
    ("read", True, False, False),  # read, as every account on a public repository
    ("none", True, True, False),
    ("read", False, True, False),  # a collaborator, but not this host's operator
    ("write", True, False, True),
])
def test_an_operator_counts_as_a_collaborator_or_with_write(role: str, operator: bool, collaborator: bool,
                                                            ok: bool) -> None:
    assert allowed(COMMANDS["install"], role, operator, collaborator) is ok


@settings(max_examples=examples(3_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.sampled_from(["/ka ", "/ka build ampere", "[ka:", "]", "`", "```", "~~~", "> ", "    ", "\t", "<!--", "-->",
                     "\n", "\r\n", "@abcdef1", "all", "--no-reboot", "#12", "/KA help", "[ka:promote all]"]),
    st.text(max_size=12)), max_size=30).map("".join))
@example("[ka:" * 1000)
@example("`" * 5000 + "/ka build x")
def test_any_comment_parses_without_error(body: str) -> None:
    parsed = parse_commands(body)
    assert len(parsed.items) <= MAX_COMMANDS
    for item in parsed.items:
        if isinstance(item, Command):
            assert item.verb in COMMANDS and len(item.hosts) <= 50
            assert "`" not in item.text and "\n" not in item.text
        else:
            assert item.message and "\n" not in item.message


def test_the_readme_shows_the_help_table_as_the_bot_answers_it() -> None:
    assert help_table() in docs.text()
