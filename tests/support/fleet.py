"""The test fleet: manifest text, the patch tree of the small kernel, the host ``ampere``."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from ka.fleet.manifest import load_manifest
from ka.fleet.repo import GitTree, WorkTree
from ka.fleet.series import resolve_series
from tests.support import PROJECT
from tests.support.kernel import BASE_TAG, SmallKernel

MakeRepo = Callable[..., Path]


def manifest(includes: list[str], order: str = "arch, soc, subsystem, driver, module, board",
             extra: str = "", ref: str = BASE_TAG) -> str:
    """Manifest text for tests."""
    items = "".join(f"  - {i}\n" for i in includes)
    return f"description: test host\nbaseline:\n  ref: {ref}\napply_order: [{order}]\nincludes:\n{items}{extra}"


ORDER = [  # (include, patch files in apply order) for host "ampere"
    ("arch/defconfig", ["patches/arch/defconfig.patch"]),
    ("soc/base", ["patches/soc/base/1-sdio.patch", "patches/soc/base/10-goodix.patch"]),
    ("driver/bes2600", ["patches/driver/bes2600/new.patch", "patches/driver/bes2600/hook.patch"]),
    ("board/pinetab2", ["patches/board/pinetab2/0001-wifi.patch", "patches/board/pinetab2/0002-wake.patch"]),
]


def fleet_files(k: SmallKernel) -> dict[str, bytes | str]:
    """The patch tree of the test fleet."""
    return {
        "patches/arch/defconfig.patch": k.patches["defconfig"],
        "patches/soc/base/10-goodix.patch": k.patches["goodix"],
        "patches/soc/base/1-sdio.patch": k.patches["sdio"],
        "patches/driver/bes2600/series": "# bes2600\nnew.patch\nhook.patch -p1\n",
        "patches/driver/bes2600/new.patch": k.patches["bes-new"],
        "patches/driver/bes2600/hook.patch": k.patches["bes-hook"],
        "patches/board/pinetab2/0001-wifi.patch": k.patches["dts-wifi"],
        "patches/board/pinetab2/0002-wake.patch": k.patches["dts-wake"],
        "patches/module/bad.patch": k.patches["ctx-mismatch"],
    }


# the manifest lists includes out of scope order on purpose: apply_order decides
AMPERE = manifest(["board/pinetab2", "driver/bes2600", "soc/base", "arch/defconfig"])


BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
baseline: {ref: v6.12.117}
apply_order: [soc]
includes: *g
"""


PATCH = "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"  # one small patch, for series tests


def resolved(root: Path, host: str = "h", rev: str | None = None) -> list[str]:
    """The patch files of ``host``'s series, in order, from the work tree (or the commit ``rev``)."""
    view = GitTree(root, rev) if rev else WorkTree(root)
    return [p.path for s in resolve_series(view, load_manifest(view, host)) for p in s.patches]


SAMPLE_REF = "v6.12.117"  # the baseline of this repository's sample fleet


def sample_repo(repo: Path, ref: str) -> Path:
    """A copy of the sample fleet (a git repository) on ``ref``."""
    shutil.copytree(PROJECT / "fleet", repo / "fleet")
    shutil.copytree(PROJECT / "patches", repo / "patches")
    if ref != SAMPLE_REF:  # a newer Debian point release: the sample patches must still apply on it
        for m in (repo / "fleet").glob("*.yaml"):
            m.write_text(m.read_text().replace(f"ref: {SAMPLE_REF}", f"ref: {ref}"))
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True)
    return repo
