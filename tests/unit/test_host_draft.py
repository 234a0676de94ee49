"""ka/host/draft.py: a new host's manifest from its probes, or the refusals, each naming the probe."""

from __future__ import annotations

import pytest

from ka.fleet.manifest import parse_manifest
from ka.host.draft import make_draft, matching_series, operator_added, stable_tag
from ka.host.probe import Probe

EXTLINUX = ("default l0\nlabel l0\n  linux /Image\n  initrd /initramfs-linux.img\n"
            "  append root=LABEL=ROOT rw\n")
DF = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/mmcblk0p1 261868 81236 180632 32% /boot\n"
PINETAB = {"arch": "aarch64\n", "release": "6.12.117-1-ARCH\n", "model": "Pine64 PineTab2 v2.0\0",
           "compatible": "pine64,pinetab2-v2.0\0pine64,pinetab2\0rockchip,rk3566\0", "extlinux": EXTLINUX,
           "uid": "1000\n", "sudo": "", "tools": "pacman\nmkinitcpio\nsystemctl\n", "boot_free": DF,
           "config_gz": "CONFIG_ARM64=y\n", "owner": "linux-pinetab2\n"}
SERIES = ["arch/arm64-defconfig-fleet", "soc/rk356x-base", "soc/rk3588-base.patch", "board/pinetab2",
          "board/rock-5b.patch", "driver/bes2600"]
TAGS = {"v6.12", "v6.12.116", "v6.12.117"}


def probe(**changes: str | None) -> Probe:
    answers = {k: v for k, v in {**PINETAB, **changes}.items() if v is not None}
    return Probe("pt2", answers=answers, failed={k: "No such file or directory" for k, v in changes.items()
                                                 if v is None})


def test_a_pinetab2_gets_a_valid_manifest_with_the_reason_of_every_value() -> None:
    draft = make_draft("pt2", "pt2", probe(), SERIES, TAGS)
    assert draft.refusals == []
    manifest = parse_manifest("pt2", "fleet/pt2.yaml", draft.manifest)
    assert manifest.baseline_ref == "v6.12.117" and manifest.description == "Pine64 PineTab2 v2.0"
    assert [i.text for i in manifest.includes] == ["soc/rk356x-base", "board/pinetab2"]
    assert draft.proposed == ["soc/rk356x-base", "board/pinetab2"] and draft.config == "CONFIG_ARM64=y\n"
    spec = manifest.install
    assert spec is not None and (spec.format, spec.image, spec.initramfs) == ("pacman", "Image", "mkinitcpio")
    assert spec.commands.prefix == ("sudo", "-n") and spec.trial_boot == "none"
    assert "# rockchip,rk3566" in draft.manifest and "# /proc/device-tree/model" in draft.manifest
    assert "the running kernel's (/proc/config.gz)" in draft.manifest


def test_like_copies_the_includes_of_another_host() -> None:
    draft = make_draft("pt2", "pt2", probe(compatible="acme,board\0"), SERIES, TAGS,
                       like=("ampere", ["arch/arm64-defconfig-fleet", "board/pinetab2"]))
    manifest = parse_manifest("pt2", "fleet/pt2.yaml", draft.manifest)
    assert [i.text for i in manifest.includes] == ["arch/arm64-defconfig-fleet", "board/pinetab2"]
    assert "as ampere's (--like ampere)" in draft.manifest and draft.proposed == []


@pytest.mark.parametrize(("changes", "said"), [
    ({"arch": "x86_64\n"}, "uname -m says x86_64"),
    ({"extlinux": None}, "cat /boot/extlinux/extlinux.conf: No such file or directory"),
    ({"sudo": None}, "sudo -n true: No such file or directory: ka-install runs its steps as root"),
    ({"boot_free": DF.replace("180632", "2048")}, "df -Pk /boot: 2048 KiB free"),
    ({"tools": "mkinitcpio\nsystemctl\n"}, "command -v pacman dpkg: neither"),
    ({"tools": "pacman\n"}, "command -v systemctl reboot: neither"),
    ({"compatible": "acme,board\0"}, "no series under patches/soc or patches/board matches"),
    ({"release": "5.10.0\n"}, "uname -r says 5.10.0: the kernel tree has no stable tag"),  # and no fleet
    ({"config_gz": None}, "zcat /proc/config.gz and cat /boot/config-6.12.117-1-ARCH: neither"),
])
def test_a_host_kernel_agent_cannot_manage_is_refused_naming_the_probe(changes: dict[str, str | None],
                                                                         said: str) -> None:
    draft = make_draft("pt2", "pt2", probe(**changes), SERIES, TAGS)
    assert any(said in r for r in draft.refusals), draft.refusals
    assert draft.manifest == ""


def test_a_root_login_needs_no_sudo_and_a_debian_host_installs_with_apt() -> None:
    deb = probe(uid="0\n", sudo=None, tools="dpkg\nupdate-initramfs\nsystemctl\n", config_gz=None,
                config_file="CONFIG_ARM64=y\n")
    draft = make_draft("pt2", "pt2", deb, SERIES, TAGS)
    manifest = parse_manifest("pt2", "fleet/pt2.yaml", draft.manifest)
    spec = manifest.install
    assert spec is not None and (spec.format, spec.initramfs, spec.commands.prefix) == ("apt", "initramfs-tools", ())
    assert manifest.package is not None and manifest.package.format == "deb"
    assert "/boot/config-6.12.117-1-ARCH" in draft.manifest


