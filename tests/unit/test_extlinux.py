"""extlinux.conf: kernel-agent's entries written, the owner's lines kept, U-Boot's keywords in any case."""

from __future__ import annotations

import pytest

from ka.install import extlinux
from ka.install.extlinux import ExtlinuxError, kept, pairs, parse, rewrite

TITLES = ("linux-ampere 6.12.0-2 (kernel-agent)", "previous: 6.12.0-1")

OWNER = """\
# my board
timeout 30
menu title PineTab2
default arch

label arch
    menu label Arch
    linux /Image
    initrd /initramfs-linux.img
    fdt /dtbs/rockchip/rk3566-pinetab2.dtb
    append root=LABEL=ROOT rw console=ttyS2,1500000 panic=5 quiet

label rescue
    linux /Image
    append root=LABEL=ROOT init=/bin/sh
"""


def test_first_install_keeps_the_owner_and_takes_its_command_line() -> None:
    out = rewrite(OWNER, "Image", "initramfs-linux-ampere.img", 10, TITLES)
    config = parse(out)
    assert config.default == "kernel-agent" and config.fallback == "kernel-agent-previous"
    new, prev = config.entry("kernel-agent"), config.entry("kernel-agent-previous")
    assert new is not None and prev is not None
    assert new.get("append") == "root=LABEL=ROOT rw console=ttyS2,1500000 quiet panic=10"
    assert prev.get("append") == "root=LABEL=ROOT rw console=ttyS2,1500000 quiet"  # a panic there halts
    assert (new.kernel, new.get("initrd"), new.get("fdt")) == ("/Image", "/initramfs-linux-ampere.img",
                                                                "/dtbs/rockchip/rk3566-pinetab2.dtb")
    # the previous entry boots copies of what booted so far
    assert (prev.kernel, prev.get("initrd"), prev.get("fdt")) == ("/Image.ka-prev", "/initramfs-linux.img.ka-prev",
                                                                   "/dtbs.ka-prev/rockchip/rk3566-pinetab2.dtb")
    for line in ("# my board", "timeout 30", "menu title PineTab2", "label rescue", "    append root=LABEL=ROOT "
                 "init=/bin/sh", "label arch", "    menu label Arch"):
        assert line in out.splitlines(), line
    assert "default arch" not in out


def test_the_next_install_keeps_kernel_agents_own_files() -> None:
    once = rewrite(OWNER, "Image", "initramfs-linux-ampere.img", 10, TITLES)
    twice = rewrite(once, "Image", "initramfs-linux-ampere.img", 10, TITLES)
    prev = parse(twice).entry("kernel-agent-previous")
    assert prev is not None and prev.get("initrd") == "/initramfs-linux-ampere.img.ka-prev"
    assert rewrite(twice, "Image", "initramfs-linux-ampere.img", 10, TITLES) == twice  # stable from then on
    assert twice.count("panic=10") == 1 and "\n\n\n" not in twice and twice.count("label arch") == 1


def test_uppercase_files_stay_uppercase_and_keywords_are_case_insensitive() -> None:
    out = rewrite(OWNER.upper().replace("/IMAGE", "/Image"), "Image", None, 10, TITLES)
    assert "DEFAULT kernel-agent" in out and "LABEL kernel-agent" in out and "    LINUX /Image" in out
    assert "INITRD" in parse(out).entry("kernel-agent-previous").lines[3]  # type: ignore[union-attr]


def test_boot_on_the_root_partition() -> None:
    text = "label l\n  kernel /boot/Image\n  fdtdir /boot/dtbs\n  append root=/dev/mmcblk0p2\n"
    config = parse(rewrite(text, "Image", None, 10, TITLES))
    prev = config.entry("kernel-agent-previous")
    assert prev is not None and prev.kernel == "/boot/Image.ka-prev" and prev.get("fdtdir") == "/boot/dtbs.ka-prev"
    assert kept(parse(text), "/boot") == [("kernel", "/boot/Image", "/boot/Image.ka-prev"),
                                          ("dtbs", "/boot/dtbs", "/boot/dtbs.ka-prev")]


