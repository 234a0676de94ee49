"""The live fleet table's cells: why a host could not be asked has a column of its own."""

from __future__ import annotations

import pytest

from ka.status.cells import LIVE_HEAD, live_cells
from ka.status.live import LiveRow

DOWN = "ohm (install.ssh of fleet/ohm.yaml): 10.0.0.9:22: timed out; from ~/.ssh/config"


@pytest.mark.parametrize(("row", "last", "problem"), [
    (LiveRow("ampere", reachable=True, running="6.12.1", last_install="succeeded", last_install_at="2026-12-01"),
     "succeeded 2026-12-01", "-"),
    (LiveRow("ohm", reachable=False, error=DOWN), "-", DOWN),
    (LiveRow("volta", reachable=True, last_install="failed", error="EOFError: lost"), "failed", "EOFError: lost"),
])
def test_a_connection_error_is_a_problem_not_a_last_install(row: LiveRow, last: str, problem: str) -> None:
    cells = dict(zip(LIVE_HEAD, live_cells(row), strict=True))
    assert (cells["LAST INSTALL"], cells["PROBLEM"]) == (last, problem)
