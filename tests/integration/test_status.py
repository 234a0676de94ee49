"""ka-status, offline part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from ka.cli.main import main
from ka.cli.report import STATUS_HEAD, rich_table, status_cells
from ka.status.offline import HostStatus
from tests.support.fleet import AMPERE, MakeRepo, fleet_files, manifest
from tests.support.kernel import SmallKernel


@pytest.fixture
def repo(make_repo: MakeRepo, small_kernel: SmallKernel) -> Path:
    return make_repo({"ampere": AMPERE, "ohm": manifest(["soc/base"]), "volt": "description: [\n"},
                     fleet_files(small_kernel))


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, object]]]:
    code = main(["status", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_status_before_and_after_promote(repo: Path, small_kernel: SmallKernel,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, rows = status(capsys, "--repo", str(repo))
    assert code == 2  # volt's manifest is broken, and says so in its row
    by_host = {r["host"]: r for r in rows}
    assert list(by_host) == ["ampere", "ohm", "volt"]
    assert by_host["ampere"]["promoted_at"] is None and by_host["ampere"]["series"] == 4
    assert by_host["ampere"]["patches"] == 7
    assert "fleet/volt.yaml:2: not valid YAML" in str(by_host["volt"]["error"])
    main(["promote", "ampere", "--repo", str(repo), "--kernel-tree", str(small_kernel.bare)])
    capsys.readouterr()
    _, rows = status(capsys, "--repo", str(repo), "ampere")
    assert rows[0]["applies"] is True and rows[0]["parity"] == "unset" and rows[0]["promoted_at"]
    assert rows[0]["b2sum"] == rows[0]["promoted_b2sum"] and rows[0]["stale"] is False


def test_stale_after_a_patch_changes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["promote", "ampere", "--repo", str(repo)])
    (repo / "patches/arch/defconfig.patch").write_bytes(b"other\n")
    capsys.readouterr()
    _, rows = status(capsys, "--repo", str(repo), "ampere")
    assert rows[0]["stale"] is True


def test_plain_table(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["promote", "ohm", "--repo", str(repo)])
    capsys.readouterr()
    assert main(["status", "--repo", str(repo), "ohm", "ampere"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["HOST", "BASELINE", "SERIES", "PATCHES", "B2SUM", "PARITY", "APPLIES", "PROMOTED"]
    assert lines[1].split()[:4] == ["ohm", "v6.12.0", "1", "2"]
    assert lines[1].split()[6] == "not"  # "not checked": promoted without a kernel tree
    assert lines[2].split()[-1] == "never"


def test_unknown_host(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--repo", str(repo), "nope"]) == 2
    assert "unknown host 'nope'" in capsys.readouterr().err


def test_rich_markup_in_a_host_name_is_shown_as_text(make_repo: MakeRepo, small_kernel: SmallKernel) -> None:
    row = HostStatus("[reverse]evil", error="fleet/[bold]x.yaml: [link=http://x]bad[/link]")
    console = Console(record=True, width=200, color_system=None)
    console.print(rich_table(STATUS_HEAD, [status_cells(row)]))
    text = console.export_text()
    assert "[reverse]evil" in text and "[link=http://x]bad[/link]" in text
