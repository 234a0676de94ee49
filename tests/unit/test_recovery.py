"""The way back a failed install prints, by how far it got: table-driven over ``Progress``."""

from __future__ import annotations

import pytest

from ka.fleet.installspec import InstallSpec
from ka.install.recovery import Progress, way_back

SPEC = InstallSpec(ssh="h", pkgbase="linux-h")
OLD, NEW = "6.12.0-h-1", "6.12.0-h-2"

CASES = [
    (Progress(), ["nothing on h was changed"]),
    (Progress(changed=True), ["still runs 6.12.0-h-1", "extlinux.conf was not changed"]),
    # what the host's extlinux.conf says, read back, not what the run believed it wrote
    (Progress(changed=True, default="kernel-agent-previous", default_title="previous: 6.12.0-h-1"),
     ["boots entry kernel-agent-previous (previous: 6.12.0-h-1, the kept files *.ka-prev)", "--rollback"]),
    (Progress(changed=True, default="kernel-agent", default_title="linux-h 6.12.0-h-2 (kernel-agent)"),
     ["boots entry kernel-agent (linux-h 6.12.0-h-2 (kernel-agent))", "kernel-agent-previous is the fallback"]),
    (Progress(changed=True, rebooting=True), ["was told to reboot when this run stopped", "ka-status --live h"]),
    (Progress(changed=True, transaction="/tmp/ka-install.x/pacman"),
     ["pacman goes on by itself on h (its output: /tmp/ka-install.x/pacman/out)", "db.lck gone"]),
    (Progress(changed=True, modules_aside="/usr/lib/modules/.ka-prev-6.12.0-h-1"),
     ["the modules of 6.12.0-h-1 are at /usr/lib/modules/.ka-prev-6.12.0-h-1"]),
    (Progress(changed=True, never_back=True), ["not answering over ssh", "pxe_label_override"]),
]


@pytest.mark.parametrize(("got", "says"), CASES)
def test_the_way_back_says_where_the_host_is(got: Progress, says: list[str]) -> None:
    text = "\n".join(way_back("h", SPEC, got, OLD, NEW, "hertz:/backups/h/6.12.0-h-1"))
    for words in says:
        assert words in text, text