def test_pairs_for_a_rollback() -> None:
    config = parse(rewrite(OWNER, "Image", "initramfs-linux-ampere.img", 10, TITLES))
    assert pairs(config, "/boot") == [("kernel", "/boot/Image", "/boot/Image.ka-prev"),
                                      ("initrd", "/boot/initramfs-linux-ampere.img",
                                       "/boot/initramfs-linux.img.ka-prev"),
                                      ("dtbs", "/boot/dtbs", "/boot/dtbs.ka-prev")]
    with pytest.raises(ExtlinuxError, match="no kernel-agent and kernel-agent-previous"):
        pairs(parse(OWNER), "/boot")


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "has no label with a kernel"),
    ("timeout 3\n", "has no label with a kernel"),
    ("label x\n  append quiet\n", "has no label with a kernel"),
    ("label x\n  linux /Image\n  initrd /a.img,/b.img\n", "more than one initrd"),
])
def test_configs_that_cannot_be_used(text: str, fragment: str) -> None:
    with pytest.raises(ExtlinuxError, match=fragment):
        rewrite(text, "Image", None, 10, TITLES)


def test_the_default_label_is_the_base_even_when_not_first() -> None:
    text = "default b\nlabel a\n  linux /old\nlabel b\n  linux /Image\n  append quiet\n"
    assert extlinux.base_entry(parse(text)).name == "b"


def test_tabs_separate_keywords_too() -> None:
    text = "default l\nlabel l\n\tlinux\t/Image\n\tappend\troot=/dev/mmcblk0p2 rw\n"
    new = parse(rewrite(text, "Image", None, 10, TITLES)).entry("kernel-agent")
    assert new is not None and new.get("append") == "root=/dev/mmcblk0p2 rw panic=10"


def test_global_lines_after_the_labels_are_global_as_u_boot_reads_them() -> None:
    text = ("label rescue\n  linux /Image\n  append init=/bin/sh\n"
            "label arch\n  linux /Image\n  append root=LABEL=ROOT rw\n"
            "default arch\ntimeout 20\n")
    config = parse(text)
    assert config.default == "arch" and [e.name for e in config.entries] == ["rescue", "arch"]
    assert all(len(e.lines) <= 3 for e in config.entries)
    out = rewrite(text, "Image", None, 10, TITLES)
    new = parse(out).entry("kernel-agent")
    assert new is not None and new.get("append") == "root=LABEL=ROOT rw panic=10"  # the default's, not rescue's
    assert "default arch" not in out and "timeout 20" in out and parse(out).default == "kernel-agent"


def test_an_owners_menu_default_is_disarmed() -> None:
    text = "label a\n  linux /old\nlabel b\n  menu default\n  linux /Image\n  append quiet\n"
    assert parse(text).default == "b" and extlinux.base_entry(parse(text)).name == "b"
    out = rewrite(text, "Image", None, 10, TITLES)
    assert parse(out).default == "kernel-agent" and "# menu default" in out


def test_overlays_and_kaslrseed_are_carried_over() -> None:
    text = ("label l\n  linux /Image\n  fdt /dtbs/rockchip/x.dtb\n  fdtoverlays /dtbs/rockchip/overlay/a.dtbo\n"
            "  kaslrseed\n  append quiet\n")
    config = parse(rewrite(text, "Image", None, 10, TITLES))
    new, prev = config.entry("kernel-agent"), config.entry("kernel-agent-previous")
    assert new is not None and prev is not None
    assert new.get("fdtoverlays") == "/dtbs/rockchip/overlay/a.dtbo" and new.get("kaslrseed") == ""
    assert prev.get("fdtoverlays") == "/dtbs.ka-prev/rockchip/overlay/a.dtbo"


def test_the_kept_entry_can_be_the_default_while_files_move() -> None:
    out = rewrite(OWNER, "Image", "initramfs-linux-ampere.img", 10, TITLES, default="kernel-agent-previous")
    config = parse(out)
    assert config.default == "kernel-agent-previous" and config.fallback == "kernel-agent-previous"
