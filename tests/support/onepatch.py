"""One patch more for a host's series: a changed string in ``init/main.c``, a file every kernel config
compiles.  The rebuild after it is what a compiler cache is for (tests/integration/test_kernel_package.py,
tests/bench/bench_ccache.py)."""

from __future__ import annotations

import difflib
import os
import subprocess
from pathlib import Path

from tests.support.kernel import ENV

NAME = "module/ka-one-more"
HEADER = ("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
          "From: Fleet Maintainer <kernel@fleet.example>\nSubject: [PATCH] init: one patch more\n\n---\n")


def add_patch(repo: Path, host: str, tree: Path, before: str) -> None:
    """Write the patch (against ``host``'s baseline in the kernel tree ``tree``) into ``repo``'s patches/, list it
    in fleet/<host>.yaml before the include ``before``, and commit."""
    manifest = repo / f"fleet/{host}.yaml"
    text = manifest.read_text()
    ref = text.split("ref: ", 1)[1].split()[0]
    old = subprocess.run(["git", "--git-dir", str(tree), "show", f"{ref}:init/main.c"], capture_output=True,
                         text=True, check=True).stdout
    new = old.replace("Run %s as init process", "Run %s as init process (one patch more)", 1)
    assert new != old, "init/main.c has no 'Run %s as init process'"
    diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        "a/init/main.c", "b/init/main.c"))
    (repo / f"patches/{NAME}.patch").write_text(HEADER + f"diff --git a/init/main.c b/init/main.c\n{diff}")
    line = f"  - {before}\n"
    assert line in text, f"fleet/{host}.yaml does not include {before}"
    manifest.write_text(text.replace(line, f"  - {NAME}\n{line}", 1))
    env = {**os.environ, **ENV}
    for argv in (["add", "-A"], ["commit", "-qm", "one patch more"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, env=env, capture_output=True)
