"""How many examples a property-based test draws: all of them in a full run, a sample in ``./test --fast``.

The fuzzers are pure but long (ten thousand deliveries, three thousand manifests); the fast tier
runs each with a hundred examples so that it stays a pre-commit check, and the full run (what CI
runs) keeps every example.
"""

from __future__ import annotations

import os

FAST = os.environ.get("KA_FAST_TESTS") == "1"


def examples(full: int) -> int:
    """``full`` examples, or at most 100 in the fast run."""
    return min(full, 100) if FAST else full
