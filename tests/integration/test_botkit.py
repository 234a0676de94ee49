"""The test harness itself: a bot that fails to start is not left running (defect 16)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.botkit import SECRET, STARTED, BotProcess


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_bot_that_does_not_answer_in_time_is_killed_with_its_children(tmp_path: Path) -> None:
    bot = BotProcess(tmp_path / "state", {"KA_WEBHOOK_SECRET": SECRET})
    with pytest.raises(AssertionError, match="bot did not start"):
        bot.start(deadline=0.0)  # gunicorn needs far longer than this to answer
    assert bot.proc is not None
    assert not _alive(bot.proc.pid)
    assert bot.proc.pid not in STARTED


def test_stop_leaves_nothing_of_the_group(tmp_path: Path) -> None:
    bot = BotProcess(tmp_path / "state", {"KA_WEBHOOK_SECRET": SECRET}).start()
    assert bot.proc is not None
    bot.stop()
    assert not _alive(bot.proc.pid)
