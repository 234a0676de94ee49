"""The command line's help: every verb's every argument says what it is."""

from __future__ import annotations

import argparse

from ka.cli.main import build_parser


def _verbs(parser: argparse.ArgumentParser, prefix: str = "ka") -> dict[str, argparse.ArgumentParser]:
    found = {prefix: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _verbs(sub, f"{prefix} {name}")
    return found


def test_every_argument_of_every_verb_has_help() -> None:
    verbs = _verbs(build_parser())
    assert {"ka status", "ka build", "ka install", "ka promote", "ka pkgdiff"} <= set(verbs)
    silent = [f"{verb}: {action.option_strings[0] if action.option_strings else action.metavar or action.dest}"
              for verb, parser in verbs.items() for action in parser._actions
              if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert silent == []