@pytest.mark.parametrize(("release", "tag"), [
    ("6.12.117+deb12-arm64", "v6.12.117"), ("6.12.118-1-ARCH", "v6.12.117"), ("6.12.0", "v6.12"),
    ("6.13.1", None), ("garbage", None),
])
def test_the_nearest_stable_tag_not_above_the_running_release(release: str, tag: str | None) -> None:
    assert stable_tag(release, TAGS) == tag


def test_series_are_proposed_by_the_board_s_compatible_strings() -> None:
    assert matching_series(SERIES, ["radxa,rock-5b", "rockchip,rk3588"]) == [
        ("soc/rk3588-base.patch", "rockchip,rk3588"), ("board/rock-5b.patch", "radxa,rock-5b")]
    assert matching_series(["board/pinetab2-v0.1.patch"], ["pine64,pinetab2-v2.0"]) == []


def test_a_running_series_the_tree_lacks_takes_the_fleet_s_baseline_and_a_foreign_kernel_the_default_image() -> None:
    draft = make_draft("pt2", "pt2", probe(release="6.1.0-57-arm64\n", owner=None), SERIES, TAGS,
                       fleet_ref="v6.12.117")
    manifest = parse_manifest("pt2", "fleet/pt2.yaml", draft.manifest)
    assert manifest.baseline_ref == "v6.12.117" and "a series the kernel tree lacks: the fleet's baseline" in \
        draft.manifest
    assert manifest.install is not None and manifest.install.image == "Image"
    assert "the running kernel (/Image) is no package's" in draft.manifest


@pytest.mark.parametrize(("tools", "arch"), [("pacman\nmkinitcpio\nsystemctl\n", "armv7h"),
                                            ("dpkg\nsystemctl\n", "armhf")])
def test_an_armhf_board_gets_its_package_architecture_and_a_32_bit_kernel(tools: str, arch: str) -> None:
    draft = make_draft("pt2", "pt2", probe(arch="armv7l\n", tools=tools), SERIES, TAGS)
    manifest = parse_manifest("pt2", "fleet/pt2.yaml", draft.manifest)
    assert manifest.package is not None and (manifest.package.arch, manifest.package.kernel_arch) == (arch, "arm")


LINE = f"{'  pt2: [kim]':<43} # ka host add --operator\n"


@pytest.mark.parametrize(("infra", "after"), [
    ("", "operators:\n" + LINE),
    ("backup:\n  ssh: hertz", "backup:\n  ssh: hertz\noperators:\n" + LINE),
    ("operators:   # who may install\n  ampere: [alice]\nbackup: {}\n",
     "operators:   # who may install\n" + LINE + "  ampere: [alice]\nbackup: {}\n"),
    ("operators: {ampere: [alice]}\n", None),  # a flow mapping: edited by hand
])
def test_an_operator_is_one_line_more_in_infra_yaml(infra: str, after: str | None) -> None:
    assert operator_added(infra, "pt2", "kim") == after


@pytest.mark.parametrize("login", ["", "-kim", "kim smith", "a" * 40])
def test_what_is_no_login_is_refused(login: str) -> None:
    assert operator_added("", "pt2", login) is None


MOUNTS = "/dev/mmcblk0p2 / ext4 rw 0 0\n/dev/mmcblk0p1 /boot/state vfat rw 0 0\n"


@pytest.mark.parametrize(("changes", "trial", "said"), [
    ({"tools": "pacman\nfw_printenv\nsystemctl\n", "uboot_trial": "ka_trial=if load mmc 0:1 ...\n", "mounts": MOUNTS},
     ("uboot-script", "/boot/state"), "fw_printenv ka_trial: U-Boot runs the boot-once trial"),
    ({"tools": "pacman\nsystemctl\n", "mounts": MOUNTS}, ("none", "/boot"), "no fw_printenv"),
    ({"tools": "pacman\nfw_printenv\nsystemctl\n", "uboot_trial": None, "mounts": MOUNTS}, ("none", "/boot"),
     "U-Boot's environment has no ka_trial script"),
    ({"tools": "pacman\nfw_printenv\nsystemctl\n", "uboot_trial": "ka_trial=x\n",
      "mounts": MOUNTS.replace("vfat", "ext2")}, ("none", "/boot"), "no FAT partition is mounted at or under /boot"),
])
def test_the_boot_once_trial_only_where_u_boot_runs_it(changes: dict[str, str | None], trial: tuple[str, str],
                                                       said: str) -> None:
    draft = make_draft("pt2", "pt2", probe(**changes), SERIES, TAGS)
    spec = parse_manifest("pt2", "fleet/pt2.yaml", draft.manifest).install
    assert spec is not None and (spec.trial_boot, spec.trial_state) == trial and said in draft.manifest


def test_the_fleet_s_kernel_source_is_the_new_host_s() -> None:
    mirror = ("ampere", {"git": "https://forge.example.org/mirrors/linux.git"})
    draft = make_draft("pt2", "pt2", probe(), SERIES, TAGS, source=mirror)
    spec = parse_manifest("pt2", "fleet/pt2.yaml", draft.manifest).package
    assert spec is not None and spec.git == "https://forge.example.org/mirrors/linux.git"
    assert "as ampere's: the fleet's kernel source" in draft.manifest


@pytest.mark.parametrize(("tools", "reboot"), [("pacman\nsystemctl\nreboot\n", ("systemctl", "reboot")),
                                              ("pacman\nreboot\n", ("reboot",))])
def test_a_host_without_systemctl_reboots_with_its_own_reboot(tools: str, reboot: tuple[str, ...]) -> None:
    spec = parse_manifest("pt2", "fleet/pt2.yaml", make_draft("pt2", "pt2", probe(tools=tools), SERIES, TAGS).manifest
                          ).install
    assert spec is not None and spec.commands.reboot == reboot
