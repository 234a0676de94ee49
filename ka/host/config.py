"""The new host's kernel config: the running kernel's, carried to the host's baseline by that tree's own
Kconfig (``make olddefconfig``), as a maintainer brings an older kernel's config forward.

A running Debian 6.1 kernel's config names options a 6.12 baseline no longer has, and lacks the ones it
added; written as it is, ka-build's audit would refuse it.  Carried forward, every option holds in the
baseline's final .config, and a header says what the carrying changed, for the user to review.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ka.build.kconfig import olddefconfig_locally, parse
from ka.promote.baseline import KernelTree

#: options Kconfig computes from the toolchain (CC_VERSION_TEXT, AS_HAS_…): they differ by machine, not by choice
_TOOLCHAIN = re.compile(r"CONFIG_(CC|GCC|AS|LD|LLD|CLANG|RUSTC|BINDGEN|PAHOLE|TOOLCHAIN)_")


@dataclass
class Carried:
    """The config as written, and what carrying it forward changed (``SYMBOL: old -> new``)."""

    text: str
    lost: list[str] = field(default_factory=list)  # set in the running kernel, off or gone here
    changed: list[str] = field(default_factory=list)  # set in both, to other values
    new: int = 0  # options the running kernel's config does not name, at the baseline's defaults


def options(text: str) -> dict[str, str]:
    """Symbol → value of a .config (``n`` for ``is not set``), toolchain-computed options left out."""
    found, _ = parse(text, ".config")
    return {r.symbol: r.value for r in found if not _TOOLCHAIN.match(r.symbol)}


def compare(old: str, new: str) -> tuple[list[str], list[str], int]:
    """What ``new`` (the carried config) lost and changed of ``old`` (the running one), and how many it adds."""
    before, after = options(old), options(new)
    lost = [f"{s}={v}" for s, v in before.items() if v != "n" and after.get(s, "n") == "n"]
    changed = [f"{s}: {v} -> {after[s]}" for s, v in before.items()
               if v != "n" and after.get(s, "n") not in ("n", v)]
    return lost, changed, sum(1 for s in after if s not in before)


def carry(kernel: KernelTree, commit: str, patch: bytes, running: str, kernel_arch: str) -> Carried:
    """``running`` (a .config) through the patched baseline's ``make olddefconfig``; ToolMissing without
    make, gcc, flex and bison here."""
    text = olddefconfig_locally(kernel, commit, patch, running.encode(), kernel_arch).decode("utf-8", "replace")
    lost, changed, new = compare(running, text)
    return Carried(text, lost, changed, new)


def header(name: str, source: str, release: str, ref: str, carried: Carried) -> str:
    """The comment atop ``fleet/configs/NAME.config``: where it came from and what carrying it changed."""
    lines = [f"fleet/configs/{name}.config, written by ka host add: the config of the kernel {name} ran "
             f"({release}, {source}),",
             f"carried to {ref} (and the host's series) by that tree's Kconfig: make olddefconfig.  Review it."]
    if carried.lost:
        lines += [f"{len(carried.lost)} options the running kernel had are off or gone here:"]
        lines += [f"  {item}" for item in carried.lost]
    if carried.changed:
        lines += [f"{len(carried.changed)} options changed value:"] + [f"  {item}" for item in carried.changed]
    lines.append(f"{carried.new} options the running kernel's config does not name take {ref}'s defaults"
                 " (options the toolchain decides are left out of these counts).")
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)
