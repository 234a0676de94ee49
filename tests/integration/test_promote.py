"""ka-promote end to end through the CLI, on a real small kernel tree and real git repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ka.cli.main import main
from ka.promote.cumulative import b2sum
from tests.support.fleet import AMPERE, ORDER, MakeRepo, fleet_files, manifest
from tests.support.kernel import SmallKernel, git

EXPECTED = [p for _, files in ORDER for p in files]


@pytest.fixture
def repo(make_repo: MakeRepo, small_kernel: SmallKernel) -> Path:
    return make_repo({"ampere": AMPERE, "ohm": manifest(["soc/base", "module/bad"])}, fleet_files(small_kernel))


def ka(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def promote_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict | list]:
    code, out, _err = ka(capsys, "promote", "--json", *args)
    return code, json.loads(out)


def test_cumulative_is_cat_in_apply_order(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = promote_json(capsys, "ampere", "--repo", str(repo))
    assert code == 0
    patch = repo / "out/ampere/ampere-cumulative.patch"
    assert data["patch"] == str(patch)
    cat = subprocess.run(["cat", *EXPECTED], cwd=repo, capture_output=True, check=True).stdout
    assert patch.read_bytes() == cat
    assert data["bytes"] == len(cat)
    printed = subprocess.run(["b2sum", patch.name], cwd=patch.parent, capture_output=True, check=True).stdout
    assert (patch.parent / "ampere-cumulative.patch.b2sum").read_bytes() == printed
    assert data["b2sum"] == printed.split()[0].decode() == b2sum(cat)
    assert [s["include"] for s in data["series"]] == [inc for inc, _ in ORDER]
    assert [s["patches"] for s in data["series"]] == [files for _, files in ORDER]
    assert data["applies"] is None and data["parity"] == "unset" and data["failure"] is None


def test_same_bytes_whatever_creation_order_umask_and_locale(make_repo: MakeRepo, small_kernel: SmallKernel,
                                                            tmp_path: Path) -> None:
    files = fleet_files(small_kernel)
    forward = make_repo({"ampere": AMPERE}, files, commit=False, name="forward")
    backward = make_repo({"ampere": AMPERE}, dict(reversed(list(files.items()))), commit=False, name="backward")
    outputs = []
    for root, env in [(forward, {"LC_ALL": "C", "UMASK": "022"}), (backward, {"LC_ALL": "C.UTF-8", "UMASK": "077"}),
                      (forward, {"LC_ALL": "en_US.UTF-8", "TZ": "Asia/Tokyo", "UMASK": "027"})]:
        script = (f"import os,sys; os.umask(0o{env['UMASK']}); from ka.cli.main import main; "
                  "sys.exit(main(sys.argv[1:]))")
        subprocess.run([sys.executable, "-c", script, "promote", "ampere", "--repo", str(root)],
                       env={**os.environ, **env}, check=True, capture_output=True)
        out = root / "out/ampere/ampere-cumulative.patch"
        outputs.append((out.read_bytes(), oct(out.stat().st_mode & 0o777)))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][1] == "0o644"


def test_applies_on_baseline(repo: Path, small_kernel: SmallKernel, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = promote_json(capsys, "ampere", "--repo", str(repo), "--kernel-tree", str(small_kernel.bare))
    assert code == 0
    assert data["applies"] is True
    assert data["baseline_commit"] == git(small_kernel.bare, "rev-parse", "v6.12.0^{commit}").decode().strip()


def test_does_not_apply_names_patch(repo: Path, small_kernel: SmallKernel, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = promote_json(capsys, "ohm", "--repo", str(repo), "--kernel-tree", str(small_kernel.bare))
    assert code == 1
    assert data["applies"] is False
    assert data["failure"]["patch"] == "patches/module/bad.patch"
    assert data["failure"]["kind"] == "context-mismatch"
    assert "drivers/input/touchscreen/goodix.c hunk #2" in data["failure"]["detail"]
    # the output is still written: it is what the maintainer needs to look at
    assert (repo / "out/ohm/ohm-cumulative.patch").exists()


def test_kernel_tree_from_environment(repo: Path, small_kernel: SmallKernel, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KA_KERNEL_TREE", str(small_kernel.bare))
    code, out, _ = ka(capsys, "promote", "ampere", "--repo", str(repo))
    assert code == 0
    assert "baseline v6.12.0 (" in out and "): applies" in out


def test_all_one_line_per_host(repo: Path, small_kernel: SmallKernel, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ka(capsys, "promote", "--all", "--repo", str(repo), "--kernel-tree", str(small_kernel.bare))
    assert code == 1
    lines = out.splitlines()  # a host's line comes when it is done: in whatever order the hosts finish
    assert any(ln.startswith("ampere ") and "applies" in ln for ln in lines)
    assert any(ln.startswith("ohm ") and "DOES NOT APPLY" in ln for ln in lines)
    assert "  patches/module/bad.patch: context does not match" in out
    assert lines[-1] == "2 hosts, 1 failed: ohm"
    code, data = promote_json(capsys, "--all", "--repo", str(repo))
    assert [d["host"] for d in data] == ["ampere", "ohm"]
    assert set(data[0]) >= {"host", "rev", "baseline", "b2sum", "bytes", "patch", "series", "applies", "failure",
                            "parity", "seconds"}


def _with_parity(make_repo: MakeRepo, k: SmallKernel, parity: str, extra: dict[str, bytes | str]) -> Path:
    return make_repo({"ampere": AMPERE + parity}, {**fleet_files(k), **extra})


def _cat(files: dict[str, bytes | str]) -> bytes:
    return b"".join(files[p] if isinstance(files[p], bytes) else files[p].encode() for p in EXPECTED)  # type: ignore


def test_parity_match_by_b2sum_and_canonical(make_repo: MakeRepo, small_kernel: SmallKernel,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    whole = _cat(fleet_files(small_kernel))
    root = _with_parity(make_repo, small_kernel, f"parity:\n  b2sum: {b2sum(whole)}\n  canonical: ref/c.patch\n",
                        {"ref/c.patch": whole})
    code, data = promote_json(capsys, "ampere", "--repo", str(root))
    assert (code, data["parity"]) == (0, "match")


def test_parity_mismatch_by_b2sum(make_repo: MakeRepo, small_kernel: SmallKernel,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = _with_parity(make_repo, small_kernel, f"parity:\n  b2sum: {'f' * 128}\n", {})
    code, data = promote_json(capsys, "ampere", "--repo", str(root))
    assert (code, data["parity"]) == (1, "mismatch")
    assert "is not the expected ffff" in data["parity_detail"]["reason"]


def test_parity_mismatch_names_offset_and_patch_line(make_repo: MakeRepo, small_kernel: SmallKernel,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    files = fleet_files(small_kernel)
    whole = _cat(files)
    wake = files["patches/board/pinetab2/0002-wake.patch"]
    assert isinstance(wake, bytes)
    target = wake.index(b"+\twifi@1 { wake; };")
    offset = len(whole) - len(wake) + target + 1
    canonical = whole[:offset] + b"X" + whole[offset + 1:]
    root = _with_parity(make_repo, small_kernel, "parity:\n  canonical: ref/c.patch\n", {"ref/c.patch": canonical})
    code, data = promote_json(capsys, "ampere", "--repo", str(root))
    assert (code, data["parity"]) == (1, "mismatch")
    detail = data["parity_detail"]
    assert detail["offset"] == offset
    assert detail["patch"] == "patches/board/pinetab2/0002-wake.patch"
    assert detail["line"] == wake.count(b"\n", 0, target) + 1
    assert detail["ours"] == "+\twifi@1 { wake; };"  # our line; never the reference's bytes
    assert detail["expected_b2sum"] == b2sum(canonical)
    assert "X\twifi" not in json.dumps(data)
    code, out, _ = ka(capsys, "promote", "ampere", "--repo", str(root))
    assert f"first difference at byte {offset}: patches/board/pinetab2/0002-wake.patch line {detail['line']}" in out
    assert f"b2sum of the reference: {b2sum(canonical)}" in out and "X\twifi" not in out


def test_parity_canonical_longer(make_repo: MakeRepo, small_kernel: SmallKernel,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    whole = _cat(fleet_files(small_kernel))
    root = _with_parity(make_repo, small_kernel, "parity:\n  canonical: ref/c.patch\n",
                        {"ref/c.patch": whole + b"extra\n"})
    _, data = promote_json(capsys, "ampere", "--repo", str(root))
    assert data["parity_detail"]["offset"] == len(whole)
    assert "past the end of the cumulative patch" in data["parity_detail"]["reason"]


def test_rev_equals_worktree_of_that_commit(repo: Path, small_kernel: SmallKernel, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    first = git(repo, "rev-parse", "HEAD").decode().strip()
    (repo / "patches/soc/base/10-goodix.patch").unlink()
    (repo / "fleet/ampere.yaml").write_text(AMPERE.replace("  - arch/defconfig\n", ""))
    git(repo, "commit", "-qam", "drop goodix and defconfig")
    out_rev = tmp_path / "rev.patch"
    code, data = promote_json(capsys, "ampere", "--repo", str(repo), "--rev", first, "-o", str(out_rev),
                              "--kernel-tree", str(small_kernel.bare))
    assert code == 0 and data["rev"] == first and data["applies"] is True
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(worktree), first)
    code, wt = promote_json(capsys, "ampere", "--repo", str(worktree))
    assert code == 0
    assert out_rev.read_bytes() == Path(wt["patch"]).read_bytes()
    assert data["b2sum"] == wt["b2sum"]
    assert wt["rev"] == first
    # and HEAD really differs, so the test can tell the two commits apart
    _, head = promote_json(capsys, "ampere", "--repo", str(repo), "--rev", "HEAD", "-o", str(tmp_path / "h.patch"))
    assert head["b2sum"] != data["b2sum"]


def test_rev_reads_a_bare_mirror(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--mirror", str(repo), str(mirror))
    code, data = promote_json(capsys, "--all", "--repo", str(mirror), "--rev", "main",
                              "--out-dir", str(tmp_path / "o"))
    assert code == 0  # no kernel tree: only parity ran (unset), so nothing failed
    assert [d["applies"] for d in data] == [None, None]


def test_dirty_worktree_rev(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = git(repo, "rev-parse", "HEAD").decode().strip()
    _, data = promote_json(capsys, "ampere", "--repo", str(repo))
    assert data["rev"] == head
    (repo / "patches/arch/defconfig.patch").write_bytes(b"changed\n")
    _, data = promote_json(capsys, "ampere", "--repo", str(repo))
    assert data["rev"] == head + "+dirty"


# --- output errors (defect 7): a clear message, exit 2 or 3, nothing left behind ---------------

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_output_into_a_missing_folder(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = ka(capsys, "promote", "ampere", "--repo", str(repo), "-o", str(tmp_path / "none/x.patch"))
    assert (code, out) == (2, "")
    assert err == f"ka: error: -o {tmp_path}/none/x.patch: the folder {tmp_path}/none does not exist\n"
    assert not (tmp_path / "none").exists()


def test_output_into_a_read_only_folder(repo: Path, tmpfs: Callable[..., Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmpfs(readonly=True)
    code, out, err = ka(capsys, "promote", "ampere", "--repo", str(repo), "-o", str(folder / "x.patch"))
    assert (code, out) == (2, "")
    assert err.startswith(f"ka: error: cannot write {folder}/x.patch: Read-only file system")
    assert "Traceback" not in err and _leftovers(folder) == []


def test_output_on_a_full_disk(repo: Path, tmpfs: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmpfs(size="8k")
    code, out, err = ka(capsys, "promote", "--all", "--repo", str(repo), "--out-dir", str(folder))
    assert code == 3
    assert "hosts" not in out  # the progress lines were printed, the summary was not
    assert "ka: error: cannot write " in err and "No space left on device" in err
    assert "free some space" in err
    assert [p for p in _leftovers(folder) if p.endswith((".tmp", ".patch", ".json", ".b2sum"))] == []


def test_outputs_land_together_or_not_at_all(repo: Path, tmpfs: Callable[..., Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmpfs(size="20k")  # five pages: room for the first host's three files, not for the second's
    assert ka(capsys, "promote", "--all", "--repo", str(repo), "--out-dir", str(folder))[0] == 3
    assert [p for p in _leftovers(folder) if "." in p] == []


# --- parity.canonical must be content (defect 8) -----------------------------------------------

@pytest.mark.parametrize(("canonical", "fragment"), [
    (".git/config", "nothing in .git"),
    ("ref/../.git/config", "nothing in .git"),
    ("ref/.GIT/config", "nothing in .git"),
])
def test_canonical_inside_git_is_refused(make_repo: MakeRepo, small_kernel: SmallKernel,
                                         capsys: pytest.CaptureFixture[str], canonical: str, fragment: str) -> None:
    root = _with_parity(make_repo, small_kernel, f"parity:\n  canonical: {canonical}\n", {})
    git(root, "config", "remote.origin.url", "https://bot:s3cr3t-token@forge.example/fleet.git")
    code, out, err = ka(capsys, "promote", "ampere", "--repo", str(root))
    assert (code, out) == (2, "")
    assert fragment in err and "s3cr3t" not in err


def test_canonical_symlink_into_git_is_refused(make_repo: MakeRepo, small_kernel: SmallKernel,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = _with_parity(make_repo, small_kernel, "parity:\n  canonical: ref/link\n", {})
    (root / "ref").mkdir()
    (root / "ref/link").symlink_to("../.git/config")
    git(root, "add", "ref/link")
    git(root, "commit", "-qm", "link")
    git(root, "config", "remote.origin.url", "https://bot:s3cr3t-token@forge.example/fleet.git")
    code, out, err = ka(capsys, "promote", "ampere", "--repo", str(root))
    assert (code, out) == (2, "")
    assert "s3cr3t" not in err + out


def test_canonical_must_be_tracked_in_a_git_work_tree(make_repo: MakeRepo, small_kernel: SmallKernel,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    whole = _cat(fleet_files(small_kernel))
    root = _with_parity(make_repo, small_kernel, "parity:\n  canonical: ref/c.patch\n", {})
    (root / "ref").mkdir()
    (root / "ref/c.patch").write_bytes(whole)
    code, _, err = ka(capsys, "promote", "ampere", "--repo", str(root))
    assert code == 2
    assert "parity.canonical: ref/c.patch is not tracked by git" in err
    git(root, "add", "ref/c.patch")
    assert ka(capsys, "promote", "ampere", "--repo", str(root))[0] == 0  # staged is tracked: the user's intent


# --- size caps (defect 6) ------------------------------------------------------------------

def test_a_patch_over_the_cap_is_named(make_repo: MakeRepo, small_kernel: SmallKernel,
                                       capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    files = {**fleet_files(small_kernel), "patches/soc/base/1-sdio.patch": b"x" * (2 * 1024 * 1024 + 1)}
    root = make_repo({"ampere": AMPERE}, files)
    monkeypatch.setenv("KA_MAX_PATCH", "2M")
    for rev in ([], ["--rev", "HEAD", "--out-dir", str(root / "o")]):
        code, out, err = ka(capsys, "promote", "ampere", "--repo", str(root), *rev)
        assert (code, out) == (2, "")
        assert "patches/soc/base/1-sdio.patch: is 2.0 MiB; a patch or series file may hold at most 2 MiB " \
               "(raise it with KA_MAX_PATCH)" in err


def test_a_cumulative_patch_over_the_cap_is_named(repo: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KA_MAX_CUMULATIVE", "1K")
    code, out, err = ka(capsys, "promote", "ampere", "--repo", str(repo))
    assert (code, out) == (2, "")
    assert "fleet/ampere.yaml: the cumulative patch is " in err and "at most 1 KiB" in err


def test_a_bad_size_setting_is_named(repo: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KA_MAX_PATCH", "lots")
    expected = "ka: error: KA_MAX_PATCH='lots': not a size (bytes, or a number with K, M or G)\n"
    assert ka(capsys, "promote", "ampere", "--repo", str(repo))[1:] == ("", expected)


def test_canonical_tracked_symlink_to_an_untracked_file_is_refused(make_repo: MakeRepo, small_kernel: SmallKernel,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _with_parity(make_repo, small_kernel, "parity:\n  canonical: ref.patch\n", {})
    (root / ".gitignore").write_text(".env\n")
    (root / ".env").write_text("TOKEN=s3cr3t\n")
    (root / "ref.patch").symlink_to(".env")
    git(root, "add", ".gitignore", "ref.patch")
    git(root, "commit", "-qm", "a tracked link to an ignored file")
    code, out, err = ka(capsys, "promote", "ampere", "--repo", str(root))
    assert (code, out) == (2, "")
    assert "not tracked by git" in err and "s3cr3t" not in err


def test_the_cli_starts_without_the_terminal_and_network_libraries() -> None:
    """ka-promote's start-up is most of its time on a large series (tests/bench/bench_promote.py): rich is
    imported only for a terminal, tarfile only by ``baseline import``, paramiko only by a verb that connects."""
    code = "import sys, ka.cli.main; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(res.stdout.split())
    assert "ka" in loaded
    assert loaded.isdisjoint({"rich", "tarfile", "paramiko", "jinja2", "requests"})
