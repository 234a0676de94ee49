"""Signals under ``stopping.deferred``: a stop is asked for, not raised, until the third."""

from __future__ import annotations

import os
import signal

import pytest

from ka.io import stopping


def test_a_signal_is_noted_and_raised_only_where_checked() -> None:
    with stopping.deferred():
        stopping.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopping.asked() == 1 and stopping.name() == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            stopping.check()
    assert stopping.asked() == 0 and signal.getsignal(signal.SIGTERM) is not stopping._note


def test_the_third_signal_stops_at_once() -> None:
    with stopping.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
