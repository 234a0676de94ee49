#!/usr/bin/env python3
"""Benchmark: webhook intake while slow clients hang on, and while clients poll the job list.

The bot as it runs (gthread workers, a body deadline) against the same bot on sync workers
(how it ran before the hardening issue), in one run.  Scenario "slow": 50 connections send
their headers and one byte of body, then nothing; meanwhile 40 real deliveries are sent one
after the other with Forgejo's 5 s timeout.  Scenario "pollers": 4 clients fetch
``/jobs?format=json`` in a loop over a database of 2,000 jobs while 200 deliveries are sent.
Prints delivery latency (p50, p99) and how many deliveries Forgejo would have given up on.

    python tests/bench/bench_slow_clients.py [--slow 50] [--deliveries 40]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the project root, for tests.support and ka

from bot.store import Store  # noqa: E402
from tests.support.botkit import REPO, SECRET, delivery, free_port, push_payload  # noqa: E402

FORGEJO_TIMEOUT = 5.0


def start(state: Path, threads: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "KA_WEBHOOK_SECRET": SECRET, "KA_REPO": REPO, "KA_STATE_DIR": str(state),
           "KA_BODY_TIMEOUT": "10"}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--no-worker", "--port", str(port),
                             "--threads", str(threads)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc, port
        except requests.RequestException:
            time.sleep(0.05)
    sys.exit("the bot did not start")


def deliver(port: int, count: int, offset: int) -> tuple[list[float], int]:
    times, lost = [], 0
    for n in range(count):
        d = delivery("push-forgejo-12", push_payload(f"{offset + n + 1:040x}", "/nonexistent"))
        t = time.perf_counter()
        try:
            requests.post(f"http://127.0.0.1:{port}/webhook", data=d.body, headers=d.headers,
                          timeout=FORGEJO_TIMEOUT)
            times.append(time.perf_counter() - t)
        except requests.RequestException:
            lost += 1
    return times, lost


def slow_clients(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-Forgejo-Event: push\r\nContent-Length: 4096\r\n\r\n{")
        socks.append(s)
    return socks


def pollers(port: int, count: int, stop: threading.Event) -> list[threading.Thread]:
    def poll() -> None:
        while not stop.is_set():
            with contextlib.suppress(requests.RequestException):
                requests.get(f"http://127.0.0.1:{port}/jobs?format=json", timeout=30)
    threads = [threading.Thread(target=poll, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    return threads


def line(name: str, times: list[float], lost: int) -> str:
    if not times:
        return f"{name:34} every delivery lost ({lost})"
    q = statistics.quantiles(times, n=100) if len(times) > 1 else [times[0]] * 99
    return f"{name:34} p50 {statistics.median(times) * 1000:8.1f} ms   p99 {q[98] * 1000:8.1f} ms   lost {lost}"


def run(kind: str, threads: int, args: argparse.Namespace, tmp: Path) -> str:
    state = tmp / f"{kind}-{threads}"
    if kind == "pollers":
        store = Store(state / "ka-bot.db")
        with store.tx() as db:
            db.executemany("INSERT INTO jobs (verb, state, created_at, result) VALUES ('parity', 'succeeded', 0, ?)",
                           [('{"note": "' + "x" * 2000 + '"}',) for _ in range(2000)])
    proc, port = start(state, threads)
    stop = threading.Event()
    try:
        socks = slow_clients(port, args.slow) if kind == "slow" else []
        if kind == "pollers":
            pollers(port, 4, stop)
        time.sleep(0.5)
        times, lost = deliver(port, args.deliveries if kind == "slow" else 200, 10**6 * threads)
        for s in socks:
            s.close()
    finally:
        stop.set()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    model = "gthread, 32 threads (now)" if threads > 1 else "sync (before)"
    return line(f"{kind}: {model}", times, lost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--deliveries", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ka-bench-slow-") as tmp:
        print(f"{args.slow} slow clients; {args.deliveries} deliveries, each given Forgejo's {FORGEJO_TIMEOUT:g}s")
        for kind in ("slow", "pollers"):
            for threads in (32, 1):
                print(run(kind, threads, args, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
