"""Every shared delivery is either handled or ignored with a reason."""

from __future__ import annotations

import pytest
from botkit import all_samples, sample

from bot.events.delivery import parse
from bot.events.router import Ignore, RunParity
from handlers import router

EXPECTED = {
    "create-branch-gitea-1.16": "ignored",
    "create-tag-forgejo-15-synthesized": "ignored",
    "delete-branch-gitea-1.16": "ignored",
    "issue_comment-created-issue-gitea-1.16": "ignored",
    "issue_comment-created-pr-forgejo-15-synthesized": "ignored",
    "issue_comment-created-pr-gitea-1.16": "ignored",
    "issue_comment-created-pr-legacy": "ignored",
    "issue_comment-edited-issue-legacy": "ignored",
    "pull_request-closed-merged-gitea-com": "ignored",
    "pull_request-opened-forgejo-12": "parity",
    "pull_request-opened-fork-forgejo-11-nosecret": "parity",
    "pull_request-opened-fork-forgejo-12": "parity",
    "pull_request-opened-fork-gitea-1.16": "parity",
    "pull_request-reopened-forgejo-codeberg": "parity",
    "pull_request-review-approved-gitea-com": "ignored",
    "pull_request-synchronized-gitea-1.22": "parity",
    "push-forgejo-12": "parity",
    "push-gitea-1.16": "parity",
    "push-multi-gitea-1.22": "parity",
    "push-new-branch-codeberg-gitea-1.16": "parity",
    "push-signed-gitea-legacy": "parity",
    "push-tag-forgejo-12": "ignored",
    "push-test-delivery-forgejo-15-synthesized": "ping",
}


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
