#!/usr/bin/env python3
"""Benchmark: three hosts built on two build hosts at once, against one after another, in one run.

Real parts: sshd build hosts boltzmann and fermi on loopback (as the tests make them; needs root and the
kabuild user), Debian's makepkg, gpg, and the small test kernel as the source.  Ours is ``ka-build ampere
volta tesla`` (each build on the first build host with a free slot, max_builds 1 each); the naive way is
``ka-build ampere``, then ``volta``, then ``tesla``.  Both are whole commands, unsigned (--no-publish), on
the same fleet; every run starts from clean build folders.

Both build hosts are this machine here, so two builds at once share its cores: the ratio is what
overlapping two builds' upload, makepkg, fetch and check gains on one machine, a floor for two machines.

    python tests/bench/bench_many.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the project root, for tests.support and ka
from tests.support.buildlab import BuildLab, bench_lab  # noqa: E402
from tests.support.kernel import write_fleet  # noqa: E402

HOSTS = ("ampere", "volta", "tesla")


def timed(lab: BuildLab, repo: Path, *hosts: str) -> float:
    start = time.perf_counter()
    res = lab.ka("build", *hosts, "--repo", str(repo), "--kernel-tree", str(lab.kernel.bare), "--no-publish",
                 timeout=1800)
    took = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"ka-build {' '.join(hosts)} failed:\n{res.stdout}{res.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with bench_lab("ka-bench-many-") as (lab, work):
        hosts, files = lab.parts("bench")
        repo = write_fleet(work / "fleet", {h: hosts["ampere"] for h in HOSTS}, files)
        timed(lab, repo, "ampere")  # the kernel source mirror is cloned once, before either is timed
        ours, naive = [], []
        for _ in range(args.runs):
            ours.append(timed(lab, repo, *HOSTS))
            naive.append(sum(timed(lab, repo, h) for h in HOSTS))
    mo, mn = statistics.median(ours), statistics.median(naive)
    print(f"machine: {os.cpu_count()} cores; build hosts boltzmann and fermi: sshd on this machine, max_builds 1")
    print(f"ka-build {' '.join(HOSTS)} (at once, median of {len(ours)}): {mo:.2f} s  "
          f"({', '.join(f'{t:.2f}' for t in ours)})")
    print(f"one after another (median of {len(naive)}): {mn:.2f} s  ({', '.join(f'{t:.2f}' for t in naive)})")
    print(f"ratio: {mn / mo:.2f}x faster")


if __name__ == "__main__":
    main()
