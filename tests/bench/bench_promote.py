#!/usr/bin/env python3
"""Benchmark: promote with the baseline check against the naive way, in one run.

Ours: ``ka-promote HOST --kernel-tree TREE`` (a temporary index holding only
the touched paths, ``git apply --cached --check``).  Naive: ``git worktree
add`` at the baseline (a full checkout), then ``git apply --check`` there.
Both check the same 40-patch series on a real Linux 6.12 tree imported from
Debian's linux-source-6.12.  Prints both times and the ratio.

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


def make_series(tree: Path, ref: str, out: Path, count: int = 40) -> int:
    """30 patches to distinct device trees, then 10 stacked on one defconfig."""
    names = sh("git", "-C", tree, "ls-tree", "--name-only", f"{ref}:arch/arm64/boot/dts/rockchip/").decode().split()
    dts = [f"arch/arm64/boot/dts/rockchip/{n}" for n in names if n.endswith(".dts")][: count - 10]
    out.mkdir(parents=True)
    n = 0
    for path in dts:
        old = sh("git", "-C", tree, "show", f"{ref}:{path}").decode()
        lines = old.splitlines(keepends=True)
        new = "".join([*lines[:3], "/* fleet: checked by kernel-agent */\n", *lines[3:]])
        n += 1
        (out / f"{n:04d}-dts.patch").write_text(f"Subject: [PATCH] {path}\n\n---\n" + _diff(path, old, new))
    conf = "arch/arm64/configs/defconfig"
    text = sh("git", "-C", tree, "show", f"{ref}:{conf}").decode()
    for i in range(count - len(dts)):
        lines = text.splitlines(keepends=True)
        at = 100 + 150 * i
        new = "".join([*lines[:at], f"# fleet option {i}\n", *lines[at:]])
        n += 1
        header = f"Subject: [PATCH] defconfig {i}\n\n---\n"
        (out / f"{n:04d}-defconfig.patch").write_text(header + _diff(conf, text, new))
        text = new
    return n


def make_repo(root: Path, tree: Path, ref: str) -> int:
    count = make_series(tree, ref, root / "patches/driver/bench")
    (root / "fleet").mkdir(parents=True)
    (root / "fleet/bench.yaml").write_text(
        f"description: benchmark host\nbaseline:\n  ref: {ref}\napply_order: [driver]\nincludes:\n  - driver/bench\n")
    return count


def time_ours(repo: Path, tree: Path) -> float:
    start = time.perf_counter()
    res = subprocess.run([BIN / "ka-promote", "bench", "--kernel-tree", tree], cwd=repo, capture_output=True, text=True)
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
        ours = [time_ours(work / "repo", tree) for _ in range(args.runs)]
        naive = [time_naive(work / "repo", tree, ref, work) for _ in range(max(1, args.runs // 2))]
        ours_m, naive_m = statistics.median(ours), statistics.median(naive)
        print(f"machine: {machine()}")
        files = sh("git", "-C", tree, "ls-tree", "-r", "--name-only", "-z", ref).count(b"\0")
        print(f"series: {count} patches on {ref} ({files} files in the tree)")
        print(f"ka-promote with baseline check (median of {len(ours)}): {ours_m:.3f} s")
        print(f"naive: git worktree add + git apply --check (median of {len(naive)}): {naive_m:.3f} s")
        print(f"ratio: {naive_m / ours_m:.0f}x faster")
        if args.tree is None:
            shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
