"""Manifest validation: every bad input names the file, the line and the field."""

from __future__ import annotations

import pytest

from ka.errors import ManifestError
from ka.manifest import parse_manifest

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
    text = GOOD + "package:\n  pkgrel: 2\nbuild:\n  anything: 1\ninstall: {}\n"
    assert parse_manifest("h", "fleet/h.yaml", text).data["package"] == {"pkgrel": 2}


# (replace old -> new in GOOD, expected line, expected field, expected message fragment)
CASES = [
    ("description:", "descripton:", 1, "descripton", "did you mean 'description'"),
    ("  ref: v6.12.117\n", "  ref: v6.12.117\n  tag: x\n", 4, "baseline.tag", "unknown key"),
    ("baseline:\n  ref: v6.12.117\n", "baseline:\n  commit: abc\n", 2, "baseline.ref", "missing (required)"),
    ("baseline:\n  ref: v6.12.117\n", "", 1, "baseline", "missing (required)"),
    ("baseline:\n  ref: v6.12.117\n", "baseline: v6.12\n", 2, "baseline", "must be a mapping"),
    ("  ref: v6.12.117", "  ref: --upload-pack=x", 3, "baseline.ref", "not a git tag or commit"),
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
