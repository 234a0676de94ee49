"""Config files and fragments: every option they set becomes a request the audit checks, with its file:line."""

from __future__ import annotations

import pytest

from ka.build.kconfig import Request, merged, parse


@pytest.mark.parametrize(("line", "symbol", "value"), [
    ("CONFIG_MMC=y", "CONFIG_MMC", "y"),
    ("CONFIG_BES2600=m", "CONFIG_BES2600", "m"),
    ("# CONFIG_MMC is not set", "CONFIG_MMC", "n"),
    ("CONFIG_MMC=n", "CONFIG_MMC", "n"),
    ('CONFIG_LOCALVERSION="-ampere"', "CONFIG_LOCALVERSION", '"-ampere"'),
    ('CONFIG_CMDLINE="console=ttyS2,1500000 quiet"', "CONFIG_CMDLINE", '"console=ttyS2,1500000 quiet"'),
    ('CONFIG_X="a \\"quoted\\" word"', "CONFIG_X", '"a \\"quoted\\" word"'),
    ("CONFIG_LOG_BUF_SHIFT=17", "CONFIG_LOG_BUF_SHIFT", "17"),
    ("CONFIG_PHYS_OFFSET=0x80000000", "CONFIG_PHYS_OFFSET", "0x80000000"),
    ("CONFIG_NR_CPUS=-1", "CONFIG_NR_CPUS", "-1"),
    ("  CONFIG_MMC=y  ", "CONFIG_MMC", "y"),
])
def test_an_option_is_a_request(line: str, symbol: str, value: str) -> None:
    found, problems = parse(f"# a comment\n\n{line}\n", "fleet/configs/h.config")
    assert problems == []
    assert found == [Request(symbol, value, "fleet/configs/h.config", 3)]


@pytest.mark.parametrize("line", [
    "CONFIG_MMC",                       # no value
    "MMC=y",                            # no CONFIG_ prefix
    "CONFIG_MMC = y",                   # spaces around '='
    'CONFIG_LOCALVERSION="-a";touch x;""',  # not one quoted string
    'CONFIG_LOCALVERSION="-a',          # unterminated
    "CONFIG_X=y z",                     # two words
    "CONFIG_X=\ty",                     # a tab (the audit's separator)
    "source drivers/Kconfig",           # Kconfig, not a config
])
def test_a_line_that_is_no_option_is_a_located_problem(line: str) -> None:
    found, problems = parse(f"CONFIG_A=y\n{line}\n", "fleet/configs/h.config")
    assert [r.symbol for r in found] == ["CONFIG_A"]
    (problem,) = problems
    assert (problem.file, problem.line, problem.field) == ("fleet/configs/h.config", 2, "package.config")
    assert "CONFIG_NAME=value" in problem.message


def test_a_later_fragment_replaces_an_earlier_value() -> None:
    a, _ = parse("CONFIG_A=y\nCONFIG_B=m\n", "fleet.config")
    b, _ = parse("# CONFIG_A is not set\nCONFIG_C=y\n", "h.config")
    assert merged(a + b) == (Request("CONFIG_A", "n", "h.config", 1), Request("CONFIG_B", "m", "fleet.config", 2),
                             Request("CONFIG_C", "y", "h.config", 2))
