"""Manifest validation: every bad input names the file, the line and the field."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ka.errors import ManifestError
from ka.fleet.manifest import check_host_name, list_hosts, parse_manifest, valid_host_name
from ka.fleet.repo import WorkTree
from tests.support.fleet import BOMB, MakeRepo
from tests.support.fuzz import examples

GOOD = """\
description: PineTab2
baseline:
  ref: v6.12.117
apply_order: [arch, soc, board]
includes:
  - soc/rk356x-base
  - board/pinetab2
parity:
  b2sum: {b2}
""".format(b2="a" * 128)


def test_good_manifest() -> None:
    m = parse_manifest("ampere", "fleet/ampere.yaml", GOOD)
    assert m.baseline_ref == "v6.12.117"
    assert m.apply_order == ("arch", "soc", "board")
    assert [(i.scope, i.name, i.line) for i in m.includes] == [("soc", "rk356x-base", 6), ("board", "pinetab2", 7)]
    assert m.parity.b2sum == "a" * 128
    assert m.parity.canonical is None


def test_later_verbs_keys_are_accepted() -> None:
    text = GOOD + "package:\n  pkgrel: 2\n  config: fleet/configs/h.config\nbuild:\n  anything: 1\ninstall: {}\n"
    m = parse_manifest("h", "fleet/h.yaml", text)
    assert m.package is not None and (m.package.pkgrel, m.package.pkgbase, m.package.image) == ("2", "linux-h", "Image")
    assert m.package.git == "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git"


PACKAGE = "package:\n  config: fleet/configs/h.config\n"


def test_a_config_of_fragments_on_a_base() -> None:
    text = GOOD + "package:\n  config:\n    fragments: [fleet/configs/fleet.config, fleet/configs/h.config]\n"
    spec = parse_manifest("h", "fleet/h.yaml", text).package
    assert spec is not None and spec.config is None and spec.config_base == "defconfig"  # the default base
    assert spec.config_files == ("fleet/configs/fleet.config", "fleet/configs/h.config")
    spec = parse_manifest("h", "fleet/h.yaml", GOOD + PACKAGE).package
    assert spec is not None and (spec.config_base, spec.config_files) == (None, ("fleet/configs/h.config",))


@pytest.mark.parametrize(("extra", "line", "field", "fragment"), [
    ("package: yes\n", 10, "package", "must be a mapping"),
    ("package:\n  pkgrel: 2\n", 10, "package.config", "missing (required)"),
    (PACKAGE + "  pkgrel: 0\n", 12, "package.pkgrel", "is not a release number"),
    (PACKAGE + "  pkgbase: Linux Ampere\n", 12, "package.pkgbase", "is not a package name"),
    (PACKAGE + "  format: rpm\n", 12, "package.format", "is not one of pacman, deb"),
    (PACKAGE + "  image: ../Image\n", 12, "package.image", "is not a file name"),
    (PACKAGE + "  imgae: Image\n", 12, "package.imgae", "did you mean 'image'"),
    ("package:\n  config: ../x\n", 11, "package.config", "must be a path inside the repository"),
    (PACKAGE + "  source:\n    git: ftp://x\n", 13, "package.source.git", "is not a URL"),
    (PACKAGE + "  source:\n    tarball: https://x/l.tar.xz\n", 12, "package.source.b2sum", "needs its b2sum"),
    (PACKAGE + "  source:\n    git: https://a\n    tarball: https://b\n", 12, "package.source", "one of git"),
    ("package:\n  config: {base: defconfig}\n", 11, "package.config.fragments", "a list of one or more"),
    ("package:\n  config: {fragments: []}\n", 11, "package.config.fragments", "a list of one or more"),
    ("package:\n  config:\n    base: make -j9\n    fragments: [a.config]\n", 12, "package.config.base",
     "is not a make target"),
    ("package:\n  config:\n    fragments: [a.config, ../b.config]\n", 12, "package.config.fragments[1]",
     "must be a path inside the repository"),
    ("package:\n  config:\n    fragments: [a.config]\n    bsae: defconfig\n", 13, "package.config.bsae",
     "did you mean 'base'"),
])
def test_bad_package_sections(extra: str, line: int, field: str, fragment: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest("h", "fleet/h.yaml", GOOD + extra)
    assert any((p.line, p.field) == (line, field) and fragment in p.message for p in err.value.problems), \
        err.value.problems


def test_install_defaults_are_production_ones() -> None:
    m = parse_manifest("ampere", "fleet/ampere.yaml", GOOD + PACKAGE + "  image: Image.gz\n")
    spec = m.install
    assert spec is not None and (spec.ssh, spec.pkgbase, spec.image, spec.boot) == ("ampere", "linux-ampere",
                                                                                  "Image.gz", "/boot")
    assert spec.extlinux == "/boot/extlinux/extlinux.conf" and spec.initramfs_path == "/boot/initramfs-linux-ampere.img"
    assert spec.commands.prefix == ("sudo", "-n") and spec.commands.reboot == ("systemctl", "reboot")
    assert spec.commands.release == ("uname", "-r") and (spec.down_timeout, spec.up_timeout) == (120, 300)
    assert spec.root("pacman", "-U", "x") == ["sudo", "-n", "pacman", "-U", "x"]
    assert (spec.trial_boot, spec.trial_state) == ("none", "/boot")


def test_install_settings() -> None:
    text = GOOD + ("install:\n  ssh: pinetab\n  boot: /boot/\n  initramfs: none\n  panic: 30\n"
                   "  trial_boot: uboot-script\n  trial_state: /boot/state/\n  commands:\n"
                   "    prefix: []\n    pacman: [pacman, --config, /srv/root/etc/pacman.conf]\n"
                   "  heartbeat:\n    up: 600\n  wave: 2\n")
    spec = parse_manifest("ampere", "fleet/ampere.yaml", text).install
    assert spec is not None and spec.ssh == "pinetab" and spec.boot == "/boot" and spec.initramfs_path is None
    assert spec.commands.prefix == () and spec.commands.pacman[1:] == ("--config", "/srv/root/etc/pacman.conf")
    assert (spec.panic, spec.up_timeout, spec.down_timeout) == (30, 600, 120)
    assert (spec.trial_boot, spec.trial_state, spec.wave) == ("uboot-script", "/boot/state", 2)


INSTALL = "install:\n"


def test_the_install_format_follows_the_package_format() -> None:
    deb = GOOD + PACKAGE + "  format: deb\n"
    spec = parse_manifest("h", "fleet/h.yaml", deb).install
    assert spec is not None and (spec.format, spec.initramfs, spec.initramfs_path) == ("apt", "initramfs-tools", None)
    assert spec.deb_image("6.12.117-h-1") == "/boot/vmlinuz-6.12.117-h-1"
    with pytest.raises(ManifestError) as err:
        parse_manifest("h", "fleet/h.yaml", deb + INSTALL + "  format: pacman\n")
    assert [p.field for p in err.value.problems] == ["install.format"], err.value.problems
    assert "pacman does not install the deb packages" in err.value.problems[0].message


@pytest.mark.parametrize(("extra", "line", "field", "fragment"), [
    ("install: yes\n", 10, "install", "must be a mapping"),
    (INSTALL + "  ssh: 'a b'\n", 11, "install.ssh", "is not a name of the ssh config"),
    (INSTALL + "  boot: boot\n", 11, "install.boot", "is not an absolute path"),
    (INSTALL + "  boot: /boot/../etc\n", 11, "install.boot", "is not an absolute path"),
    (INSTALL + "  extlinux: /boot/ext linux.conf\n", 11, "install.extlinux", "is not an absolute path"),
    (INSTALL + "  image: ../Image\n", 11, "install.image", "is not a file name"),
    (INSTALL + "  format: dnf\n", 11, "install.format", "is not one of pacman, apt"),
    (INSTALL + "  initramfs: dracut\n", 11, "install.initramfs", "is not one of mkinitcpio, initramfs-tools, none"),
    (INSTALL + "  panic: 0\n", 11, "install.panic", "from 1 to 3600"),
    (INSTALL + "  trial_boot: bootcount\n", 11, "install.trial_boot", "is not one of none, uboot-script"),
    (INSTALL + "  trial_state: state\n", 11, "install.trial_state", "is not an absolute path"),
    (INSTALL + "  panic: yes\n", 11, "install.panic", "whole number"),
    (INSTALL + "  wave: 0\n", 11, "install.wave", "is not a whole number of waves from 1 to 99"),
    (INSTALL + "  reboot: now\n", 11, "install.reboot", "did you mean"),
    (INSTALL + "  commands:\n    reboot: systemctl reboot\n", 12, "install.commands.reboot", "must be a list"),
    (INSTALL + "  commands:\n    reboot: ['systemctl reboot']\n", 12, "install.commands.reboot", "no spaces"),
    (INSTALL + "  commands:\n    pacman: []\n", 12, "install.commands.pacman", "1 to 20 arguments"),
    (INSTALL + "  commands:\n    release: [uname, '-r;id']\n", 12, "install.commands.release", "must be a list"),
    (INSTALL + "  commands:\n    shell: [sh]\n", 12, "install.commands.shell", "allowed: prefix"),
    (INSTALL + "  heartbeat:\n    up: 99999\n", 12, "install.heartbeat.up", "from 1 to 7200"),
    (INSTALL + "  heartbeat: 5\n", 11, "install.heartbeat", "must be a mapping"),
])
def test_bad_install_sections(extra: str, line: int, field: str, fragment: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest("h", "fleet/h.yaml", GOOD + extra)
    assert any((p.line, p.field) == (line, field) and fragment in p.message for p in err.value.problems), \
        err.value.problems


# (replace old -> new in GOOD, expected line, expected field, expected message fragment)
CASES = [
    ("description:", "descripton:", 1, "descripton", "did you mean 'description'"),
    ("  ref: v6.12.117\n", "  ref: v6.12.117\n  tag: x\n", 4, "baseline.tag", "unknown key"),
    ("baseline:\n  ref: v6.12.117\n", "baseline:\n  commit: abc\n", 2, "baseline.ref", "missing (required)"),
    ("baseline:\n  ref: v6.12.117\n", "", 1, "baseline", "missing (required)"),
    ("baseline:\n  ref: v6.12.117\n", "baseline: v6.12\n", 2, "baseline", "must be a mapping"),
    ("  ref: v6.12.117", "  ref: --upload-pack=x", 3, "baseline.ref", "not a git tag or commit"),
    ("  ref: v6.12.117", "  ref: ':/fix the thing'", 3, "baseline.ref", "not a git tag or commit"),
    ("  ref: v6.12.117", "  ref: v6.12^{tree}", 3, "baseline.ref", "not a git tag or commit"),
    ("  ref: v6.12.117", "  ref: main@{1}", 3, "baseline.ref", "not a git tag or commit"),
    ("  ref: v6.12.117", "  ref: v6..v7", 3, "baseline.ref", "not a git tag or commit"),
    ("apply_order: [arch, soc, board]", "apply_order: [arch, socc, board]", 4, "apply_order[1]",
     "did you mean 'soc'"),
    ("apply_order: [arch, soc, board]", "apply_order: [arch, soc, board, soc]", 4, "apply_order[3]", "listed twice"),
    ("apply_order: [arch, soc, board]", "apply_order: []", 4, "apply_order", "non-empty list"),
    ("apply_order: [arch, soc, board]\n", "", 1, "apply_order", "missing (required)"),
    ("  - board/pinetab2", "  - driver/bes2600", 7, "includes[1]", "scope 'driver' of 'driver/bes2600' is not in"),
    ("  - board/pinetab2", "  - firmware/blob", 7, "includes[1]", "'firmware' is not a scope"),
    ("  - board/pinetab2", "  - board/../../etc/passwd", 7, "includes[1]", "no '..'"),
    ("  - board/pinetab2", "  - /board/pinetab2", 7, "includes[1]", "no '..', no absolute path"),
    ("  - board/pinetab2", "  - board", 7, "includes[1]", "must be '<scope>/<name>'"),
    ("  - board/pinetab2", "  - soc/rk356x-base.patch", 7, "includes[1]", "already included at line 6"),
    ("  - board/pinetab2", "  - soc/rk356x-base", 7, "includes[1]", "already included at line 6"),
    ("includes:\n  - soc/rk356x-base\n  - board/pinetab2\n", "includes: []\n", 5, "includes", "non-empty list"),
    ("b2sum: " + "a" * 128, "b2sum: abc", 9, "parity.b2sum", "128 lowercase hex"),
    ("b2sum: " + "a" * 128, "b2sum: " + "A" * 128, 9, "parity.b2sum", "128 lowercase hex"),
    ("b2sum: " + "a" * 128, "canonical: ../outside.patch", 9, "parity.canonical", "inside the repository"),
    ("b2sum: " + "a" * 128, "sha256: abc", 9, "parity.sha256", "unknown key"),
    ("description: PineTab2\n", "description: PineTab2\ndescription: again\n", 2, "description", "duplicate key"),
    ("description: PineTab2", "description: [1, 2]", 1, "description", "must be text"),
    ("includes:", "includes: x\nfoo:", 6, "foo", "unknown key"),
]


@pytest.mark.parametrize(("old", "new", "line", "field", "message"), CASES)
def test_bad_manifest_names_file_line_field(old: str, new: str, line: int, field: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ManifestError) as err:
        parse_manifest("ampere", "fleet/ampere.yaml", GOOD.replace(old, new, 1))
    found = [(p.line, p.field) for p in err.value.problems]
    assert (line, field) in found, err.value.problems
    text = str(err.value)
    assert f"fleet/ampere.yaml:{line}: {field}:" in text
    assert message in text


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "must be a mapping"),
    ("- a\n- b\n", "must be a mapping"),
    ("baseline: [\n", "not valid YAML"),
    ("a: b\n\tc: d\n", "not valid YAML"),
])
def test_not_a_manifest(text: str, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment) as err:
        parse_manifest("h", "fleet/h.yaml", text)
    assert str(err.value).startswith("fleet/h.yaml:")


def test_all_problems_reported_together() -> None:
    bad = GOOD.replace("descript", "descrip").replace("[arch, soc, board]", "[arch, socks, board]")
    with pytest.raises(ManifestError) as err:
        parse_manifest("h", "fleet/h.yaml", bad)
    assert {p.field for p in err.value.problems} >= {"descripion", "apply_order[1]"}


# --- hostile input (defect 1 of the hardening issue): aliases, size, echoed values -----------


def test_alias_bomb_is_refused_before_it_expands() -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest("h", "fleet/h.yaml", BOMB)
    text = str(err.value)
    assert len(text) < 2000, text[:300]
    assert "fleet/h.yaml:1: a: anchors (&a) and aliases are not allowed in a manifest" in text
    assert {p.line for p in err.value.problems} >= {1, 2, 10}


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("description: &x hi\n", 1, "anchors (&x)"),
    ("description: hi\nbaseline: {ref: *x}\n", 2, "aliases (*x)"),
    ("description: hi\n<<: {ref: v1}\n", 2, "merge keys (<<)"),
    ("description: " + "[" * 200 + "]" * 200 + "\n", 1, "nested deeper than"),
    ("description: !!python/object:os.system x\n", 1, "tag !!python/object:os.system"),
    ("description: !custom x\n", 1, "tag !custom"),
])
def test_yaml_features_without_use_in_a_manifest(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest("h", "fleet/h.yaml", text)
    assert any(p.line == line and fragment in p.message for p in err.value.problems), err.value.problems


def test_values_echoed_in_messages_are_capped() -> None:
    huge = "x" * 100_000
    text = GOOD.replace("  - board/pinetab2", f"  - {huge}").replace("ref: v6.12.117", f"ref: {huge} y")
    with pytest.raises(ManifestError) as err:
        parse_manifest("h", "fleet/h.yaml", text)
    assert len(str(err.value)) < 1500
    assert "…" in str(err.value)




# --- host names (defects 4 and 12) -----------------------------------------------------------

@pytest.mark.parametrize("name", ["ampere\n", "ampere\nx", "Ampere", "-x", "a" * 64, "a b", "ämpere", ""])
def test_host_name_pattern_matches_whole_names(name: str) -> None:
    assert not valid_host_name(name)


@pytest.mark.parametrize("name", ["ampere", "rk3588-a", "h.1", "a_b", "a" * 63])
def test_good_host_names(name: str) -> None:
    assert valid_host_name(name)


def test_a_badly_named_manifest_is_reported_with_its_file(make_repo: MakeRepo) -> None:
    root = make_repo({"Ampere": GOOD, "ok": GOOD}, {}, commit=False)
    (root / "fleet" / os.fsdecode(b"bad\xff.yaml")).write_text(GOOD)
    view = WorkTree(root)
    assert list_hosts(view) == ["Ampere", os.fsdecode(b"bad\xff"), "ok"]
    with pytest.raises(ManifestError) as err:
        check_host_name(view, "Ampere")
    assert str(err.value) == ("fleet/Ampere.yaml: file name: 'Ampere' is not a host name (lowercase letters, "
                              "digits, '.', '_' and '-', starting with a letter or digit, at most 63); rename the file")
    with pytest.raises(ManifestError) as err:
        check_host_name(view, os.fsdecode(b"bad\xff"))
    assert str(err.value).startswith("fleet/bad\\xff.yaml: file name: 'bad\\xff' is not a host name")
    str(err.value).encode("ascii")  # printable anywhere: no surrogates left in the message


# --- fuzzing: any text is a valid manifest or a ManifestError naming the file, never a traceback ----

_KEYS = st.sampled_from(["description", "baseline", "ref", "apply_order", "includes", "parity", "b2sum",
                         "canonical", "package", "descripton", "<<", "?", "- x", "ä", "", "1", "null", "&a", "*a"])
_SCALARS = st.one_of(
    st.sampled_from(["v6.12.117", "soc/base", "board/../x", "/abs", "arch", "~", "null", "true", "0x1f", "1e999",
                     "2001-02-30", "2026-12-01T10:00:00Z", "9" * 5000, '"\\udcff"', '"a\\ud800b"', "0o99",
                     "'quoted'", '"dq"', "[", "]", "{", "}", ": x", "- y", "a" * 5000, "!!str x", "!!binary eA==",
                     "!!python/object:os.system", "!x y", "&a v", "*a", "&b [1, *b]", "|", ">-", "%YAML 1.1"]),
    st.text(max_size=20), st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
    st.integers(), st.floats())


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """YAML-shaped text: keys, nested blocks and flows, anchors, aliases, tags, odd keys, huge values."""
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        indent = "  " * draw(st.integers(0, 3))
        shape = draw(st.sampled_from(["pair", "item", "flow", "raw", "anchor", "alias", "deep"]))
        key, value = draw(_KEYS), draw(_SCALARS)
        if shape == "pair":
            lines.append(f"{indent}{key}: {value}")
        elif shape == "item":
            lines.append(f"{indent}- {value}")
        elif shape == "flow":
            lines.append(f"{indent}{key}: [{value}, {{a: {value}}}]")
        elif shape == "anchor":
            lines.append(f"{indent}{key}: &{draw(st.sampled_from('ab'))} [{value}]")
        elif shape == "alias":
            lines.append(f"{indent}{key}: [*a, *b, *a]")
        elif shape == "deep":
            n = draw(st.integers(1, 200))
            lines.append(f"{indent}{key}: " + "[" * n + "]" * n)
        else:
            lines.append(draw(st.text(max_size=40)))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n", "\t"]))


@settings(max_examples=examples(3_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_texts())
@example(BOMB)
@example("a: &a [1]\nb: *a\n<<: *a\n")
@example("description: " + "[" * 5000 + "]" * 5000)
@example("description: !!binary eA==\n")
@example("? [a, b]\n: c\n")  # a sequence as a key
@example("{[1]: 2}")
@example("description: \x1f")  # found by this test: the reader refuses control characters before parsing
@example("apply_order: v6.12.117\napply_order: [v6.12.117]")  # found: a key twice, its nodes read from the first
@example("description: 2001-02-30\n")  # found in review: a date that is not one made the constructor raise
@example("description: " + "9" * 5000 + "\n")  # found in review: Python refuses to build such an integer
def test_any_text_is_a_manifest_or_a_located_error(text: str) -> None:
    try:
        m = parse_manifest("h", "fleet/h.yaml", text)
    except ManifestError as exc:
        assert exc.problems
        for p in exc.problems:
            assert str(p).startswith("fleet/h.yaml") and p.message
        assert len(str(exc)) < 20_000
        return
    assert m.baseline_ref and m.includes and m.apply_order
