#!/usr/bin/env python3
"""Benchmark: webhook intake of the bot against a bare Flask view, under the same gunicorn, in one run.

Both run under gunicorn (the bot's settings: gthread workers, 32 threads each, one connection
per thread, no keep-alive; the same count; no access log) and get the same
load from wrk: signed Forgejo push deliveries, each with its own delivery id and commit,
so the bot really verifies, parses, stores and queues every one (its job worker is left
off, so only intake is measured).  Prints requests per second, p99 latency and the ratio.

    python tests/bench/bench_intake.py [--seconds 10] [--connections 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the project root, for tests.support and ka
from bot.events.delivery import sign  # noqa: E402
from tests.support.botkit import REPO, SECRET, free_port, sample  # noqa: E402

LUA = r"""
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local lines = {}
local n = 0
init = function(args)
  for line in io.lines(args[1]) do
    n = n + 1
    lines[n] = line
  end
  i = tid - 2  -- thread 1 sends odd lines, thread 2 even ones: no delivery is sent twice
end
request = function()
  i = (i + 2) % n
  local sig, id, body = lines[i + 1]:match("([^\t]*)\t([^\t]*)\t(.*)")
  return wrk.format("POST", "/webhook", {
    ["Content-Type"] = "application/json", ["X-Forgejo-Event"] = "push", ["X-Forgejo-Event-Type"] = "push",
    ["X-Forgejo-Delivery"] = id, ["X-Forgejo-Signature"] = sig, ["X-Hub-Signature-256"] = "sha256=" .. sig,
  }, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n", summary.requests / (summary.duration / 1e6),
           latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests,
           summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
           + summary.errors.timeout))
end
"""

BARE = '''
import hashlib
from flask import Flask
app = Flask(__name__)

@app.post("/webhook")
def webhook():
    return "", 200
'''


def deliveries(path: Path, count: int) -> None:
    """``count`` distinct signed push deliveries, one per line: signature, delivery id, body."""
    base = sample("push-forgejo-12")["payload"]
    base["repository"].update({"full_name": REPO, "clone_url": "/nonexistent"})
    with path.open("w") as fh:
        for n in range(count):
            base["after"] = f"{n+1:040x}"
            body = json.dumps(base, separators=(",", ":"))
            sig = sign(SECRET.encode(), body.encode())["X-Forgejo-Signature"]
            fh.write(f"{sig}\t{n:08d}-bench\t{body}\n")


def wait_up(url: str) -> None:
    for _ in range(200):
        try:
            requests.get(url, timeout=0.5)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    sys.exit(f"{url} did not come up")


def wrk(port: int, data: Path, script: Path, seconds: int, connections: int) -> tuple[float, float, float, int, int]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}/webhook", "--", str(data)], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"RESULT (\S+) (\S+) (\S+) (\d+) (\d+)", out)
    assert m, out
    rps, p50, p99 = (float(x) for x in m.groups()[:3])
    return rps, p50, p99, int(m.group(4)), int(m.group(5))


def run_server(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="ka-bench-intake-") as tmp:
        work = Path(tmp)
        data, script = work / "deliveries.tsv", work / "bench.lua"
        deliveries(data, 40000)
        script.write_text(LUA)
        (work / "bare.py").write_text(BARE)
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        common = ["-w", str(args.workers), "-k", "gthread", "--threads", str(args.threads),
                  "--worker-connections", str(args.threads),
                  "--keep-alive", "0", "--no-control-socket"]
        port = free_port()
        bare = run_server([gunicorn, *common, "-b", f"127.0.0.1:{port}", "bare:app"], {}, work)
        wait_up(f"http://127.0.0.1:{port}/")
        bare_r = wrk(port, data, script, args.seconds, args.connections)
        stop(bare)
        port = free_port()
        env = {"KA_WEBHOOK_SECRET": SECRET, "KA_REPO": REPO, "KA_STATE_DIR": str(work / "state")}
        bot = run_server([sys.executable, "-m", "bot", "serve", "--no-worker", "--port", str(port),
                          "--web-workers", str(args.workers), "--threads", str(args.threads)], env, work)
        wait_up(f"http://127.0.0.1:{port}/healthz")
        bot_r = wrk(port, data, script, args.seconds, args.connections)
        stop(bot)
        stored = subprocess.run(["sqlite3", str(work / "state/ka-bot.db"), "SELECT COUNT(*) FROM deliveries"],
                                capture_output=True, text=True).stdout.strip()
    print(f"load: wrk -t2 -c{args.connections} -d{args.seconds}s, signed push deliveries "
          f"(distinct ids and commits); gunicorn -w {args.workers} gthread, {args.threads} threads")
    for name, r in (("bare Flask view", bare_r), ("ka-bot intake", bot_r)):
        print(f"{name:16} {r[0]:8.0f} req/s   p50 {r[1]:6.2f} ms   p99 {r[2]:6.2f} ms   "
              f"({r[3]} requests, {r[4]} errors)")
    print(f"stored deliveries: {stored or 'n/a (no sqlite3 CLI)'}")
    print(f"ratio: {bot_r[0] / bare_r[0]:.2f} of the bare view's throughput")


if __name__ == "__main__":
    main()
