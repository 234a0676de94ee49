"""Real components the tests need: skipped locally when missing, a failure in CI (``CI=true``)."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, what: str) -> None:
    """Skip locally, fail in CI, when a real component is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing real component in CI: {what}")
    pytest.skip(f"missing: {what}")
