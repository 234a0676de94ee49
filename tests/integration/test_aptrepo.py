"""ka/packages/aptrepo.py's pure parts, against dpkg itself."""

from __future__ import annotations

import subprocess

import pytest

from ka.packages.aptrepo import compare_versions

VERSIONS = ["6.12.117-1", "6.12.117-2", "6.12.117-10", "6.12.117-1~deb12u1", "6.12.117-1~deb12u2", "6.13~rc3-1",
            "6.13-1", "6.13.0-1", "6.13.rc3-1", "1:6.1-1", "6.12.117a-1", "6.12.117+b1-1", "6.12.117", "6.12.117~",
            "6.12.117.0-1", "0:6.12.117-1"]


@pytest.mark.parametrize("a", VERSIONS)
def test_versions_are_ordered_as_dpkg_orders_them(a: str) -> None:
    for b in VERSIONS:
        want = next(r for r, op in ((-1, "lt"), (0, "eq"), (1, "gt"))
                    if subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0)
        assert compare_versions(a, b) == want, (a, b)
