"""Every shared delivery is either handled or ignored with a reason."""

from __future__ import annotations

import pytest

from bot.events.delivery import parse
from bot.events.router import Ignore, RunParity
from handlers import router
from tests.support.botkit import SAMPLE_DECISIONS, all_samples, sample

EXPECTED = SAMPLE_DECISIONS


def test_table_covers_every_sample() -> None:
    assert sorted(EXPECTED) == all_samples()


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_sample(name: str, expected: str) -> None:
    data = sample(name)
    event = parse(data["headers"], data["raw_body"].encode(), None)
    (decision,) = router.dispatch(event)
    if expected == "parity":
        assert isinstance(decision, RunParity)
        p = data["payload"]
        head = p["after"] if event.name == "push" else p["pull_request"]["head"]["sha"]
        assert decision.commit == head
        key = f"push:{p['ref']}:{head}" if event.name == "push" else f"pr:{p['number']}:{head}"
        assert decision.event_key == key
        assert decision.ref == (p["ref"] if event.name == "push" else f"refs/pull/{p['number']}/head")
    else:
        assert isinstance(decision, Ignore)
        assert decision.reason
        assert decision.ping == (expected == "ping")


def test_registered_events() -> None:
    assert router.events() == [("issue_comment", "created"), ("issue_comment", "deleted"),
                               ("issue_comment", "edited"), ("pull_request", "opened"),
                               ("pull_request", "reopened"), ("pull_request", "synchronized"), ("push", None)]
