#!/usr/bin/env python3
"""Benchmark: ka-build's own overhead against a plain makepkg run of the same PKGBUILD, in one run.

Real parts: sshd build and repository hosts on loopback (as the tests make them; needs root and
the kabuild user), Debian's makepkg, gpg, repo-add, and the small test kernel as the source.
"ka-build" is the whole command (promote, render, connect, upload, makepkg, fetch, check, sign,
publish, Python start-up included); "plain" is ``ssh build-host 'cd folder && makepkg …'`` on the
same rendered folder with the same environment.  The difference is ka-build's overhead.

    python tests/bench/bench_build.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the project root, for tests.support and ka
from tests.support.buildlab import bench_lab  # noqa: E402

PLAIN = "cd {folder} && set -a && . ./ka-build.env && set +a && makepkg --nodeps --noconfirm --cleanbuild --force"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with bench_lab("ka-bench-build-") as (build, work):
        repo = build.fleet(work / "fleet", "bench")
        ours, phases = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            code, data, err = build.build(repo)
            ours.append(time.perf_counter() - start)
            assert code == 0, err
            phases.append(data["phases"])
        rendered = work / "rendered"
        assert build.ka("build", "ampere", "--repo", str(repo), "--render-only", str(rendered)).returncode == 0
        folder = build.ssh.user_folder("bench", "plain", (rendered / "ka-build.folder").read_text().strip())
        subprocess.run(["cp", "-a", f"{rendered}/.", str(folder)], check=True)
        subprocess.run(["chown", "-R", "kabuild", str(folder)], check=True)
        plain = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(["ssh", "-F", str(build.ssh.config), "boltzmann", PLAIN.format(folder=folder)],
                           check=True, capture_output=True)
            plain.append(time.perf_counter() - start)
    report(ours, plain, phases)


def report(ours: list[float], plain: list[float], phases: list[dict[str, float]]) -> None:
    mo, mp = statistics.median(ours), statistics.median(plain)
    print(f"runs: {len(ours)}; the same PKGBUILD (small test kernel), build host boltzmann over loopback ssh")
    for name, median, times in (("ka-build (whole command: promote … publish)", mo, ours),
                                 ("plain: ssh + makepkg of the rendered folder", mp, plain)):
        print(f"{name:46} median {median:6.2f} s   ({', '.join(f'{t:.2f}' for t in times)})")
    print(f"overhead: {mo - mp:.2f} s (ratio {mo / mp:.2f}); target < 2 s")
    keys = list(phases[0])
    med = {k: statistics.median(p[k] for p in phases) for k in keys}
    print("ka-build's phases (median): " + ", ".join(f"{k} {v:.2f}s" for k, v in med.items()))
    print(json.dumps({"ka_build": mo, "plain": mp, "overhead": mo - mp, "phases": med}))


if __name__ == "__main__":
    main()
