#!/usr/bin/env python3
"""Benchmark: a rebuild after a one-patch change with the compiler cache, against the cold build, in one run.

Real parts: the full loop's kernel (Linux 6.12.117 with the sample fleet's patches and QEMU virt's config,
``tests/samples/qemu/virt.config``, cross-compiled for arm64), an sshd build host on loopback (needs root
and the kabuild user), Debian's makepkg and ccache.  First ``ka-build virt`` with an empty cache (the
cold build: what every build cost before the cache), then one patch more in the series (a changed
``init/main.c``, tests/support/onepatch.py) and ``ka-build virt`` again: the rebuild.  Both unsigned
(--no-publish), both from clean build folders (makepkg --cleanbuild, as every build).  Printed: each
build's makepkg phase, the ratio, and what the rebuild took from the cache.

    python tests/bench/bench_ccache.py          # about 8 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the project root, for tests.support and ka
from tests.support import fullloop, sshhosts  # noqa: E402
from tests.support.buildlab import BuildLab, make_build_lab  # noqa: E402
from tests.support.onepatch import add_patch  # noqa: E402


def build(lab: BuildLab, repo: Path, tree: Path) -> dict[str, Any]:
    res = lab.ka("build", fullloop.HOST, "--repo", str(repo), "--kernel-tree", str(tree), "--no-publish",
                 "--json", timeout=4 * 3600)
    if res.returncode != 0:
        sys.exit(f"ka-build {fullloop.HOST} failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
    built: dict[str, Any] = json.loads(res.stdout)
    return built


def main() -> None:
    tree = Path(os.environ.get("KA_KERNEL_TREE") or Path.home() / ".cache/kernel-agent/linux-6.12.git")
    why = sshhosts.available()
    if why or shutil.which("ccache") is None:
        sys.exit(f"needs {why or 'ccache (scripts/setup test installs it)'}")
    ssh = sshhosts.make_lab()
    try:
        ssh.add("builder", 31)
        ssh.add("hertz", 32)
        with tempfile.TemporaryDirectory(prefix="ka-bench-ccache-") as tmp:
            work = Path(tmp)
            lab = make_build_lab(ssh, SimpleNamespace(bare=tree), work)  # type: ignore[arg-type]
            try:
                repo = fullloop.fleet(work, lab)
                cold = build(lab, repo, tree)
                add_patch(repo, fullloop.HOST, tree, before="board/pinetab2")
                warm = build(lab, repo, tree)
            finally:
                lab.stop_agents()
    finally:
        ssh.stop()
    c, w = cold["phases"]["makepkg"], warm["phases"]["makepkg"]
    print(f"machine: {os.cpu_count()} cores; kernel: 6.12.117 + the sample series, QEMU virt's config, arm64")
    print(f"cold build, empty cache:         makepkg {c:7.1f} s  ({cold['ccache']})")
    print(f"rebuild after one patch, cached: makepkg {w:7.1f} s  ({warm['ccache']})")
    print(f"ratio: the rebuild takes {w / c:.2f} of the cold build's makepkg ({c / w:.1f}x faster)")


if __name__ == "__main__":
    main()
