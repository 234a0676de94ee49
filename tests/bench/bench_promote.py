#!/usr/bin/env python3
"""Benchmark: promote with the baseline check against the naive way, in one run.

Ours: ``ka-promote HOST --kernel-tree TREE`` (a temporary index holding only
the touched paths, ``git apply --cached --check``).  Naive: ``git worktree
add`` at the baseline (a full checkout), then ``git apply --check`` there.
Both check the same series (134 patches, 3.7 MB, made from the tree's own files:
see make_series) on a real Linux 6.12 tree imported from Debian's
linux-source-6.12.  Ours is the whole command, Python's start-up included, as a
user runs it (compiled modules kept).  Prints both times and the ratio; the goal
for ours is under 0.25 s.

    python tests/bench/bench_promote.py [--tree PATH] [--runs N]
"""

from __future__ import annotations

import argparse
import difflib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
BIN = Path(sys.executable).parent


def sh(*argv: str | Path, cwd: Path | None = None) -> bytes:
    return subprocess.run([str(a) for a in argv], cwd=cwd, check=True, capture_output=True).stdout


def ensure_tree(tree: Path) -> str:
    """Import the tarball once; return the baseline tag."""
    if not tree.exists():
        print(f"importing {TARBALL} into {tree} …", file=sys.stderr)
        sh(BIN / "ka", "baseline", "import", TARBALL, "--tree", tree)
    return sh("git", "-C", tree, "tag", "--list", "v6.12*").decode().split()[-1]


def _diff(path: str, old: str, new: str) -> str:
    body = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                f"a/{path}", f"b/{path}", n=3)
    return f"diff --git a/{path} b/{path}\n" + "".join(body)


def _new_file(path: str, text: str) -> str:
    lines = text.splitlines(keepends=True)
    body = "".join("+" + ln if ln.endswith("\n") else "+" + ln + "\n\\ No newline at end of file\n" for ln in lines)
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n{body}")


class _Series:
    """Numbered patch files in a folder, each a mail with one or more diffs."""

    def __init__(self, out: Path) -> None:
        self.out, self.count = out, 0
        out.mkdir(parents=True)

    def add(self, kind: str, subject: str, *diffs: str) -> None:
        self.count += 1
        text = f"Subject: [PATCH] {subject}\n\n---\n" + "".join(diffs)
        (self.out / f"{self.count:04d}-{kind}.patch").write_text(text)


def _names(tree: Path, ref: str, folder: str, suffix: str) -> list[str]:
    out = sh("git", "-C", tree, "ls-tree", "--name-only", f"{ref}:{folder}").decode().split()
    return [f"{folder}{n}" for n in sorted(out) if n.endswith(suffix)]


def _large_sources(tree: Path, ref: str, folder: str, total: int) -> list[str]:
    """C files of ``folder`` from 100 to 200 kB, largest first, until ``total`` bytes."""
    rows = sh("git", "-C", tree, "ls-tree", "-r", "-l", ref, folder).decode().splitlines()
    sized = sorted(((int(r.split()[3]), r.split("\t", 1)[1]) for r in rows if r.endswith(".c")), reverse=True)
    picked: list[str] = []
    for size, path in sized:
        if 100_000 <= size <= 200_000 and total > 0:
            picked.append(path)
            total -= size
    return picked


