"""ka/io/outputs.py: all of a verb's files land, or none; many writers at once share their folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.io import outputs
from ka.io.outputs import Outputs

pytestmark = pytest.mark.unit


def test_every_file_lands_with_its_folders(tmp_path: Path) -> None:
    out = Outputs()
    out.add(tmp_path / "out/ampere/ampere-cumulative.patch", b"patch")
    out.add(tmp_path / "out/ampere/ampere.json", b"{}")
    out.commit()
    assert (tmp_path / "out/ampere/ampere-cumulative.patch").read_bytes() == b"patch"
    assert sorted(p.name for p in (tmp_path / "out/ampere").iterdir()) == ["ampere-cumulative.patch", "ampere.json"]


def test_a_folder_another_writer_makes_meanwhile_is_used_not_an_error(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hosts' builds at once both find out/ missing; the second's mkdir meets the first's folder (the
    bot's builds said "cannot write …: File exists" about one host in three)."""
    shared = tmp_path / "builds/job-2"
    shared.mkdir(parents=True)  # made by the other writer between our look and our mkdir
    real = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p: False if p == shared else real(p))
    made = outputs._make_folder(shared / "volta")
    assert made == [shared / "volta"]  # ours alone: a failure would remove only what this writer made


def test_a_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    out = Outputs()
    out.add(tmp_path / "new/ok.txt", b"ok")
    out.add(tmp_path / "blocker/x.txt", b"x")
    with pytest.raises(outputs.OutputError, match="blocker"):
        out.commit()
    assert not (tmp_path / "new").exists()
