"""The compiler cache of a build host: one ccache per fleet host there, so a rebuild compiles only what changed.

Where the build host has ``ccache`` (and ``ccache:`` in infra.yaml is not ``off``), the build's
environment says so (``KA_CCACHE=1``: the PKGBUILD and debian/rules then compile with ``CC="ccache
${CROSS_COMPILE}gcc"``) and where the cache is: ``<workdir>/ccache/<host>``, at most ``ccache:`` big
(default 5G).  Each host's config compiles its own objects, so caches are per host: one board's builds
never evict another's.  A pull request's build runs on ``pull_request_build_hosts``, another account,
so it writes a cache of its own that default-branch builds never read.

The cache must not change the packages' bytes: every build folder has its own path (named after its
inputs), so ``CCACHE_BASEDIR`` (the workdir) makes paths inside it relative in ccache's hash and
``CCACHE_NOHASHDIR`` leaves the folder's name out, while the templates' ``-ffile-prefix-map=$PWD=.``
(always, with or without a cache) keeps that name out of the objects' debug information; the time is
fixed by ``KBUILD_BUILD_TIMESTAMP`` as before.  A package built warm is byte-identical to one built cold
(tests/integration/test_ccache.py).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from ka.fleet.infra import BuildHost
from ka.io.ssh import Remote

STATS = "ccache.stats"  # in the build folder: this build's own counters (ccache's stats_log)
EVICT_AFTER = "30d"  # objects no build used for this long go (a config no longer built)


@dataclass(frozen=True)
class Cache:
    """The cache a build uses: its folder and limit on the build host, the base folder of the build folders
    (the workdir, absolute) and the build's stats log."""

    folder: str
    size: str
    base: str
    stats: str

    def env(self) -> dict[str, str]:
        """What the build's environment carries for ccache and for the templates (``KA_CCACHE``)."""
        return {"KA_CCACHE": "1", "CCACHE_DIR": self.folder, "CCACHE_MAXSIZE": self.size,
                "CCACHE_BASEDIR": self.base, "CCACHE_NOHASHDIR": "1", "CCACHE_STATSLOG": self.stats}


def find(remote: Remote, bh: BuildHost, host: str, where: str, log: Callable[[str], None]) -> Cache | None:
    """The cache for ``host``'s build in the folder ``where``, or None: none configured, or no ccache on the
    build host (said in the log: the build starts cold)."""
    if bh.ccache is None:
        return None
    if not remote.run(["sh", "-c", "command -v ccache"], timeout=60, check=False).ok:
        log(f"build host {bh.ssh} has no ccache: every build there compiles everything (install ccache there, "
            f"or set ccache: off for it in fleet/infra.yaml)")
        return None
    base = remote.run(["realpath", "--", bh.workdir], timeout=60).output.strip()
    cache = Cache(posixpath.join(base, "ccache", host), bh.ccache, base,
                  posixpath.join(base, posixpath.basename(where), STATS))
    remote.run(["mkdir", "-p", "--", cache.folder], timeout=60)
    return cache


def report(remote: Remote, cache: Cache) -> str:
    """One line on what this build took from the cache; then objects unused for 30 days are evicted (the
    size limit ccache keeps by itself)."""
    res = remote.run(["awk", "--", _COUNT, cache.stats], timeout=120, check=False)
    remote.run(["ccache", "--evict-older-than", EVICT_AFTER], env=cache.env(), timeout=600, check=False)
    words = res.output.split()
    hits, misses = (int(w) for w in words) if res.ok and len(words) == 2 else (0, 0)
    if not hits + misses:
        return f"ccache: no compilation went through the cache ({cache.folder})"
    return (f"ccache: {hits} of {hits + misses} compilations from the cache ({100 * hits // (hits + misses)}%), "
            f"in {cache.folder} (at most {cache.size})")


# ccache's stats log: a "# FILE" line per call, then its counters, one per line
_COUNT = ('$0 == "cache_miss" { m++ } $0 == "direct_cache_hit" || $0 == "preprocessed_cache_hit" { h++ } '
          'END { print h + 0, m + 0 }')