def make_series(tree: Path, ref: str, out: Path) -> int:
    """134 patches, about 3.6 MB, shaped like a board-support series for Rockchip boards (Armbian's
    rockchip64-6.12 holds 134 files): new device trees, each listed in the stacked dts Makefile; new
    drivers; one-line fixes to 70 distinct files; and changes stacked on one defconfig. Every patch is
    made from the real tree's files, so the series applies on the baseline."""
    show = lambda path: sh("git", "-C", tree, "show", f"{ref}:{path}").decode("utf-8", "surrogateescape")  # noqa: E731
    series = _Series(out)
    dts_dir = "arch/arm64/boot/dts/rockchip/"
    makefile = show(dts_dir + "Makefile")
    for name in [n for n in _names(tree, ref, dts_dir, ".dts") if "/rk35" in n][:40]:
        new = name.replace(".dts", "-fleet.dts")
        line = f"dtb-$(CONFIG_ARCH_ROCKCHIP) += {new.rsplit('/', 1)[1][:-4]}.dtb\n"
        grown = makefile + line
        series.add("dts", f"arm64: dts: rockchip: add {new}", _new_file(new, show(name)),
                   _diff(dts_dir + "Makefile", makefile, grown))
        makefile = grown
    drivers = _large_sources(tree, ref, "drivers/net/ethernet/", 3_100_000)
    for i, name in enumerate(drivers):
        series.add("driver", f"staging: fleet: driver {i}", _new_file(f"drivers/staging/fleet/d{i:02d}.c", show(name)))
    fixes = [n for folder in ("drivers/clk/rockchip/", "drivers/phy/rockchip/", "drivers/pinctrl/",
                              "drivers/gpu/drm/rockchip/", "drivers/mmc/host/", "drivers/pci/controller/dwc/")
             for n in _names(tree, ref, folder, ".c")][:70]
    for path in fixes:
        old = show(path)
        lines = old.splitlines(keepends=True)
        new = "".join([*lines[:2], "/* fleet: checked by kernel-agent */\n", *lines[2:]])
        series.add("fix", f"{path}: fleet note", _diff(path, old, new))
    conf = "arch/arm64/configs/defconfig"
    text = show(conf)
    for i in range(134 - series.count):
        lines = text.splitlines(keepends=True)
        new = "".join([*lines[:100 + 40 * i], f"# fleet option {i}\n", *lines[100 + 40 * i:]])
        series.add("defconfig", f"defconfig {i}", _diff(conf, text, new))
        text = new
    return series.count


def make_repo(root: Path, tree: Path, ref: str) -> int:
    count = make_series(tree, ref, root / "patches/driver/bench")
    (root / "fleet").mkdir(parents=True)
    (root / "fleet/bench.yaml").write_text(
        f"description: benchmark host\nbaseline:\n  ref: {ref}\napply_order: [driver]\nincludes:\n  - driver/bench\n")
    return count


def user_env(work: Path) -> dict[str, str]:
    """The environment of a user's shell: Python keeps its compiled modules (here in ``work``, not the
    checkout), even where PYTHONDONTWRITEBYTECODE is set for this process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(work / "pycache")}


def time_ours(repo: Path, tree: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    res = subprocess.run([BIN / "ka-promote", "bench", "--kernel-tree", tree], cwd=repo, capture_output=True, text=True,
                         env=env)
    took = time.perf_counter() - start
    if res.returncode != 0 or "applies" not in res.stdout:
        sys.exit(f"ka-promote failed:\n{res.stdout}{res.stderr}")
    return took


def time_naive(repo: Path, tree: Path, ref: str, work: Path) -> float:
    patch = repo / "out/bench/bench-cumulative.patch"
    wt = work / "wt"
    start = time.perf_counter()
    sh("git", "-C", tree, "worktree", "add", "--quiet", "--detach", wt, ref)
    sh("git", "-C", wt, "apply", "--check", patch)
    took = time.perf_counter() - start
    sh("git", "-C", tree, "worktree", "remove", "--force", wt)
    return took


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())
    git = sh("git", "--version").decode().strip()
    return f"{os.cpu_count()} cores, {cpu}, {git}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="kernel tree (imported from the tarball when missing)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ka-bench-") as tmp:
        work = Path(tmp)
        tree = args.tree or work / "linux.git"
        ref = ensure_tree(tree)
        count = make_repo(work / "repo", tree, ref)
        env = user_env(work)
        time_ours(work / "repo", tree, env)  # the first run compiles the modules, as a user's first run does
        ours = [time_ours(work / "repo", tree, env) for _ in range(args.runs)]
        naive = [time_naive(work / "repo", tree, ref, work) for _ in range(max(1, args.runs // 2))]
        ours_m, naive_m = statistics.median(ours), statistics.median(naive)
        print(f"machine: {machine()}")
        files = sh("git", "-C", tree, "ls-tree", "-r", "--name-only", "-z", ref).count(b"\0")
        size = sum(f.stat().st_size for f in (work / "repo/patches").rglob("*.patch"))
        print(f"series: {count} patches, {size / 1e6:.1f} MB, on {ref} ({files} files in the tree)")
        print(f"ka-promote with baseline check (median of {len(ours)}): {ours_m:.3f} s")
        print(f"naive: git worktree add + git apply --check (median of {len(naive)}): {naive_m:.3f} s")
        print(f"ratio: {naive_m / ours_m:.0f}x faster")
        if args.tree is None:
            shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
