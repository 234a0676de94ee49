#!/usr/bin/env python3
"""Benchmark: a parity job over a fleet of 10,000 hosts, and how its results are written.

Part 1 runs one real parity job in process (fetch from a bare repository, 10,000 manifests
read from git objects, promote and baseline check on the small generated kernel tree, a
result row and a commit status per host in the outbox, local mode) and prints the time,
the bytes written and the database size.  Part 2 sets ours (one row per host, one commit)
against the way results were written before (the job's whole result document rewritten
after each host) for growing fleets, in the same run, and prints the ratio.

    python tests/bench/bench_hosts.py [--hosts 10000] [--naive 500,1000,2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the project root, for tests.support and ka
from bot import forge  # noqa: E402
from bot.config import Config  # noqa: E402
from bot.jobs.worker import execute  # noqa: E402
from bot.services import make_services  # noqa: E402
from bot.store import HostResult, Store  # noqa: E402
from tests.support.botkit import fleet_forge_repo  # noqa: E402
from tests.support.db import sql  # noqa: E402
from tests.support.fleet import fleet_files, manifest  # noqa: E402
from tests.support.kernel import build_small_kernel, git  # noqa: E402

INCLUDES = ["arch/defconfig", "soc/base", "driver/bes2600", "board/pinetab2"]


def wchar() -> int:
    return int(next(ln for ln in Path("/proc/self/io").read_text().splitlines() if ln.startswith("wchar")).split()[1])


def whole_job(tmp: Path, hosts: int) -> None:
    kernel = build_small_kernel(tmp / "kernel")
    work, bare = fleet_forge_repo(tmp, {f"h{n:05d}": manifest(INCLUDES) for n in range(hosts)}, fleet_files(kernel))
    sha = git(work, "rev-parse", "HEAD").decode().strip()
    services = make_services(Config(state_dir=tmp / "state", repo_url=str(bare), kernel_tree=kernel.bare,
                                    insecure=True, check_workers=2))
    with services.store.tx() as db:
        job_id = int(db.execute("INSERT INTO jobs (verb, commit_sha, ref, requester, state, created_at) "
                                "VALUES ('parity', ?, 'refs/heads/main', '{}', 'queued', ?)",
                                (sha, time.time())).lastrowid or 0)
    written, start = wchar(), time.perf_counter()
    job = execute(services, job_id)
    seconds, written = time.perf_counter() - start, wchar() - written
    assert job is not None and job.state == "succeeded", job
    counts = services.store.host_counts(job_id)
    statuses = sql(services.store, "SELECT COUNT(*) FROM outbox")[0][0]
    size = sum(p.stat().st_size for p in (tmp / "state").glob("ka-bot.db*"))
    print(f"parity job, {hosts} hosts: {seconds:.1f} s ({seconds / hosts * 1000:.2f} ms a host), "
          f"{written / 2**20:.0f} MiB written, database {size / 2**20:.0f} MiB; {counts}; {statuses} statuses queued")


DETAIL = {"b2sum": "f" * 128, "baseline": "v6.12.117", "applies": True, "parity": "match",
          "series": [{"include": f"soc/s{n}", "patches": [f"patches/soc/s{n}/{m}.patch" for m in range(4)]}
                     for n in range(4)]}
WRITE = forge.status("o/r", "a" * 40, "success", "ka/parity/h", "ok", "http://x")


def ours(store: Store, job: int, hosts: int) -> None:
    names = [f"h{n:05d}" for n in range(hosts)]
    store.set_hosts(job, names, [])
    for name in names:
        store.record_host(job, HostResult(name, "success", "ok", DETAIL), WRITE)


def naive(store: Store, job: int, hosts: int) -> None:
    results: dict[str, object] = {}
    for n in range(hosts):
        results[f"h{n:05d}"] = {"state": "success", "description": "ok", "detail": DETAIL}
        with store.tx() as db:
            db.execute("UPDATE jobs SET result = ? WHERE id = ?", (json.dumps(results, sort_keys=True), job))
        with store.tx() as db:
            db.execute("INSERT INTO outbox (job_id, method, path, body, summary, state, next_at, created_at) "
                       "VALUES (?, 'POST', '/x', '{}', '', 'pending', 0, 0)", (job,))


def measure(tmp: Path, how: str, hosts: int) -> tuple[float, int]:
    store = Store(tmp / f"{how}-{hosts}.db")
    with store.tx() as db:
        job = int(db.execute("INSERT INTO jobs (verb, state, created_at) VALUES ('parity', 'running', 0)")
                  .lastrowid or 0)
    written, start = wchar(), time.perf_counter()
    (ours if how == "ours" else naive)(store, job, hosts)
    return time.perf_counter() - start, wchar() - written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--naive", default="500,1000,2000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ka-bench-hosts-") as tmp:
        whole_job(Path(tmp), args.hosts)
        print("result writes: hosts, ours (rows), before (whole document per host), ratio")
        for hosts in [int(x) for x in args.naive.split(",")] + [args.hosts]:
            t1, w1 = measure(Path(tmp), "ours", hosts)
            if hosts > max(int(x) for x in args.naive.split(",")):
                print(f"  {hosts:6d}: {t1:7.2f} s {w1 / 2**20:8.1f} MiB | before: not run (quadratic)")
                continue
            t2, w2 = measure(Path(tmp), "naive", hosts)
            print(f"  {hosts:6d}: {t1:7.2f} s {w1 / 2**20:8.1f} MiB | {t2:7.2f} s {w2 / 2**20:8.1f} MiB | "
                  f"{t2 / t1:5.1f}x time, {w2 / w1:5.1f}x bytes")


if __name__ == "__main__":
    main()
