"""What the bot says in public: reasons without stacks, texts without the bot's folders."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
from pathlib import Path

import pytest

import bot
from bot.mirror import FetchError
from bot.public import Scrubber, reason, scrub_tree
from ka.build.flow import BuildError

STATE = Path("/var/lib/kernel-agent")
TREE = Path("/var/lib/kernel-agent/linux.git")
ROOT = str(Path(bot.__file__).resolve().parent.parent)


@pytest.mark.parametrize(("exc", "said"), [
    (BuildError("no build host can be reached: boltzmann"), "no build host can be reached: boltzmann"),
    (FetchError("could not fetch abc from the forge"), "could not fetch abc from the forge"),
    (sqlite3.OperationalError("database or disk is full"), "the bot's database: database or disk is full"),
    (OSError(errno.ENOSPC, "No space left on device", "/var/lib/kernel-agent/jobs/1.log"),
     f"the bot's machine: {os.strerror(errno.ENOSPC)} (its log says where)"),
    (KeyError("/var/lib/kernel-agent/secret"), "an internal error in the bot (its log has the traceback)"),
    (RuntimeError("job 2: no such verb 'frob'"), "an internal error in the bot (its log has the traceback)"),
])
def test_a_failure_is_said_in_words_without_its_class(exc: BaseException, said: str) -> None:
    assert reason(exc) == said


@pytest.mark.parametrize(("text", "said"), [
    ("cannot read /var/lib/kernel-agent/mirror/x.git: gone", "cannot read $KA_STATE_DIR/mirror/x.git: gone"),
    ("KA_KERNEL_TREE /var/lib/kernel-agent/linux.git is not a git repository",
     "KA_KERNEL_TREE $KA_KERNEL_TREE is not a git repository"),  # the inner folder is named by its own setting
    ("kept at '/var/lib/kernel-agent'", "kept at '$KA_STATE_DIR'"),
    ("/var/lib/kernel-agent-old/x stays", "/var/lib/kernel-agent-old/x stays"),  # a folder that only starts alike
    (f'  File "{ROOT}/bot/jobs/worker.py", line 3', '  File "<ka-bot>/bot/jobs/worker.py", line 3'),
    ("started\nTraceback (most recent call last):\n"
     f'  File "{ROOT}/bot/jobs/worker.py", line 274, in execute\n'
     "    result = _run_verb(services, job, log_line, kick)\n"
     "             ^^^^^^^^\n"
     "ValueError: bad\nnext line", "started\nValueError: bad\nnext line"),
    ("planck:/home/build/ka/job-3 is kept", "planck:/home/build/ka/job-3 is kept"),  # a build host's folder stays
    ("cannot write /var/lib/kernel-agent.", "cannot write $KA_STATE_DIR."),  # a sentence's end
    ("(/var/lib/kernel-agent)", "($KA_STATE_DIR)"),
    ("/data/var/lib/kernel-agent/x", "/data/var/lib/kernel-agent/x"),  # another folder that ends alike
    ("/var/lib/kernel-agent.old/x", "/var/lib/kernel-agent.old/x"),
])
def test_a_public_text_names_the_bot_folders_as_settings(text: str, said: str) -> None:
    assert Scrubber.of(STATE, TREE)(text) == said


def test_a_state_folder_that_is_the_home_is_named_as_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(STATE))  # the service user of the documented deployment
    assert Scrubber.of(STATE)(f"{STATE}/jobs/1.log and {STATE}") == "$KA_STATE_DIR/jobs/1.log and $KA_STATE_DIR"


def test_a_relative_state_folder_rewrites_no_word() -> None:
    assert Scrubber.of(Path("state"))("host state: error") == "host state: error"


def test_the_home_and_the_python_install_are_not_shown() -> None:
    scrub = Scrubber.of(STATE)
    assert scrub(f"{os.path.expanduser('~')}/.ssh/config was read") == "~/.ssh/config was read"
    assert sys.prefix not in scrub(f"{sys.prefix}/lib/python3/site-packages/paramiko/client.py")


def test_a_result_is_scrubbed_all_the_way_down() -> None:
    result = {"kept": "/var/lib/kernel-agent/builds/job-2", "fallback": ["a (/var/lib/kernel-agent/ssh)"], "n": 3}
    assert scrub_tree(Scrubber.of(STATE), result) == {"kept": "$KA_STATE_DIR/builds/job-2",
                                                       "fallback": ["a ($KA_STATE_DIR/ssh)"], "n": 3}
