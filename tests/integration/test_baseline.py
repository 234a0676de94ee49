"""The baseline check on a real (small) kernel git tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.errors import KernelTreeError
from ka.fleet.manifest import Include
from ka.fleet.series import PatchFile, Series
from ka.promote.baseline import KernelTree, check_applies, hunk_number, touched_paths
from ka.promote.cumulative import concatenate
from tests.support.kernel import BASE_TAG, SmallKernel, git


def _series(k: SmallKernel, *names: str) -> list[Series]:
    inc = Include("driver/test", "driver", "test", 1)
    return [Series(inc, "patches/driver/test", tuple(PatchFile(f"patches/driver/test/{n}.patch", k.patches[n])
                                                     for n in names))]


def _check(k: SmallKernel, *names: str):  # type: ignore[no-untyped-def]
    tree = KernelTree(k.bare)
    series = _series(k, *names)
    return check_applies(tree, tree.commit(BASE_TAG, "test"), series, concatenate(series).data)


def test_applies_including_two_patches_to_one_file(small_kernel: SmallKernel) -> None:
    result = _check(small_kernel, "defconfig", "dts-wifi", "dts-wake", "bes-new", "bes-hook", "goodix")
    assert result.applies is True
    assert result.failure is None


@pytest.mark.parametrize(("names", "failing", "kind", "file", "hunk"), [
    (["defconfig", "ctx-mismatch"], "ctx-mismatch", "context-mismatch", "drivers/input/touchscreen/goodix.c", 2),
    (["goodix", "missing-file"], "missing-file", "missing-file", "drivers/input/nope.c", None),
    (["file-exists"], "file-exists", "file-exists", "drivers/staging/Makefile", None),
    (["defconfig", "goodix", "defconfig"], "defconfig", "already-applied", "arch/arm64/configs/defconfig", 1),
    (["bes-new", "bes-new"], "bes-new", "already-applied", "drivers/staging/bes2600/Kconfig", None),
    (["dts-wake"], "dts-wake", "context-mismatch", "arch/arm64/boot/dts/rockchip/rk3566-pinetab2.dtsi", 1),
    (["defconfig", "malformed"], "malformed", "malformed", None, None),
])
def test_names_first_failing_patch(small_kernel: SmallKernel, names: list[str], failing: str, kind: str,
                                   file: str | None, hunk: int | None) -> None:
    result = _check(small_kernel, *names)
    assert result.applies is False
    f = result.failure
    assert f is not None
    # the failing patch is named by its file; with duplicates, the later occurrence
    assert f.patch == f"patches/driver/test/{failing}.patch"
    assert names.index(failing) < len(names)
    assert (f.kind, f.file, f.hunk) == (kind, file, hunk)
    assert f.series == "driver/test"


def test_failure_detail_reads_well(small_kernel: SmallKernel) -> None:
    f = _check(small_kernel, "ctx-mismatch").failure
    assert f is not None
    assert f.detail == "context does not match the baseline in drivers/input/touchscreen/goodix.c hunk #2 " \
                       "(baseline line 47)"
    assert "patch failed" in f.git


def test_kernel_tree_is_not_changed(small_kernel: SmallKernel) -> None:
    def snapshot() -> tuple[bytes, bytes]:
        objects = git(small_kernel.bare, "count-objects", "-v")
        refs = git(small_kernel.bare, "for-each-ref")
        return objects, refs

    before = snapshot()
    _check(small_kernel, "goodix", "bes-new", "ctx-mismatch")
    assert snapshot() == before
    assert not (small_kernel.bare / "index").exists()


def test_unknown_baseline_is_a_clear_error(small_kernel: SmallKernel) -> None:
    with pytest.raises(KernelTreeError, match=r"'v9\.9' is not a tag or commit in the kernel tree"):
        KernelTree(small_kernel.bare).commit("v9.9", "fleet/x.yaml: baseline.ref")


def test_kernel_tree_must_be_git(tmp_path: Path) -> None:
    with pytest.raises(KernelTreeError, match="not a git repository"):
        KernelTree(tmp_path)
    with pytest.raises(KernelTreeError, match="no such folder"):
        KernelTree(tmp_path / "nope")


@pytest.mark.parametrize(("patch", "paths"), [
    (b"--- a/x/y.c\n+++ b/x/y.c\n", ["x/y.c"]),
    (b"--- /dev/null\n+++ b/new.c\n", ["new.c"]),
    (b"--- a/old.c\n+++ /dev/null\n", ["old.c"]),
    (b"diff --git a/a.c b/b.c\nsimilarity index 90%\nrename from a.c\nrename to b.c\n", ["a.c", "b.c"]),
    (b"diff --git a/bin.dat b/bin.dat\nBinary files differ\n", ["bin.dat"]),
    (b"--- a/t.c\t2026-01-01 00:00:00\n+++ b/t.c\t2026-01-01 00:00:00\n", ["t.c"]),
    (b'--- "a/sp ace.c"\n+++ "b/sp ace.c"\n', ["sp ace.c"]),
    (b"Subject: no diff here\n", []),
    (b"Subject: x\n\n---\n y | 1 +\n\ndiff --git a/y b/y\n--- a/y\r\n+++ b/y\r\n", ["y"]),  # after prose, CRLF
    (b"text --- a/not.c\n+ --- a/nor.c\n--- a/yes.c\n", ["yes.c"]),  # only at a line's start
])
def test_touched_paths(patch: bytes, paths: list[str]) -> None:
    assert touched_paths(patch) == paths


def test_hunk_number_maps_line_to_hunk(small_kernel: SmallKernel) -> None:
    data = small_kernel.patches["goodix-two-hunks"]
    assert hunk_number(data, "drivers/input/touchscreen/goodix.c", 2) == 1
    assert hunk_number(data, "drivers/input/touchscreen/goodix.c", 47) == 2
    assert hunk_number(data, "drivers/input/touchscreen/goodix.c", 3) is None
    assert hunk_number(data, "other.c", 2) is None
