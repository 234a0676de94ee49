#!/usr/bin/env python3
"""Benchmark: one push to a fleet of 10 hosts, until every final commit status has reached the forge.

Real parts throughout: ``ka-bot serve`` (gunicorn + worker), the fake Forgejo on loopback,
a bare git repository to fetch from, and the small generated kernel tree for the baseline
check.  Each run pushes a new commit; the time runs from the POST of the delivery to the
arrival of the tenth final status at the fake Forgejo.

    python tests/bench/bench_e2e.py [--runs 5] [--hosts 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the project root, for tests.support and ka
from tests.support.botkit import REPO, SECRET, BotProcess, commit_and_push, delivery, fleet_forge_repo, push_payload  # noqa: E402
from tests.support.fakeforgejo import FakeForgejo  # noqa: E402
from tests.support.fleet import fleet_files, manifest  # noqa: E402
from tests.support.kernel import build_small_kernel  # noqa: E402

INCLUDES = ["arch/defconfig", "soc/base", "driver/bes2600", "board/pinetab2"]


def one_push(bot: BotProcess, fake: FakeForgejo, work: Path, bare: Path, hosts: int, n: int) -> float:
    sha = commit_and_push(work, bare, f"change {n}")
    d = delivery("push-forgejo-12", push_payload(sha, str(bare)))
    start = time.perf_counter()
    assert bot.send(d).status_code == 202
    while True:
        final = [s for s in fake.latest(sha).values() if s["state"] != "pending"]
        if len(final) == hosts:
            return time.perf_counter() - start
        if time.perf_counter() - start > 60:
            sys.exit(f"timed out: {len(final)} of {hosts} final statuses")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ka-bench-e2e-") as tmp:
        root = Path(tmp)
        kernel = build_small_kernel(root / "kernel")
        hosts = {f"host{n:02d}": manifest(INCLUDES) for n in range(args.hosts)}
        work, bare = fleet_forge_repo(root, hosts, fleet_files(kernel))
        fake = FakeForgejo(repo=REPO).start()
        bot = BotProcess(root / "state", {"KA_FORGEJO_URL": fake.url, "KA_FORGEJO_TOKEN": fake.token,
                                          "KA_WEBHOOK_SECRET": SECRET, "KA_REPO": REPO,
                                          "KA_KERNEL_TREE": str(kernel.bare), "KA_REPO_URL": str(bare)}).start()
        try:
            times = [one_push(bot, fake, work, bare, args.hosts, n) for n in range(args.runs)]
        finally:
            bot.stop()
            fake.stop()
        assert not fake.violations, fake.violations
    print(f"push to {args.hosts} hosts (4 series, 7 patches each, baseline check on) → {args.hosts} final statuses")
    print(f"runs: {', '.join(f'{t:.2f}' for t in times)} s")
    print(f"median {statistics.median(times):.2f} s, worst {max(times):.2f} s (first run includes the mirror clone)")


if __name__ == "__main__":
    main()
