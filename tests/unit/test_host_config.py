"""ka/host/config.py: what carrying the running kernel's config to the baseline changed, for the header."""

from __future__ import annotations

import pytest

from ka.build.kconfig import parse
from ka.host.config import Carried, compare, header

RUNNING = ("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x\"\nCONFIG_GONE=y\n"
           "CONFIG_CC_VERSION_TEXT=\"gcc (Debian 12.2.0-14) 12.2.0\"\n")


@pytest.mark.parametrize(("carried", "lost", "changed", "new"), [
    (RUNNING, [], [], 0),
    (RUNNING.replace("CONFIG_GONE=y\n", ""), ["CONFIG_GONE=y"], [], 0),
    (RUNNING.replace("CONFIG_B=m", "# CONFIG_B is not set"), ["CONFIG_B=m"], [], 0),
    (RUNNING.replace("CONFIG_B=m", "CONFIG_B=y"), [], ["CONFIG_B: m -> y"], 0),
    (RUNNING.replace("# CONFIG_C is not set", "CONFIG_C=y"), [], [], 0),  # turned on: not a loss
    (RUNNING + "CONFIG_NEW=y\n# CONFIG_NEW2 is not set\n", [], [], 2),
    (RUNNING.replace("12.2.0-14) 12.2.0", "14.2.0-1) 14.2.0") + "CONFIG_GCC_VERSION=140200\n", [], [], 0),
])
def test_what_carrying_lost_changed_and_added(carried: str, lost: list[str], changed: list[str], new: int) -> None:
    assert compare(RUNNING, carried) == (lost, changed, new)


def test_the_header_is_comments_the_config_parser_skips() -> None:
    carried = Carried("CONFIG_A=y\n", lost=["CONFIG_GONE=y"], changed=["CONFIG_B: m -> y"], new=812)
    text = header("qemu", "/proc/config.gz", "6.1.0-57-arm64", "v6.12.117", carried)
    assert all(line.startswith("#") for line in text.splitlines())
    assert "6.1.0-57-arm64, /proc/config.gz" in text and "carried to v6.12.117" in text
    assert "#   CONFIG_GONE=y\n" in text and "#   CONFIG_B: m -> y\n" in text and "812 options" in text
    requests, problems = parse(text + carried.text, "fleet/configs/qemu.config")
    assert [(r.symbol, r.value) for r in requests] == [("CONFIG_A", "y")] and problems == []
